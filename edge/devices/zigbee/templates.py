"""Zigbee device templates (edge/devices/templates/zigbee-*.yaml): which cluster attribute gives
which Quantity, its scaling, and how it is reported."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Literal, cast

import zigpy.zcl
from pydantic import BaseModel, ConfigDict, Field, model_validator
from zigpy.zcl.clusters import CLUSTERS_BY_NAME

from homeflex.configfile import load_config
from homeflex.edge.devices.capabilities import Quantity
from homeflex.edge.devices.templates import BUILTIN_DIR


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def cluster_class(name: str) -> type[zigpy.zcl.Cluster]:
    try:
        # zigpy annotates this dict's values as instances; they are the classes
        cls = cast(type[zigpy.zcl.Cluster], CLUSTERS_BY_NAME[name])
    except KeyError:
        raise ValueError(
            f"unknown cluster {name!r}; use zigpy's name, e.g. smartenergy_metering, on_off"
        ) from None
    return cls


def _check_attribute(cluster: str, attribute: str) -> None:
    if not any(a.name == attribute for a in cluster_class(cluster).AttributeDefs):
        raise ValueError(f"cluster {cluster} has no attribute {attribute!r}")


class Report(Strict):
    """Reporting to ask for: intervals in device seconds, `change` in the quantity's unit."""

    min_s: int = Field(5, ge=0, le=0xFFFE)
    max_s: int = Field(300, ge=1, le=0xFFFE)
    change: float = Field(0.0, ge=0)


class Mapping(Strict):
    """One Quantity: an attribute (value × multiplier / divisor × scale), or a field of a
    cluster command's response (read on every poll)."""

    quantity: Quantity
    cluster: str
    attribute: str | None = None
    command: str | None = None
    field: str | None = None
    multiplier: str | None = Field(None, description="attribute of the same cluster")
    divisor: str | None = Field(None, description="attribute of the same cluster")
    scale: float = 1.0
    decode: Literal["number", "relative_time"] = "number"
    report: Report | None = None

    @model_validator(mode="after")
    def _check(self) -> Mapping:
        cls = cluster_class(self.cluster)
        if (self.attribute is None) == (self.command is None):
            raise ValueError(f"{self.quantity}: give either `attribute` or `command`")
        for attr in (self.attribute, self.multiplier, self.divisor):
            if attr is not None:
                _check_attribute(self.cluster, attr)
        if self.command is not None:
            commands = {c.name: c for c in cls.ServerCommandDefs}
            if self.command not in commands or self.field is None:
                raise ValueError(
                    f"{self.quantity}: cluster {self.cluster} has no command "
                    f"{self.command!r}, or `field` is missing"
                )
            if self.report is not None:
                raise ValueError(f"{self.quantity}: a command's answer cannot be reported")
        return self


class AttributeRef(Strict):
    cluster: str
    attribute: str

    @model_validator(mode="after")
    def _check(self) -> AttributeRef:
        _check_attribute(self.cluster, self.attribute)
        return self


class ZigbeeTemplate(Strict):
    name: str
    description: str = ""
    protocol: Literal["zigbee"] = "zigbee"
    capability: Literal["switchable", "deferrable_appliance"]
    endpoint: int = Field(1, ge=1, le=240)
    quantities: list[Mapping]
    switch: AttributeRef | None = Field(None, description="OnOff attribute read back after on/off")
    defer: AttributeRef | None = Field(None, description="the StartTime written by Write Functions")

    @model_validator(mode="after")
    def _check(self) -> ZigbeeTemplate:
        names = [m.quantity for m in self.quantities]
        if len(set(names)) != len(names):
            raise ValueError("a quantity is mapped twice")
        if self.capability == "switchable" and self.switch is None:
            raise ValueError("a switchable template needs `switch`")
        if self.capability == "deferrable_appliance" and self.defer is None:
            raise ValueError("a deferrable_appliance template needs `defer`")
        return self


@cache
def load_zigbee_template(name: str, extra_dir: Path | None = None) -> ZigbeeTemplate:
    """The template called `name`, from `extra_dir` first (the installer's own), then built-ins."""
    for folder in (extra_dir, BUILTIN_DIR):
        if folder is not None and (folder / f"{name}.yaml").is_file():
            return load_config(folder / f"{name}.yaml", ZigbeeTemplate)
    known = sorted(p.stem for p in BUILTIN_DIR.glob("zigbee-*.yaml"))
    raise FileNotFoundError(f"no zigbee device template {name!r}; known: {', '.join(known)}")
