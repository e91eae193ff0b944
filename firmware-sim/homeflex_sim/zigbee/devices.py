"""Simulated Zigbee devices: the ZDO answers a coordinator's interview needs, ZCL server clusters,
faults, and the physics of a smart plug's load and of a smart appliance's programme."""

# mypy: disable-error-code="no-untyped-call"
# (zigpy's int types and structs have unannotated constructors)

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass
from typing import Any

import zigpy.types as t
import zigpy.zdo.types as zdo_t
from zigpy.profiles import zha
from zigpy.zcl import foundation
from zigpy.zcl.clusters.general import ApplianceControl, Basic, OnOff
from zigpy.zcl.clusters.homeautomation import ElectricalMeasurement
from zigpy.zcl.clusters.smartenergy import Metering

from homeflex_sim.zigbee import zcl
from homeflex_sim.zigbee.profiles import (
    DAY_S,
    DISHWASHER,
    WASHING_MACHINE,
    LoadProfile,
    programme_minutes,
)
from homeflex_sim.zigbee.spec import ApplianceSpec, PlugSpec, day_seconds

LOG = logging.getLogger(__name__)

ENDPOINT = 1
FAULTS = ("leave", "rejoin", "malformed", "silent", "clear")
Status = foundation.Status
AStatus = ApplianceControl.ApplianceStatus


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A frame a device sends to the coordinator."""

    profile: int
    cluster: int
    src_ep: int
    dst_ep: int
    payload: bytes


def zdo_frame(tsn: int, command: zdo_t.ZDOCmd, *args: Any) -> bytes:
    _names, schema = zdo_t.CLUSTERS[command]
    data: bytes = t.uint8_t(tsn).serialize() + t.serialize(args, schema)
    return data


def encode_relative_time(seconds: float) -> int:
    """ZCL Appliance Control time: bits 0-5 minutes, 6-7 encoding (0 = relative), 8-15 hours.
    Rounded up to the next whole minute, as a countdown display would."""
    minutes = min(math.ceil(max(0.0, seconds) / 60 - 1e-9), 255 * 60 + 59)
    return (minutes // 60) << 8 | (minutes % 60)


def decode_relative_time(value: int) -> int | None:
    """Seconds of a relative ZCL time, or None when it is not a valid relative time."""
    minutes, encoding, hours = value & 0x3F, (value >> 6) & 0x3, value >> 8
    if encoding != 0 or minutes > 59:
        return None
    return (hours * 60 + minutes) * 60


class SimDevice:
    """A mains-powered router with one HA endpoint. Subclasses add clusters and physics."""

    device_type: int = zha.DeviceType.SMART_PLUG

    def __init__(
        self,
        *,
        name: str,
        ieee: str,
        nwk: int,
        reports: bool,
        rng: random.Random,
        clusters: list[zcl.ServerCluster],
    ) -> None:
        self.name = name
        self.ieee = t.EUI64.convert(ieee)
        self.nwk = nwk
        self.reports = reports
        self.clusters = {c.cluster_id: c for c in clusters}
        self.lqi = 180 + rng.randrange(60)
        self.rssi = -40 - rng.randrange(30)
        self.joined = False
        self.away = False  # left through a fault; comes back only with `rejoin`
        self.silent = False
        self.malformed = 0  # number of coming ZCL frames to garble
        self._tsn = rng.randrange(256)
        self._power = 0.0
        self.energy_wh = 0.0

    # --- SimLoad ---------------------------------------------------------------------------

    @property
    def power_w(self) -> float:
        return self._power

    # --- faults ------------------------------------------------------------------------------

    def apply_fault(self, fault: str, args: dict[str, object]) -> None:
        if fault == "leave":
            self.away = True
            self.forget()
        elif fault == "rejoin":
            self.away = False
        elif fault == "malformed":
            count = args.get("count", 1)
            if not isinstance(count, int) or count < 1:
                raise ValueError(f"malformed: count must be a positive integer, got {count!r}")
            self.malformed = count
        elif fault == "silent":
            self.silent = True
        elif fault == "clear":
            self.silent = False
            self.malformed = 0
        else:
            raise ValueError(f"unknown zigbee fault {fault!r}; use one of {', '.join(FAULTS)}")

    def forget(self) -> None:
        """A device that leaves drops its bindings and reporting configuration."""
        self.joined = False
        for cluster in self.clusters.values():
            cluster.reporting.clear()

    # --- frames in and out -------------------------------------------------------------------

    def next_tsn(self) -> int:
        self._tsn = (self._tsn + 1) % 256
        return self._tsn

    def _zcl(self, cluster: int, payload: bytes) -> Outgoing:
        if self.malformed:
            self.malformed -= 1
            # keep the 3-byte header, cut the command's fields in half: undecodable
            body = payload[3:]
            payload = payload[:3] + body[: max(0, len(body) // 2 - 1)]
        return Outgoing(zha.PROFILE_ID, cluster, ENDPOINT, ENDPOINT, payload)

    def announce(self) -> Outgoing:
        capability = 0x8E  # allocate address, rx on when idle, mains powered, FFD
        payload = zdo_frame(
            self.next_tsn(), zdo_t.ZDOCmd.Device_annce, self.nwk, self.ieee, capability
        )
        return Outgoing(0, zdo_t.ZDOCmd.Device_annce, 0, 0, payload)

    def receive(
        self, dst_ep: int, profile: int, cluster: int, payload: bytes, now: float, broadcast: bool
    ) -> list[Outgoing]:
        """Handle one frame from the coordinator; returns the frames sent back."""
        if self.silent:
            return []
        if dst_ep == 0:
            return self._zdo(cluster, payload, broadcast)
        if broadcast or dst_ep != ENDPOINT or profile != zha.PROFILE_ID:
            return []
        server = self.clusters.get(cluster)
        if server is None:
            return []
        try:
            hdr, args = zcl.parse(server, payload)
        except (ValueError, KeyError) as exc:
            LOG.warning(
                "%s: undecodable ZCL frame on cluster 0x%04x (%s): %s",
                self.name,
                cluster,
                exc,
                payload.hex(),
            )
            return []
        return [self._zcl(cluster, frame) for frame in self._handle_zcl(server, hdr, args, now)]

    def _handle_zcl(
        self, server: zcl.ServerCluster, hdr: foundation.ZCLHeader, args: Any, now: float
    ) -> list[bytes]:
        if hdr.frame_control.is_cluster:
            status, frames = self.command(server, hdr, args, now)
            if frames:
                return frames
        elif hdr.command_id == zcl.Cmd.Read_Attributes:
            records = server.read(list(args.attribute_ids))
            return [zcl.general_frame(hdr.tsn, zcl.Cmd.Read_Attributes_rsp, status_records=records)]
        elif hdr.command_id == zcl.Cmd.Configure_Reporting and self.reports:
            status = server.configure(list(args.config_records))
            record = foundation.ConfigureReportingResponseRecord(status=status)
            if status != Status.SUCCESS:
                record.direction = foundation.ReportingDirection.SendReports
                record.attrid = args.config_records[0].attrid
            return [
                zcl.general_frame(hdr.tsn, zcl.Cmd.Configure_Reporting_rsp, status_records=[record])
            ]
        elif hdr.command_id == zcl.Cmd.Default_Response:
            return []
        else:
            status = Status.UNSUP_GENERAL_COMMAND
        if hdr.frame_control.disable_default_response and status == Status.SUCCESS:
            return []
        return [zcl.default_response(hdr.tsn, hdr.command_id, status)]

    def command(
        self, server: zcl.ServerCluster, hdr: foundation.ZCLHeader, args: Any, now: float
    ) -> tuple[Status, list[bytes]]:
        """A cluster-specific command: a status for the default response, or response frames."""
        return Status.UNSUP_CLUSTER_COMMAND, []

    def _zdo(self, cluster: int, payload: bytes, broadcast: bool) -> list[Outgoing]:
        if not payload or cluster not in zdo_t.CLUSTERS:
            return []
        _names, schema = zdo_t.CLUSTERS[zdo_t.ZDOCmd(cluster)]
        tsn = payload[0]
        try:
            args, _ = t.deserialize(payload[1:], schema)
        except (ValueError, KeyError):
            return []
        cmd = zdo_t.ZDOCmd
        ok = zdo_t.Status.SUCCESS
        rsp: tuple[Any, ...] | None = None
        if cluster == cmd.IEEE_addr_req and args[0] == self.nwk:
            rsp = (cmd.IEEE_addr_rsp, ok, self.ieee, self.nwk, None, None, None)
        elif cluster == cmd.NWK_addr_req and args[0] == self.ieee:
            rsp = (cmd.NWK_addr_rsp, ok, self.ieee, self.nwk, None, None, None)
        elif broadcast:
            return []
        elif cluster == cmd.Node_Desc_req:
            rsp = (cmd.Node_Desc_rsp, ok, self.nwk, self.node_descriptor())
        elif cluster == cmd.Active_EP_req:
            rsp = (cmd.Active_EP_rsp, ok, self.nwk, [ENDPOINT])
        elif cluster == cmd.Simple_Desc_req:
            if args[1] == ENDPOINT:
                rsp = (cmd.Simple_Desc_rsp, ok, self.nwk, self.simple_descriptor())
            else:
                rsp = (cmd.Simple_Desc_rsp, zdo_t.Status.NOT_ACTIVE, self.nwk, None)
        elif cluster in (cmd.Bind_req, cmd.Unbind_req):
            status = ok if self.reports else zdo_t.Status.NOT_SUPPORTED
            rsp = (cmd(cluster | 0x8000), status)
        elif cluster == cmd.Mgmt_Leave_req:
            self.forget()
            self.away = True
            rsp = (cmd.Mgmt_Leave_rsp, ok)
        elif cluster == cmd.Mgmt_Permit_Joining_req:
            rsp = (cmd.Mgmt_Permit_Joining_rsp, ok)
        if rsp is None:
            return []
        frame = zdo_frame(tsn, rsp[0], *rsp[1:])
        return [Outgoing(0, rsp[0], 0, 0, frame)]

    def node_descriptor(self) -> zdo_t.NodeDescriptor:
        flags = zdo_t.MACCapabilityFlags
        return zdo_t.NodeDescriptor(
            logical_type=zdo_t.LogicalType.Router,
            complex_descriptor_available=0,
            user_descriptor_available=0,
            reserved=0,
            aps_flags=0,
            frequency_band=zdo_t.NodeDescriptor.FrequencyBand.Freq2400MHz,
            mac_capability_flags=(
                flags.AllocateAddress
                | flags.RxOnWhenIdle
                | flags.MainsPowered
                | flags.FullFunctionDevice
            ),
            manufacturer_code=0x1234,
            maximum_buffer_size=82,
            maximum_incoming_transfer_size=82,
            server_mask=0,
            maximum_outgoing_transfer_size=82,
            descriptor_capability_field=zdo_t.NodeDescriptor.DescriptorCapability.NONE,
        )

    def simple_descriptor(self) -> zdo_t.SizePrefixedSimpleDescriptor:
        return zdo_t.SizePrefixedSimpleDescriptor(
            endpoint=ENDPOINT,
            profile=zha.PROFILE_ID,
            device_type=self.device_type,
            device_version=1,
            input_clusters=sorted(self.clusters),
            output_clusters=[],
        )

    def reports_due(self, now: float) -> list[Outgoing]:
        """Attribute reports whose reporting configuration says they are due."""
        if self.silent or not self.joined:
            return []
        out = []
        for server in self.clusters.values():
            due = server.due_reports(now)
            if due:
                frame = zcl.general_frame(
                    self.next_tsn(), zcl.Cmd.Report_Attributes, attribute_reports=due
                )
                out.append(self._zcl(server.cluster_id, frame))
        return out

    def update(self, now: float) -> None:
        """Refresh attribute values from the physics (after each step)."""


def basic_cluster(manufacturer: str, model: str) -> zcl.ServerCluster:
    return zcl.ServerCluster(
        Basic, {"zcl_version": 8, "power_source": 1, "manufacturer": manufacturer, "model": model}
    )


class SimPlug(SimDevice):
    """A smart plug with metering; `profile` says what is plugged in."""

    METERING_DIVISOR = 100_000  # summation in 0.01 Wh, demand in 0.01 W (unit kWh, kW)
    POWER_DIVISOR = 10  # ElectricalMeasurement active power in 0.1 W
    VOLTAGE_DIVISOR = 10
    CURRENT_DIVISOR = 1000

    def __init__(self, spec: PlugSpec, nwk: int, seed: int, utc_offset_h: float) -> None:
        rng = random.Random(f"{seed}:{spec.id}")
        self.on = spec.on
        self.profile = LoadProfile(
            spec.load.profile, spec.load.power_w, f"{seed}:{spec.id}:load", utc_offset_h
        )
        self._voltage_seed = f"{seed}:{spec.id}:voltage"
        super().__init__(
            name=spec.id,
            ieee=spec.ieee,
            nwk=nwk,
            reports=spec.reports,
            rng=rng,
            clusters=[
                basic_cluster(spec.manufacturer, spec.model),
                zcl.ServerCluster(OnOff, {"on_off": spec.on}),
                zcl.ServerCluster(
                    Metering,
                    {
                        "current_summ_delivered": 0,
                        "instantaneous_demand": 0,
                        "unit_of_measure": 0,
                        "multiplier": 1,
                        "divisor": self.METERING_DIVISOR,
                        "metering_device_type": 0,
                    },
                ),
                zcl.ServerCluster(
                    ElectricalMeasurement,
                    {
                        "measurement_type": 0x0008,
                        "active_power": 0,
                        "rms_voltage": 2300,
                        "rms_current": 0,
                        "ac_power_multiplier": 1,
                        "ac_power_divisor": self.POWER_DIVISOR,
                        "ac_voltage_multiplier": 1,
                        "ac_voltage_divisor": self.VOLTAGE_DIVISOR,
                        "ac_current_multiplier": 1,
                        "ac_current_divisor": self.CURRENT_DIVISOR,
                    },
                ),
            ],
        )

    def step(self, t: float, dt: float) -> None:
        self._power = self.profile.power(t) if self.on else 0.0
        self.energy_wh += self._power * dt / 3600.0

    def voltage(self, t: float) -> float:
        noise = random.Random(f"{self._voltage_seed}:{int(t // 60)}").uniform(-1.5, 1.5)
        return 230.0 + noise - 0.1 * self._power / 230.0

    def update(self, now: float) -> None:
        volts = self.voltage(now)
        metering = self.clusters[Metering.cluster_id]
        metering.set("current_summ_delivered", round(self.energy_wh * 100))  # 0.01 Wh
        metering.set("instantaneous_demand", round(self._power * 100))  # 0.01 W
        em = self.clusters[ElectricalMeasurement.cluster_id]
        em.set("active_power", round(self._power * self.POWER_DIVISOR))
        em.set("rms_voltage", round(volts * self.VOLTAGE_DIVISOR))
        em.set("rms_current", round(self._power / volts * self.CURRENT_DIVISOR))

    def command(
        self, server: zcl.ServerCluster, hdr: foundation.ZCLHeader, args: Any, now: float
    ) -> tuple[Status, list[bytes]]:
        command_id = hdr.command_id
        if server.cluster_id != OnOff.cluster_id or command_id not in (0x00, 0x01, 0x02):
            return Status.UNSUP_CLUSTER_COMMAND, []
        # the relay switches now; the load follows from the next physics step on
        self.on = {0x00: False, 0x01: True, 0x02: not self.on}[command_id]
        server.set("on_off", self.on)
        return Status.SUCCESS, []


class SimAppliance(SimDevice):
    """A washing machine or dishwasher with Appliance Control.

    Every day at `ready` the user prepares a programme that must end by `finish_by`. The appliance
    waits (Programmed_Waiting_To_Start) and starts by itself at the latest start that meets the
    finish time. The gateway defers or advances the start with Appliance Control's Write Functions
    command carrying StartTime (function id = attribute id 0x0000) as a relative time; a start
    that would miss the finish time is refused with INVALID_VALUE. StartTime, FinishTime and
    RemainingTime read back as relative times; Signal State answers the ApplianceStatus.
    """

    device_type = zha.DeviceType.WHITE_GOODS
    METERING_DIVISOR = 1000  # summation in Wh, demand in W

    def __init__(self, spec: ApplianceSpec, nwk: int, seed: int, utc_offset_h: float) -> None:
        rng = random.Random(f"{seed}:{spec.id}")
        segments = spec.programme or (
            WASHING_MACHINE if spec.kind == "washing_machine" else DISHWASHER
        )
        self.programme = programme_minutes(list(segments))
        self.duration_s = 60 * len(self.programme)
        self.offset_s = utc_offset_h * 3600.0
        self.ready_s = day_seconds(spec.ready)
        finish = day_seconds(spec.finish_by)
        self.window_s = (finish - self.ready_s) % DAY_S or DAY_S
        self.status = AStatus.Stand_By
        self.start_at = 0.0  # when waiting: the programmed start
        self.deadline = 0.0  # when waiting or running: the finish-by instant
        self.run_start = 0.0
        self.now = 0.0
        self._next_ready: float | None = None
        model = spec.model or ("WM-800" if spec.kind == "washing_machine" else "DW-600")
        super().__init__(
            name=spec.id,
            ieee=spec.ieee,
            nwk=nwk,
            reports=spec.reports,
            rng=rng,
            clusters=[
                basic_cluster(spec.manufacturer, model),
                zcl.ServerCluster(
                    Metering,
                    {
                        "current_summ_delivered": 0,
                        "instantaneous_demand": 0,
                        "unit_of_measure": 0,
                        "multiplier": 1,
                        "divisor": self.METERING_DIVISOR,
                        "metering_device_type": 0,
                    },
                ),
                zcl.ServerCluster(
                    ApplianceControl,
                    {
                        "start_time": 0,
                        "finish_time": 0,
                        "remaining_time": 0,
                    },
                ),
            ],
        )

    def _ready_after(self, t: float) -> float:
        """The first `ready` instant at or after `t`."""
        local = t + self.offset_s
        ready = local - local % DAY_S + self.ready_s
        if ready < local:
            ready += DAY_S
        return ready - self.offset_s

    def step(self, t: float, dt: float) -> None:
        if self._next_ready is None:
            self._next_ready = self._ready_after(t)
        if t >= self._next_ready and self.status != AStatus.Running:
            self.deadline = self._next_ready + self.window_s
            self.start_at = max(t, self.deadline - self.duration_s)
            self.status = AStatus.Programmed_Waiting_To_Start
            self._next_ready = self._ready_after(self._next_ready + 1)
        if self.status == AStatus.Programmed_Waiting_To_Start and t >= self.start_at:
            self.status, self.run_start = AStatus.Running, t
        self._power = 0.0
        if self.status == AStatus.Running:
            minute = int((t - self.run_start) // 60)
            if minute >= len(self.programme):
                self.status = AStatus.End_Programmed
            else:
                self._power = self.programme[minute]
        self.energy_wh += self._power * dt / 3600.0

    def update(self, now: float) -> None:
        self.now = now
        metering = self.clusters[Metering.cluster_id]
        metering.set("current_summ_delivered", math.floor(self.energy_wh))  # whole Wh, like a meter
        metering.set("instantaneous_demand", round(self._power))
        start = finish = remaining = 0.0
        if self.status == AStatus.Programmed_Waiting_To_Start:
            start = self.start_at - now
            finish = start + self.duration_s
            remaining = self.duration_s
        elif self.status == AStatus.Running:
            finish = remaining = self.run_start + self.duration_s - now
        control = self.clusters[ApplianceControl.cluster_id]
        control.set("start_time", encode_relative_time(start))
        control.set("finish_time", encode_relative_time(finish))
        control.set("remaining_time", encode_relative_time(remaining))

    def command(
        self, server: zcl.ServerCluster, hdr: foundation.ZCLHeader, args: Any, now: float
    ) -> tuple[Status, list[bytes]]:
        command_id = hdr.command_id
        if server.cluster_id != ApplianceControl.cluster_id:
            return Status.UNSUP_CLUSTER_COMMAND, []
        if command_id == ApplianceControl.ServerCommandDefs.signal_state.id:
            frame = zcl.cluster_frame(
                server,
                hdr.tsn,
                0x00,
                appliance_status=self.status,
                remote_enable_flags=t.uint8_t(1),
            )
            return Status.SUCCESS, [frame]
        if command_id == ApplianceControl.ServerCommandDefs.write_functions.id:
            return self._write_functions(list(args.functions)), []
        return Status.UNSUP_CLUSTER_COMMAND, []

    def _write_functions(self, functions: list[foundation.Attribute]) -> Status:
        for function in functions:
            if function.attrid != ApplianceControl.AttributeDefs.start_time.id:
                return Status.UNSUPPORTED_ATTRIBUTE
            delay = decode_relative_time(int(function.value.value))
            if delay is None:
                return Status.INVALID_VALUE
            if self.status != AStatus.Programmed_Waiting_To_Start:
                return Status.INVALID_VALUE  # nothing prepared to start
            if self.now + delay + self.duration_s > self.deadline:
                return Status.INVALID_VALUE  # would miss the user's finish time
            self.start_at = self.now + delay
        self.update(self.now)
        return Status.SUCCESS
