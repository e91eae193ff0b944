"""What controllers may ask of a device, independent of vendor and protocol.

Controllers and the planner depend only on these capabilities (OpenEMS calls them natures); each
protocol driver implements the ones its device template declares.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


class Quantity(enum.StrEnum):
    """Measured quantities, named with their unit. Energy counters are cumulative."""

    POWER_W = "power_w"  # active power, positive = consumption (import at the meter)
    POWER_L1_W = "power_l1_w"
    POWER_L2_W = "power_l2_w"
    POWER_L3_W = "power_l3_w"
    VOLTAGE_L1_V = "voltage_l1_v"
    VOLTAGE_L2_V = "voltage_l2_v"
    VOLTAGE_L3_V = "voltage_l3_v"
    VOLTAGE_V = "voltage_v"  # supply voltage of a single-phase device (e.g. a smart plug)
    CURRENT_A = "current_a"
    IMPORT_WH = "import_wh"  # cumulative energy taken from the grid (or used by a device)
    EXPORT_WH = "export_wh"  # cumulative energy fed into the grid (or produced by a device)
    SOC_PCT = "soc_pct"
    ROOM_TEMP_C = "room_temp_c"
    FLOW_TEMP_C = "flow_temp_c"
    OUTDOOR_TEMP_C = "outdoor_temp_c"
    EV_CONNECTED = "ev_connected"  # 0 or 1
    ON = "on"  # 0 or 1
    APPLIANCE_STATE = "appliance_state"  # ZCL Appliance Control status code
    START_DELAY_S = "start_delay_s"  # seconds until a deferred programme starts (0 = none)
    SETPOINT_W = "setpoint_w"
    SETPOINT_A = "setpoint_a"
    POWER_LIMIT_PCT = "power_limit_pct"
    SG_READY_MODE = "sg_ready_mode"  # 1 blocked, 2 normal, 3 recommended on, 4 forced on


@dataclass(frozen=True, slots=True)
class Reading:
    """One measured value of one device at one instant (`ts`: Unix seconds, the device's time when
    it has a clock, otherwise the gateway's)."""

    device: str
    quantity: Quantity
    ts: float
    value: float

    def __post_init__(self) -> None:
        if not math.isfinite(self.value):
            raise ValueError(f"{self.device}.{self.quantity}: value {self.value} is not a number")


class DeviceError(Exception):
    """A device could not be read or commanded; the message names the device and what failed."""


class CommandNotConfirmed(DeviceError):
    """A command was sent but reading it back showed another value."""


@runtime_checkable
class Device(Protocol):
    """Every driver: an id, a poll that returns fresh readings, and a close."""

    id: str

    async def poll(self) -> list[Reading]:
        """Read the device now; raises DeviceError when it cannot."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class Meter(Device, Protocol):
    """A grid meter: import/export counters and power (per phase where it has phases)."""


@runtime_checkable
class PvInverter(Device, Protocol):
    async def set_power_limit(self, percent: float) -> None:
        """Curtail AC output to `percent` of rated power (100 = no curtailment)."""
        ...


@runtime_checkable
class Battery(Device, Protocol):
    async def set_power(self, watts: float) -> None:
        """Charge (positive) or discharge (negative) at `watts`, within the device's limits."""
        ...


@runtime_checkable
class HeatPump(Device, Protocol):
    async def set_sg_ready(self, mode: int) -> None:
        """SG-Ready mode 1..4."""
        ...


@runtime_checkable
class EvCharger(Device, Protocol):
    async def set_current(self, amps: float) -> None:
        """Charging current limit per phase; 0 pauses charging."""
        ...


@runtime_checkable
class Switchable(Device, Protocol):
    async def switch(self, on: bool) -> None: ...


@runtime_checkable
class DeferrableAppliance(Device, Protocol):
    async def defer_start(self, delay_s: int) -> None:
        """Start the programme the user has prepared after `delay_s` seconds (0: now)."""
        ...
