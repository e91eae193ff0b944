"""The home the gateway plans: what the devices cannot report (HomeConfig: parameters, preferences,
the price file), the planner's inputs built from readings, and commands sent to the devices."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from homeflex.clock import PTU_SECONDS, ptu_start
from homeflex.configfile import ConfigError, parse_config
from homeflex.edge.control import Command, Snapshot
from homeflex.edge.devices.capabilities import (
    Battery,
    DeferrableAppliance,
    Device,
    DeviceError,
    EvCharger,
    HeatPump,
    PvInverter,
    Quantity,
)
from homeflex.edge.planner.devices import DeviceSpec
from homeflex.edge.planner.devices.appliance import ApplianceSpec
from homeflex.edge.planner.devices.battery import BatterySpec
from homeflex.edge.planner.devices.ev import EvSpec
from homeflex.edge.planner.devices.heat_pump import HeatPumpSpec
from homeflex.edge.planner.devices.pv import PvSpec
from homeflex.edge.planner.forecast import DAY_S, base_load_forecast, pv_forecast, resample
from homeflex.edge.planner.inputs import Grid, PlanInputs

log = logging.getLogger(__name__)

HISTORY_DAYS = 29  # the base-load forecast looks four weeks back, the PV forecast three days
# ZCL Appliance Control status codes: a programme is prepared and waits for its start
APPLIANCE_PROGRAMMED = (3, 4)  # Programmed, Programmed_Waiting_To_Start


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Site(Strict):
    """Where the home is: the sun's path for the PV forecast, local time for the owner's times."""

    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    utc_offset_h: float = Field(
        0.0, ge=-12, le=14, description="local time = UTC + this; times of day below are local"
    )

    def next_time(self, now: float, at: time) -> float:
        """The first instant after `now` at which the local clock shows `at`."""
        offset = self.utc_offset_h * 3600
        local = datetime.fromtimestamp(now + offset, UTC)
        candidate = datetime.combine(local.date(), at, UTC).timestamp() - offset
        return candidate if candidate > now else candidate + DAY_S

    def time_of_day(self, instant: float) -> time:
        return datetime.fromtimestamp(instant + self.utc_offset_h * 3600, UTC).time()


class PriceSource(Strict):
    """Prices come from `file` (re-read when it changes). Where it does not cover a PTU of the
    horizon (or cannot be read at all) the flat tariff below is used for that PTU."""

    file: Path = Field(description="YAML or JSON: start, series_step_s, import_price, export_price")
    flat_import_eur_per_kwh: float = Field(0.30, description="import price outside the file")
    flat_export_eur_per_kwh: float = Field(0.05, description="export price outside the file")


class PriceFile(Strict):
    """The price file's format; prices in €/kWh, the first value for the step from `start`."""

    start: datetime
    series_step_s: Literal[900, 1800, 3600] = 900
    import_price: list[float] = Field(min_length=1)
    export_price: list[float] = Field(min_length=1)

    @model_validator(mode="after")
    def _aligned(self) -> PriceFile:
        if len(self.import_price) != len(self.export_price):
            raise ValueError(
                f"import_price has {len(self.import_price)} values and export_price "
                f"{len(self.export_price)}; give one of each per step"
            )
        if self.start.tzinfo is None:
            raise ValueError("start needs a time zone, e.g. 2026-06-01T00:00:00Z")
        if self.start.timestamp() % PTU_SECONDS:
            raise ValueError("start must be on a PTU boundary (a multiple of 15 minutes)")
        return self


def _spec_errors(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"] else e["msg"]
        for e in exc.errors()
    )


class BatteryConfig(BatterySpec):
    """The planner's battery spec (same fields, same checks); the SoC comes from the battery."""

    soc_start_pct: float = Field(
        50.0, ge=0, le=100, description="assumed only until the battery reports its SoC"
    )


class PvConfig(Strict):
    kind: Literal["pv"] = "pv"
    id: str
    peak_w: float = Field(gt=0, description="AC peak power; the forecast never exceeds it")
    curtailable: bool = Field(True, description="the inverter accepts a power limit")


class EvConfig(Strict):
    """A charger and its owner's wish: `energy_needed_wh` into the car, per plug-in, by the next
    `ready_by`. Planned while the charger reports a car connected; while it is away, from
    `expected_arrival` (the owner's usual plug-in time) if given, so that the day-ahead plan
    and the neighbourhood see the charging to come."""

    kind: Literal["ev"] = "ev"
    id: str
    phases: Literal[1, 3] = 3
    min_current_a: float = 6
    max_current_a: float = 16
    efficiency: float = 0.9
    ready_by: time = Field(description="local time of day the car must be charged by")
    energy_needed_wh: float = Field(ge=0, description="energy into the car per plug-in")
    expected_arrival: time | None = Field(
        None, description="local time of day the car is usually plugged in"
    )

    def spec(self, arrive: float, depart: float, delivered_wh: float) -> EvSpec:
        return EvSpec(
            id=self.id,
            arrive=datetime.fromtimestamp(arrive, UTC),
            depart=datetime.fromtimestamp(depart, UTC),
            energy_needed_wh=max(0.0, self.energy_needed_wh - delivered_wh),
            min_current_a=self.min_current_a,
            max_current_a=self.max_current_a,
            phases=self.phases,
            efficiency=self.efficiency,
        )

    @model_validator(mode="after")
    def _as_spec(self) -> EvConfig:
        try:  # the planner's checks, on a sample session: not repeated here
            self.spec(0.0, 3600.0, 0.0)
        except ValidationError as exc:
            raise ValueError(_spec_errors(exc)) from None
        return self


class ComfortBand(Strict):
    start: time = Field(description="local time of day from which this band holds")
    t_min_c: float
    t_max_c: float


class HeatPumpConfig(Strict):
    """The house's thermal parameters and the comfort band by time of day (each band holds from
    its `start` until the next one's, the last one past midnight). Planned only while the pump
    reports the room temperature."""

    kind: Literal["heat_pump"] = "heat_pump"
    id: str
    rated_power_w: float
    min_power_w: float = 0
    cop_at_7c: float = 3.5
    cop_per_k: float = 0.1
    resistance_k_per_kw: float
    capacitance_kwh_per_k: float
    comfort: list[ComfortBand] = Field(min_length=1)
    comfort_penalty_eur_per_kh: float = 10.0
    min_on_ptus: int = 1
    min_off_ptus: int = 1
    outdoor_temp_c: float = Field(7.0, description="assumed while the pump reports none")
    on_above_w: float = Field(100.0, ge=0, description="the pump counts as on above this power")

    def band(self, site: Site, start: float, ptus: int) -> tuple[list[float], list[float]]:
        bands = sorted(self.comfort, key=lambda b: b.start)
        low, high = [], []
        for t in range(ptus):
            clock = site.time_of_day(start + (t + 0.5) * PTU_SECONDS)
            now_band = next((b for b in reversed(bands) if b.start <= clock), bands[-1])
            low.append(now_band.t_min_c)
            high.append(now_band.t_max_c)
        return low, high

    def spec(
        self, site: Site, start: float, ptus: int, room_c: float, outdoor_c: float, on: bool
    ) -> HeatPumpSpec:
        low, high = self.band(site, start, ptus)
        return HeatPumpSpec(
            id=self.id,
            rated_power_w=self.rated_power_w,
            min_power_w=self.min_power_w,
            cop_at_7c=self.cop_at_7c,
            cop_per_k=self.cop_per_k,
            resistance_k_per_kw=self.resistance_k_per_kw,
            capacitance_kwh_per_k=self.capacitance_kwh_per_k,
            outdoor_temp_c=[outdoor_c] * ptus,  # persistence: no weather forecast yet
            room_temp_c=room_c,
            t_min_c=low,
            t_max_c=high,
            comfort_penalty_eur_per_kh=self.comfort_penalty_eur_per_kh,
            min_on_ptus=self.min_on_ptus,
            min_off_ptus=self.min_off_ptus,
            on_now=on,
        )

    @model_validator(mode="after")
    def _as_spec(self) -> HeatPumpConfig:
        try:
            self.spec(Site(latitude=0, longitude=0), 0.0, 96, 20.0, self.outdoor_temp_c, False)
        except ValidationError as exc:
            raise ValueError(_spec_errors(exc)) from None
        return self


class ApplianceConfig(Strict):
    """A shiftable appliance: planned while the user has a programme prepared (ZCL status
    Programmed or Waiting to start), to finish by the next `finish_by`."""

    kind: Literal["appliance"] = "appliance"
    id: str
    profile_w: list[float] = Field(min_length=1, description="mean power in each PTU of the cycle")
    finish_by: time = Field(description="local time of day the cycle must be done by")

    def spec(self, now: float, finish: float) -> ApplianceSpec:
        return ApplianceSpec(
            id=self.id,
            profile_w=self.profile_w,
            earliest_start=datetime.fromtimestamp(now, UTC),
            latest_finish=datetime.fromtimestamp(finish, UTC),
        )

    @model_validator(mode="after")
    def _as_spec(self) -> ApplianceConfig:
        try:
            self.spec(0.0, float(DAY_S))
        except ValidationError as exc:
            raise ValueError(_spec_errors(exc)) from None
        return self


HomeDeviceConfig = Annotated[
    BatteryConfig | PvConfig | EvConfig | HeatPumpConfig | ApplianceConfig,
    Field(discriminator="kind"),
]


class HomeConfig(Strict):
    """What the gateway needs to plan the home that the devices cannot report. Each device's
    `id` is the gateway device it plans; devices not listed are only monitored."""

    meter: str = Field(description="device id of the grid meter")
    site: Site
    prices: PriceSource
    grid: Grid = Grid()
    devices: list[HomeDeviceConfig] = []
    cycle_s: float = Field(10.0, gt=0, description="control cycle, in the gateway clock's seconds")
    ptus: int = Field(96, ge=1, le=672, description="planning horizon in PTUs")
    solve_time_limit_s: float = Field(5.0, gt=0, description="per solve, in real seconds")
    base_load_default_w: float = Field(400.0, ge=0, description="base load without history")

    def check_devices(self, gateway_ids: set[str]) -> None:
        """Every id the home names must be a device of the gateway."""
        for dev_id in [self.meter, *(d.id for d in self.devices)]:
            if dev_id not in gateway_ids:
                raise ValueError(
                    f"home: device {dev_id!r} is not among the gateway's devices "
                    f"({', '.join(sorted(gateway_ids)) or 'none'}); add it under `devices:` or "
                    "fix the id"
                )


class Prices:
    """The price file's latest good contents; re-read when its size or time stamp changes. A file
    that cannot be used is reported (file, line, field) and the last good prices stay."""

    def __init__(self, source: PriceSource) -> None:
        self.source = source
        self.series: PriceFile | None = None
        self.error = ""
        self._stamp: tuple[int, int] | None = None

    def reload(self) -> bool:
        """Read the file if it changed; True when new prices were taken."""
        path = self.source.file
        try:
            st = path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError as exc:
            stamp = (-1, -1)
            if stamp != self._stamp:
                self.error = f"{path}: cannot be read ({exc.strerror}); keeping the last prices"
                log.error("prices: %s", self.error)
            self._stamp = stamp
            return False
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            series = parse_config(path.read_text(encoding="utf-8"), PriceFile, str(path))
        except (ConfigError, OSError, UnicodeDecodeError) as exc:
            self.error = f"{exc}; keeping the last prices"
            log.error("prices: %s", self.error)
            return False
        self.series, self.error = series, ""
        log.info("prices: %s read, %d values from %s", path, len(series.import_price), series.start)
        return True

    def horizon(self, start: float, ptus: int) -> tuple[list[float], list[float]]:
        """Import and export €/kWh for each PTU from `start`; the flat tariff where the file has
        no value."""
        imp = [self.source.flat_import_eur_per_kwh] * ptus
        exp = [self.source.flat_export_eur_per_kwh] * ptus
        if self.series is not None:
            s = self.series
            first = round((start - s.start.timestamp()) / PTU_SECONDS)
            file_imp = resample(s.import_price, s.series_step_s)
            file_exp = resample(s.export_price, s.series_step_s)
            for t in range(ptus):
                if 0 <= first + t < len(file_imp):
                    imp[t], exp[t] = file_imp[first + t], file_exp[first + t]
        return imp, exp


class History:
    """Mean power per PTU from the store: the base load (the meter minus every planned device)
    and each PV inverter's production, keyed by PTU start."""

    def __init__(self) -> None:
        self.base_load_w: dict[float, float] = {}
        self.pv_w: dict[str, dict[float, float]] = {}


class Home:
    """One home's planning state: prices, history, EV sessions; `make_inputs` is the control
    loop's hook and must stay quick (it runs on the event loop)."""

    def __init__(self, cfg: HomeConfig) -> None:
        self.cfg = cfg
        self.prices = Prices(cfg.prices)
        self.history = History()
        self._sessions: dict[str, float] = {}  # EV id → charger import_wh at plug-in

    def load_history(self, store: Any, now: float) -> History:
        """Read the history from the store (call on the store's thread); complete PTUs only."""
        end = ptu_start(now)
        begin = end - HISTORY_DAYS * DAY_S

        def net(device: str) -> dict[float, float]:
            scale = 3600.0 / PTU_SECONDS  # Wh in one PTU → mean W
            return {
                r.ptu_start: (r.import_wh - r.export_wh) * scale
                for r in store.ptu_energy(device, begin, end)
            }

        meter = net(self.cfg.meter)
        planned = {d.id: net(d.id) for d in self.cfg.devices}
        h = History()
        for ts, grid_w in meter.items():
            # a device without a row here would have its power counted as base load: leave it out
            if all(ts in rows for rows in planned.values()):
                h.base_load_w[ts] = max(0.0, grid_w - sum(rows[ts] for rows in planned.values()))
        for d in self.cfg.devices:
            if isinstance(d, PvConfig):
                h.pv_w[d.id] = {ts: max(0.0, -w) for ts, w in planned[d.id].items()}
        return h

    def make_inputs(self, now: float, snapshot: Snapshot, ptus: int | None = None) -> PlanInputs:
        """The planner's inputs from the PTU of `now`, over the configured horizon or `ptus`."""
        start = ptu_start(now)
        n = ptus or self.cfg.ptus
        imp, exp = self.prices.horizon(start, n)
        base = base_load_forecast(start, n, self.history.base_load_w, self.cfg.base_load_default_w)
        devices = [s for d in self.cfg.devices if (s := self._spec(d, now, start, n, snapshot))]
        return PlanInputs(
            start=datetime.fromtimestamp(start, UTC),
            ptus=n,
            import_price=imp,
            export_price=exp,
            base_load_w=base,
            grid=self.cfg.grid,
            devices=devices,
            time_limit_s=self.cfg.solve_time_limit_s,
        )

    def _spec(
        self, d: HomeDeviceConfig, now: float, start: float, n: int, snap: Snapshot
    ) -> DeviceSpec | None:
        def value(q: Quantity) -> float | None:
            r = snap.get((d.id, q))
            return None if r is None else r.value

        site = self.cfg.site
        if isinstance(d, BatteryConfig):
            soc = value(Quantity.SOC_PCT)
            data = d.model_dump()
            if soc is not None:
                data["soc_start_pct"] = min(100.0, max(0.0, soc))
            return BatterySpec.model_validate(data)
        if isinstance(d, PvConfig):
            history = self.history.pv_w.get(d.id, {})
            forecast = pv_forecast(
                start, n, history, site.latitude, site.longitude, peak_w=d.peak_w
            )
            return PvSpec(
                id=d.id,
                forecast_w=[min(d.peak_w, w) for w in forecast],
                curtailable=d.curtailable,
            )
        if isinstance(d, EvConfig):
            connected, counter = value(Quantity.EV_CONNECTED), value(Quantity.IMPORT_WH)
            if connected is not None and connected < 0.5:
                self._sessions.pop(d.id, None)  # unplugged: the next plug-in is a new session
                if d.expected_arrival is None:
                    return None
                arrive = site.next_time(now, d.expected_arrival)
                return d.spec(arrive, site.next_time(arrive, d.ready_by), 0.0)
            if connected is None:
                return None  # not known: the charger keeps its own setting
            delivered = 0.0  # without the charger's counter: as if just plugged in
            if counter is not None:
                at_plug_in = self._sessions.setdefault(d.id, counter)
                delivered = d.efficiency * max(0.0, counter - at_plug_in)
            return d.spec(now, site.next_time(now, d.ready_by), delivered)
        if isinstance(d, HeatPumpConfig):
            room = value(Quantity.ROOM_TEMP_C)
            if room is None:
                return None  # without the room temperature the pump keeps its own thermostat
            outdoor = value(Quantity.OUTDOOR_TEMP_C)
            power = value(Quantity.POWER_W) or 0.0
            return d.spec(
                site,
                start,
                n,
                room,
                d.outdoor_temp_c if outdoor is None else outdoor,
                power > d.on_above_w,
            )
        state = value(Quantity.APPLIANCE_STATE)
        if state is None or int(state) not in APPLIANCE_PROGRAMMED:
            return None
        return d.spec(now, site.next_time(now, d.finish_by))


async def send(commands: Sequence[Command], devices: Mapping[str, Device]) -> None:
    """Each command to its device's capability; a failure is logged with the device and the
    command, and the other commands still go. Nothing raises out of here."""
    for c in commands:
        try:
            await _apply(c, devices.get(c.device))
        except DeviceError as exc:
            log.warning("command %s %s=%g failed: %s", c.device, c.quantity, c.value, exc)
        except Exception:  # a driver bug must not stop the other devices' commands
            log.exception("command %s %s=%g failed", c.device, c.quantity, c.value)


async def _apply(c: Command, dev: Device | None) -> None:
    if dev is None:
        raise DeviceError(f"{c.device}: no such device in the gateway")
    q = c.quantity
    if q is Quantity.SETPOINT_W and isinstance(dev, Battery):
        await dev.set_power(round(c.value))
    elif q is Quantity.SETPOINT_A and isinstance(dev, EvCharger):
        await dev.set_current(math.floor(c.value * 10) / 10)  # never above what was asked
    elif q is Quantity.SG_READY_MODE and isinstance(dev, HeatPump):
        await dev.set_sg_ready(round(c.value))
    elif q is Quantity.POWER_LIMIT_PCT and isinstance(dev, PvInverter):
        await dev.set_power_limit(round(c.value, 1))
    elif q is Quantity.START_DELAY_S and isinstance(dev, DeferrableAppliance):
        await dev.defer_start(round(c.value))
    else:
        raise DeviceError(f"{c.device}: does not take {q} (no such capability)")
