"""The gateway's configuration file (`homeflex edge run --config FILE`), as pydantic models."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from homeflex.clock import Clock, ScaledClock, SystemClock
from homeflex.edge.home import HomeConfig


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClockConfig(Strict):
    """Real time by default; a simulated home gives its start, speed and wall-time anchor."""

    speed: float = Field(1.0, gt=0)
    start: datetime | None = None
    anchor: float | None = Field(None, description="wall-clock Unix time at which `start` was")

    @model_validator(mode="after")
    def _complete(self) -> ClockConfig:
        if (self.start is None) != (self.anchor is None):
            raise ValueError("give both `start` and `anchor` for a simulated clock, or neither")
        return self

    def build(self) -> Clock:
        if self.start is None or self.anchor is None:
            return SystemClock()
        return ScaledClock(start=self.start.timestamp(), speed=self.speed, anchor=self.anchor)


class ModbusDeviceConfig(Strict):
    protocol: Literal["modbus"]
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")
    template: str = Field(description="name of a device template, e.g. `meter-3ph`")
    host: str
    port: int = Field(502, ge=1, le=65535)
    unit: int = Field(1, ge=0, le=247)
    poll_s: float = Field(5.0, gt=0, description="poll interval, in the gateway clock's seconds")
    timeout_s: float = Field(1.0, gt=0, description="per request, in real seconds")
    pause_s: float = Field(
        0.0, ge=0, le=5, description="pause between requests on a shared bus, in real seconds"
    )


class ZigbeeDeviceConfig(Strict):
    protocol: Literal["zigbee"]
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")
    template: str = Field(description="name of a device template, e.g. `zigbee-plug`")
    ieee: str = Field(pattern=r"^([0-9a-f]{2}:){7}[0-9a-f]{2}$")
    poll_s: float = Field(60.0, gt=0, description="poll interval when the device does not report")
    timeout_s: float = Field(2.0, gt=0, description="per request and attempt, in real seconds")


DeviceConfig = Annotated[ModbusDeviceConfig | ZigbeeDeviceConfig, Field(discriminator="protocol")]


class ZigbeeConfig(Strict):
    """The Zigbee radio: `radio` names the zigpy radio library, `path` where the stick is."""

    radio: Literal["homeflex-sim", "znp"] = "znp"
    path: str = Field(description="serial device, or socket://host:port")
    channel: int = Field(15, ge=11, le=26)


class RetentionConfig(Strict):
    raw_days: float = Field(14, gt=0, description="keep raw readings this long at full rate")
    downsampled_days: float = Field(400, gt=0, description="then keep 1-minute means this long")


class StoreConfig(Strict):
    path: Path
    retention: RetentionConfig = RetentionConfig()


class GatewayConfig(Strict):
    data_dir: Path = Field(
        description="where the gateway keeps its state (status, Zigbee database)"
    )
    gateway_id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")
    clock: ClockConfig = ClockConfig()
    store: StoreConfig
    zigbee: ZigbeeConfig | None = None
    devices: list[DeviceConfig] = []
    home: HomeConfig | None = Field(
        None, description="what the gateway needs to plan and drive the home; absent: monitor only"
    )

    @model_validator(mode="after")
    def _consistent(self) -> GatewayConfig:
        seen: set[str] = set()
        for dev in self.devices:
            if dev.id in seen:
                raise ValueError(f"device id {dev.id!r} is used twice; give each device its own id")
            seen.add(dev.id)
        if self.zigbee is None and any(d.protocol == "zigbee" for d in self.devices):
            raise ValueError("zigbee devices are listed but there is no `zigbee:` radio section")
        if self.home is not None:
            self.home.check_devices(seen)
        return self
