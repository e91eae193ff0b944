"""The home description file (YAML): site, weather, household and devices, validated by pydantic.

Errors name the file, the line, the field and what to do, like the gateway's config loader (which
the simulator does not import).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

FaultName = Literal["timeout", "exception", "nan", "out_of_range", "drop", "single_client", "spike"]


class HomeFileError(Exception):
    """A home file that cannot be used; the message says where and what to do."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Site(Strict):
    latitude: float = Field(52.0, ge=-90, le=90)
    longitude: float = Field(5.0, ge=-180, le=180)
    utc_offset_h: float = Field(1.0, ge=-12, le=14, description="local time = UTC + this")


class WeatherSpec(Strict):
    outdoor_mean_c: float = 6.0
    outdoor_amplitude_c: float = Field(4.0, ge=0)
    cloudiness: float = Field(0.4, ge=0, le=1, description="0 = always clear, 1 = mostly cloudy")


class BaseLoadSpec(Strict):
    annual_kwh: float = Field(3500.0, gt=0)


class ModbusSpec(Strict):
    port: int = Field(ge=0, le=65535, description="0 = any free port")
    unit: int = Field(1, ge=1, le=247)
    template: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")


class TlsSpec(Strict):
    """Modbus/TCP Security: the device serves TLS (1.2 or later) and accepts only clients whose
    certificate chains to `ca` (mutual TLS). Paths are PEM files, relative to the home file."""

    cert: Path = Field(description="the device's certificate, followed by its CA's")
    key: Path = Field(description="the device's private key (unencrypted)")
    ca: Path = Field(description="the root the clients' certificates must chain to")
    crl: Path | None = Field(
        None, description="the clients' CA's revocation list; without it revoked clients get in"
    )

    def relative_to(self, base: Path) -> TlsSpec:
        """The same files, relative paths taken from `base` (the home file's folder)."""
        return TlsSpec(
            cert=base / self.cert,
            key=base / self.key,
            ca=base / self.ca,
            crl=base / self.crl if self.crl is not None else None,
        )


class FaultSpec(Strict):
    fault: FaultName
    code: int = Field(4, ge=1, le=255, description="exception code for `exception`")


class DeviceBase(Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")
    modbus: ModbusSpec
    tls: TlsSpec | None = Field(None, description="serve Modbus/TCP Security instead of plain TCP")
    faults: list[FaultSpec] = []


class MeterSpec(DeviceBase):
    kind: Literal["meter"]


class PvSpec(DeviceBase):
    kind: Literal["pv"]
    kwp: float = Field(gt=0, le=100)
    rated_w: float | None = Field(None, gt=0, description="inverter AC rating; default kwp × 1000")
    tilt: float = Field(35.0, ge=0, le=90)
    azimuth: float = Field(180.0, ge=0, lt=360, description="degrees from north; 180 = south")


class BatterySpec(DeviceBase):
    kind: Literal["battery"]
    capacity_wh: float = Field(gt=0)
    soc_pct: float = Field(50.0, ge=0, le=100)
    max_charge_w: float = Field(5000.0, gt=0)
    max_discharge_w: float = Field(5000.0, gt=0)
    charge_efficiency: float = Field(0.95, gt=0, le=1)
    discharge_efficiency: float = Field(0.95, gt=0, le=1)
    soc_min_pct: float = Field(5.0, ge=0, le=100)
    soc_max_pct: float = Field(100.0, ge=0, le=100)

    @model_validator(mode="after")
    def _soc_order(self) -> BatterySpec:
        if not self.soc_min_pct < self.soc_max_pct:
            raise ValueError("soc_min_pct must be below soc_max_pct")
        return self


class HeatPumpSpec(DeviceBase):
    kind: Literal["heat_pump"]
    rated_power_w: float = Field(2000.0, gt=0, description="electric power of the compressor")
    room_setpoint_c: float = 20.5
    hysteresis_c: float = Field(0.5, gt=0)
    raised_setpoint_k: float = Field(2.0, ge=0, description="SG-Ready mode 3 raises the setpoint")
    flow_max_c: float = 55.0
    house_ua_w_k: float = Field(150.0, gt=0, description="heat loss of the house, W per kelvin")
    house_capacity_kj_k: float = Field(20000.0, gt=0)
    emitter_ua_w_k: float = Field(400.0, gt=0)
    water_capacity_kj_k: float = Field(800.0, gt=0)
    room_temp_c: float = 20.0


_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class VisitSpec(Strict):
    arrive: str = Field(description="local time of day, HH:MM")
    leave: str = Field(description="local time of day, HH:MM (earlier than arrive = next day)")
    soc_pct: float = Field(ge=0, le=100, description="car's state of charge on arrival")
    capacity_wh: float = Field(gt=0)

    @field_validator("arrive", "leave")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if not _HHMM.match(value):
            raise ValueError(f"{value!r} is not a time of day like 07:30")
        return value


class EvChargerSpec(DeviceBase):
    kind: Literal["ev_charger"]
    max_current_a: float = Field(16.0, ge=6, le=32)
    setpoint_a: float = Field(16.0, description="current at start (0 or 6..max_current_a)")
    visits: list[VisitSpec] = []


DeviceSpec = Annotated[
    MeterSpec | PvSpec | BatterySpec | HeatPumpSpec | EvChargerSpec, Field(discriminator="kind")
]


class HomeSpec(Strict):
    name: str
    seed: int = 1
    step_s: int = Field(10, description="physics step in simulated seconds; must divide 60")
    site: Site = Site()
    weather: WeatherSpec = WeatherSpec()
    base_load: BaseLoadSpec = BaseLoadSpec()
    phases: dict[str, Literal[1, 2, 3]] = Field(
        {"base": 1}, description="single-phase loads by name; any other load is three-phase"
    )
    devices: list[DeviceSpec]
    zigbee: Any = Field(None, description="the Zigbee network (homeflex_sim.zigbee.ZigbeeSpec)")

    @field_validator("step_s")
    @classmethod
    def _divides_minute(cls, value: int) -> int:
        if value <= 0 or 60 % value:
            raise ValueError(f"{value} does not divide 60 (use 1, 2, 5, 10, 15, 20, 30 or 60)")
        return value

    @model_validator(mode="after")
    def _unique(self) -> HomeSpec:
        ids = [d.id for d in self.devices]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"device ids used twice: {', '.join(twice)}")
        units = [(d.modbus.port, d.modbus.unit) for d in self.devices if d.modbus.port]
        clash = sorted({u for u in units if units.count(u) > 1})
        if clash:
            raise ValueError(f"several devices on the same Modbus port and unit: {clash}")
        tls_by_port: dict[int, TlsSpec | None] = {}
        for d in self.devices:
            if d.modbus.port and tls_by_port.setdefault(d.modbus.port, d.tls) != d.tls:
                raise ValueError(
                    f"port {d.modbus.port}: devices sharing a port share its `tls:` (device {d.id})"
                )
        meters = [d.id for d in self.devices if d.kind == "meter"]
        if len(meters) != 1:
            raise ValueError(f"a home has exactly one meter, found {len(meters)}")
        return self


def _locate(node: yaml.Node | None, loc: tuple[int | str, ...]) -> tuple[str, int | None]:
    """The field path as written in the file and the line of the deepest node found. Pydantic's
    union tags (`pv`, `battery`, …) are not keys of the file and are skipped."""
    line = node.start_mark.line + 1 if node is not None else None
    parts: list[str] = []
    for i, key in enumerate(loc):
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if getattr(k, "value", None) == key), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            child = node.value[key]
        if child is None and i < len(loc) - 1 and isinstance(node, yaml.MappingNode):
            continue
        parts.append(str(key))
        node = child
        if child is not None:
            line = child.start_mark.line + 1
    return ".".join(parts) or "(top level)", line


def _hint(kind: str) -> str:
    if kind == "missing":
        return "add this field"
    if kind == "extra_forbidden":
        return "remove it or check its spelling"
    if kind.endswith(("_parsing", "_type")):
        return "give a value of the expected type"
    if kind == "union_tag_invalid":
        return "use one of the kinds listed"
    return "correct the value"


def _errors(
    exc: ValidationError, node: yaml.Node | None, source: str, prefix: tuple[str, ...]
) -> str:
    lines = []
    for err in exc.errors():
        field, line = _locate(node, prefix + tuple(err["loc"]))
        where = f"{source}:{line}" if line else source
        lines.append(f"{where}: {field}: {err['msg']} — {_hint(err['type'])}")
    return "\n".join(lines)


def parse_home(text: str, source: str) -> HomeSpec:
    """Validate a home file's `text` (`source` names it in messages). The `zigbee:` section is
    validated by the Zigbee network's own model when that module is present."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise HomeFileError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise HomeFileError(f"{source}:1: a home file holds a mapping (name:, devices:, …)")
    try:
        spec = HomeSpec.model_validate(data)
    except ValidationError as exc:
        raise HomeFileError(_errors(exc, node, source, ())) from None
    if spec.zigbee is None:
        return spec
    try:
        from homeflex_sim.zigbee import ZigbeeSpec
    except ImportError as exc:
        raise HomeFileError(
            f"{source}: zigbee: this simulator has no Zigbee network ({exc}); remove the section"
        ) from None
    try:
        zigbee = ZigbeeSpec.model_validate(spec.zigbee)
    except ValidationError as exc:
        raise HomeFileError(_errors(exc, node, source, ("zigbee",))) from None
    return spec.model_copy(update={"zigbee": zigbee})


def load_home(path: Path) -> HomeSpec:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise HomeFileError(f"{path}: cannot read the home file ({exc.strerror})") from None
    spec = parse_home(text, str(path))
    devices = [
        d.model_copy(update={"tls": d.tls.relative_to(path.parent)}) if d.tls else d
        for d in spec.devices
    ]
    return spec.model_copy(update={"devices": devices})
