"""The gateway's configuration file (`homeflex edge run --config FILE`), as pydantic models."""

from __future__ import annotations

from datetime import datetime, time
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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


MODBUS_TLS_PORT = 802  # IANA: mbap/tls, Modbus/TCP Security


class ModbusTlsConfig(Strict):
    """Modbus/TCP Security: mutual TLS. The device's certificate must chain to our root, not be
    revoked, and carry the name below; the gateway shows its own (`credentials`)."""

    server_name: str | None = Field(
        None,
        description="the DNS name (or IP address) the device's certificate must carry, when it "
        "is not `host`, e.g. `meter-1` while `host` is an IP address",
    )


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
    tls: ModbusTlsConfig | None = Field(
        None,
        description="connect with Modbus/TCP Security (`true`, or `{server_name: ...}`); "
        f"the port then defaults to {MODBUS_TLS_PORT}",
    )

    @model_validator(mode="before")
    @classmethod
    def _tls_port(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("tls") not in (None, False) and "port" not in data:
            data = {**data, "port": MODBUS_TLS_PORT}
        return data

    @field_validator("tls", mode="before")
    @classmethod
    def _tls_flag(cls, value: Any) -> Any:
        if value is True:
            return {}
        return None if value is False else value


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


class TelemetryConfig(Strict):
    """Sending readings and PTU energies to the cloud over MQTT (edge/uplink.py)."""

    broker: str = Field(
        pattern=r"^mqtts://[A-Za-z0-9.-]+:[0-9]{1,5}$",
        description="the aggregator's MQTT broker, mqtts://host:port (TLS with the box's "
        "certificate; the host must be the name in the broker's certificate)",
    )
    every_s: float = Field(1.0, gt=0, description="real seconds between sending rounds")
    batch_max: int = Field(5000, ge=1, le=20_000, description="items in one batch at most")
    in_flight: int = Field(8, ge=1, le=64, description="batches sent but not yet acknowledged")
    ack_timeout_s: float = Field(
        30.0,
        gt=0,
        description="real seconds to wait for the ingest's acknowledgement of a "
        "batch before sending its items again",
    )
    outbox_max_rows: int = Field(
        10_000_000,
        ge=1000,
        description="the outbox's bound; past it old raw readings are "
        "thinned to one a minute, then one a PTU (PTU energies are never dropped)",
    )

    @property
    def host(self) -> str:
        return self.broker.removeprefix("mqtts://").rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.broker.rsplit(":", 1)[1])


class AgentConfig(Strict):
    """Taking part in the neighbourhood: the home's agent talks to its aggregator over XMPP with
    TLS, as the box's certificate says (edge/home_agent.py). Needs `credentials:` (whose
    certificate carries the box's XMPP address) and `home:` (the planner speaks for the home)."""

    xmpp_domain: str = Field(description="the XMPP domain; the server's certificate names it")
    xmpp_address: str = Field("127.0.0.1", description="where the XMPP server listens")
    xmpp_port: int = Field(5222, ge=1, le=65535)
    password_file: Path = Field(description="the box's XMPP password (set at enrollment)")
    aggregator: str = Field(description="the aggregator's name, as in its certificate")
    aggregator_certificate: Path = Field(description="the aggregator's certificate (PEM)")
    offer_from: time = Field(time(17, 0), description="local time: offer flexibility from …")
    offer_until: time = Field(time(21, 0), description="… until (the evening peak by default)")
    margin_eur_kwh: float = Field(
        0.02, ge=0, le=1, description="added to the home's own cost in every offer it makes"
    )


class WebConfig(Strict):
    """The homeowner's web page on the box (edge/web), over HTTPS with the box's certificate."""

    listen: str = Field("0.0.0.0", description="the address to listen on: the LAN by default")
    port: int = Field(8443, ge=0, le=65535, description="0: any free port (tests)")


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
    credentials: Path | None = Field(
        None,
        description="the directory holding the box's key.pem, cert.pem, ca.pem and crl.pem "
        "(written by its enrollment); needed when a device uses `tls`",
    )
    enrollment_url: str | None = Field(
        None,
        pattern=r"^https://",
        description="the aggregator's enrollment service (https://host:port): the box fetches "
        "the revocation list there and renews its certificate before it expires",
    )
    credentials_refresh_s: float = Field(
        3600.0, ge=0.1, description="real seconds between revocation list fetches"
    )
    events_url: str | None = Field(
        None,
        pattern=r"^https://",
        description="the cloud's security event receiver (https://host:port); the box forwards "
        "its security log there",
    )
    events_every_s: float = Field(60.0, gt=0, description="real seconds between forwardings")
    security_log: Path | None = Field(
        None, description="the security event log; default <data_dir>/security.log"
    )
    telemetry: TelemetryConfig | None = Field(
        None, description="send readings and PTU energies to the cloud; absent: kept on the box"
    )
    agent: AgentConfig | None = Field(
        None, description="take part in the aggregator's negotiations; absent: the home alone"
    )
    web: WebConfig | None = Field(
        None, description="serve the homeowner's web page; absent: no page"
    )

    @property
    def security_log_path(self) -> Path:
        return self.security_log or self.data_dir / "security.log"

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
        self._check_tls()
        return self

    def _check_tls(self) -> None:
        modbus = [d for d in self.devices if isinstance(d, ModbusDeviceConfig)]
        tls = [d.id for d in modbus if d.tls is not None]
        if self.events_url and self.credentials is None:
            raise ValueError("`events_url` is set but there is no `credentials:` directory")
        if self.enrollment_url and self.credentials is None:
            raise ValueError("`enrollment_url` is set but there is no `credentials:` directory")
        if self.agent and (self.credentials is None or self.home is None):
            raise ValueError(
                "`agent` needs the box's `credentials:` directory and a `home:` to plan"
            )
        if self.web and self.credentials is None:
            raise ValueError("`web` serves HTTPS with the box's certificate: add `credentials:`")
        if self.telemetry and self.credentials is None:
            raise ValueError("`telemetry` is set but there is no `credentials:` directory")
        if tls and self.credentials is None:
            raise ValueError(
                f"devices {', '.join(tls)} use tls but there is no `credentials:` directory "
                "(the box's key.pem, cert.pem, ca.pem and crl.pem)"
            )
        # devices at one host:port share one connection, so they share its TLS settings too
        first: dict[tuple[str, int], ModbusDeviceConfig] = {}
        for dev in modbus:
            other = first.setdefault((dev.host, dev.port), dev)
            if other.tls != dev.tls:
                raise ValueError(
                    f"devices {other.id} and {dev.id} share {dev.host}:{dev.port} but not its "
                    "`tls:` settings; give them the same"
                )
