"""The `zigbee:` section of a home file: the simulated Zigbee devices and what is behind them."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_IEEE = r"^([0-9a-f]{2}:){7}[0-9a-f]{2}$"
_ID = r"^[a-z0-9][a-z0-9_-]{0,39}$"


def day_seconds(text: str) -> int:
    """'HH:MM' → seconds since local midnight."""
    match = re.fullmatch(r"([01]\d|2[0-3]):([0-5]\d)", text)
    if match is None:
        raise ValueError(f"time {text!r} is not HH:MM (00:00..23:59)")
    return int(match[1]) * 3600 + int(match[2]) * 60


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoadSpec(Strict):
    """What is plugged into a smart plug. Profiles: `fridge` (compressor cycling), `tv` (evenings),
    `kettle` (a few minutes three times a day), `constant`. `power_w` is the power when running."""

    profile: Literal["fridge", "tv", "kettle", "constant"]
    power_w: float | None = Field(None, gt=0, le=3600, description="default: the profile's own")


class PlugSpec(Strict):
    id: str = Field(pattern=_ID)
    ieee: str = Field(pattern=_IEEE, description="must match the gateway's device config")
    manufacturer: str = "Homeflex Sim"
    model: str = "SP-120"
    reports: bool = Field(True, description="false: refuses reporting, must be polled")
    on: bool = Field(True, description="relay state at start")
    load: LoadSpec


class ApplianceSpec(Strict):
    """A smart washing machine or dishwasher: every day the user prepares a programme at `ready`
    (local HH:MM) that must finish by `finish_by` (the next day if earlier than `ready`)."""

    id: str = Field(pattern=_ID)
    ieee: str = Field(pattern=_IEEE)
    kind: Literal["washing_machine", "dishwasher"]
    manufacturer: str = "Homeflex Sim"
    model: str | None = None
    reports: bool = True
    ready: str
    finish_by: str
    programme: list[tuple[int, float]] | None = Field(
        None, description="[[minutes, watts], ...] segments; default: the kind's own"
    )

    @field_validator("ready", "finish_by")
    @classmethod
    def _time(cls, value: str) -> str:
        day_seconds(value)
        return value


class ZigbeeSpec(Strict):
    """The simulated Zigbee network. Device ids name them for faults; ieee addresses are what the
    gateway's configuration refers to."""

    radio: Literal["homeflex-sim", "znp"] = Field(
        "homeflex-sim", description="the radio's host protocol: our own, or TI's ZNP (zigpy-znp)"
    )
    utc_offset_h: float = Field(0.0, ge=-12, le=14, description="local time of the `HH:MM` times")
    port: int = Field(0, ge=0, le=65535, description="TCP port of the radio (0: any free port)")
    plugs: list[PlugSpec] = []
    appliances: list[ApplianceSpec] = []

    @model_validator(mode="after")
    def _unique(self) -> ZigbeeSpec:
        ids: set[str] = set()
        ieees: set[str] = set()
        devices: list[PlugSpec | ApplianceSpec] = [*self.plugs, *self.appliances]
        for dev in devices:
            if dev.id in ids:
                raise ValueError(f"zigbee device id {dev.id!r} is used twice")
            if dev.ieee in ieees:
                raise ValueError(f"ieee {dev.ieee} is used twice (device {dev.id!r})")
            ids.add(dev.id)
            ieees.add(dev.ieee)
        return self
