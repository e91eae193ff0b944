"""The device side of ZCL: a server cluster's attributes, reads, reporting, and frame encoding,
using zigpy's cluster definitions and types as a library."""

# mypy: disable-error-code="no-untyped-call"
# (zigpy's int types and structs have unannotated constructors)

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import zigpy.types as t
import zigpy.zcl
from zigpy.zcl import foundation

GENERAL = foundation.GENERAL_COMMANDS
Cmd = foundation.GeneralCommand


@dataclass
class Reporting:
    """One attribute's reporting configuration (intervals in device seconds) and last report."""

    min_s: int
    max_s: int
    change: float
    last_value: float | None = None
    last_t: float | None = None

    def due(self, value: float, t: float) -> bool:
        if self.last_t is None or self.last_value is None:
            return True
        elapsed = t - self.last_t
        if 0 < self.max_s < 0xFFFF and elapsed >= self.max_s:
            return True
        moved = abs(value - self.last_value)
        changed = moved >= self.change if self.change > 0 else moved > 0
        return changed and elapsed >= self.min_s


class ServerCluster:
    """Attribute values of one server cluster, typed per zigpy's definition of the cluster."""

    def __init__(self, cls: type[zigpy.zcl.Cluster], values: dict[str, Any]) -> None:
        self.cls = cls
        self.cluster_id: int = cls.cluster_id
        self.values: dict[int, Any] = {}
        self.reporting: dict[int, Reporting] = {}
        for name, value in values.items():
            self.set(name, value)

    def attr(self, name_or_id: str | int) -> foundation.ZCLAttributeDef:
        attr_def: foundation.ZCLAttributeDef
        for attr_def in self.cls.AttributeDefs:
            if attr_def.name == name_or_id or attr_def.id == name_or_id:
                return attr_def
        raise KeyError(f"cluster 0x{self.cluster_id:04x} has no attribute {name_or_id!r}")

    def set(self, name: str, value: Any) -> None:
        attr_def = self.attr(name)
        self.values[attr_def.id] = attr_def.type(value)

    def get(self, name: str) -> Any:
        return self.values[self.attr(name).id]

    def typed(self, attr_id: int) -> foundation.TypeValue:
        return foundation.TypeValue(type=self.attr(attr_id).zcl_type, value=self.values[attr_id])

    def read(self, attr_ids: list[int]) -> list[foundation.ReadAttributeRecord]:
        records = []
        for attr_id in attr_ids:
            if attr_id in self.values:
                records.append(
                    foundation.ReadAttributeRecord(
                        attrid=t.uint16_t(attr_id),
                        status=foundation.Status.SUCCESS,
                        value=self.typed(attr_id),
                    )
                )
            else:
                records.append(
                    foundation.ReadAttributeRecord(
                        attrid=t.uint16_t(attr_id), status=foundation.Status.UNSUPPORTED_ATTRIBUTE
                    )
                )
        return records

    def configure(self, records: list[foundation.AttributeReportingConfig]) -> foundation.Status:
        for cfg in records:
            if cfg.attrid not in self.values:
                return foundation.Status.UNSUPPORTED_ATTRIBUTE
        for cfg in records:
            change = float(getattr(cfg, "reportable_change", 0) or 0)
            if cfg.max_interval == 0xFFFF:
                self.reporting.pop(cfg.attrid, None)  # 0xFFFF stops reporting
            else:
                self.reporting[cfg.attrid] = Reporting(cfg.min_interval, cfg.max_interval, change)
        return foundation.Status.SUCCESS

    def due_reports(self, t: float) -> list[foundation.Attribute]:
        """Attributes to report now; marks them reported."""
        due = []
        for attr_id, rep in self.reporting.items():
            value = float(self.values[attr_id])
            if rep.due(value, t):
                rep.last_value, rep.last_t = value, t
                due.append(foundation.Attribute(attrid=attr_id, value=self.typed(attr_id)))
        return due


def parse(cluster: ServerCluster, data: bytes) -> tuple[foundation.ZCLHeader, Any]:
    """A request frame from the coordinator: its header and its command's arguments."""
    hdr, rest = foundation.ZCLHeader.deserialize(data)
    if hdr.frame_control.is_general:
        schema = GENERAL[Cmd(hdr.command_id)].schema
    else:
        schema = cluster.cls.server_commands[hdr.command_id].schema
    args, _ = schema.deserialize(rest)
    return hdr, args


def _header(tsn: int, command_id: int, *, general: bool) -> bytes:
    """A server-to-client ZCL header; the device never asks for default responses."""
    frame_control = foundation.FrameControl(
        frame_type=foundation.FrameType.GLOBAL_COMMAND
        if general
        else foundation.FrameType.CLUSTER_COMMAND,
        is_manufacturer_specific=False,
        direction=foundation.Direction.Server_to_Client,
        disable_default_response=True,
        reserved=0,
    )
    hdr = foundation.ZCLHeader(frame_control=frame_control, tsn=tsn, command_id=command_id)
    data: bytes = hdr.serialize()
    return data


def general_frame(tsn: int, command: Cmd, **fields: Any) -> bytes:
    """A general command: a response or a report."""
    payload: bytes = GENERAL[command].schema(**fields).serialize()
    return _header(tsn, command, general=True) + payload


def cluster_frame(cluster: ServerCluster, tsn: int, command_id: int, **fields: Any) -> bytes:
    """A cluster-specific command to the client, e.g. a signal state response."""
    payload: bytes = cluster.cls.client_commands[command_id].schema(**fields).serialize()
    return _header(tsn, command_id, general=False) + payload


def default_response(tsn: int, command_id: int, status: foundation.Status) -> bytes:
    return general_frame(tsn, Cmd.Default_Response, command_id=t.uint8_t(command_id), status=status)
