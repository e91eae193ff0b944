"""The multi-carrier energy system (MIES) that seed 001's three coordination methods share: its
generators and prosumers, a synthetic system shaped like the paper's, a neighbourhood built
from our own homes, and the system cost and constraint check of any dispatch.

Conventions (seed-notes/001.md §8.2, pinned here):
- One period is one hour. Power in the instance's `unit` (MW for the synthetic system, kW for a
  neighbourhood), energy in unit·h, prices in € per unit·h, money in €.
- A generator's cost in an hour is a·p² + b·p (cronian's convention), so its marginal cost is
  b + 2·a·p.
- A prosumer's net power P is what it injects: negative when it consumes (seed 001 eq. 3).
- The system balance: Σ generators + Σ prosumers' P = passive demand, every hour (eq. 2).
- Storage is "simple" (an LP: charging and discharging at once is not forbidden) and must end
  the horizon with at least the energy it started with (or `energy_end_min`).
- Flexible demand ("flex+n"): what has been served by the end of hour t lies between the
  profile's cumulative energy up to t (never later, never curtailed) and up to t + n (at most n
  hours earlier).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, model_validator

from homeflex.cloud.market.objects import Strict
from homeflex.edge.planner.inputs import PlanInputs

Array = NDArray[np.float64]
ELECTRICITY = "electricity"
EUR_PER_MWH = {"MW": 1.0, "kW": 1e-3}  # € per unit·h for each € per MWh


class Generator(Strict):
    """A generator agent: cost a·p² + b·p per hour, output between p_min and p_max each hour
    (for renewables p_max is the installed capacity times the availability)."""

    name: str
    technology: str
    a: float = Field(ge=0, allow_inf_nan=False, description="€ per unit²·h")
    b: float = Field(allow_inf_nan=False, description="€ per unit·h")
    p_min: list[float]
    p_max: list[float]

    def cost(self, p: Array) -> float:
        return float(np.sum(self.a * p * p + self.b * p))


class Converter(Strict):
    """Turns `capacity` (at most, per hour) of its input carrier into heat and, for a CHP,
    electricity: heat = heat_efficiency × input, electricity = electric_efficiency × input."""

    name: str
    kind: Literal["heat_pump", "e_boiler", "gas_boiler", "chp"]
    carrier: str = Field(description="the input: 'electricity' or a priced carrier")
    capacity: float = Field(gt=0, allow_inf_nan=False)
    heat_efficiency: float = Field(ge=0, allow_inf_nan=False, description="COP for a heat pump")
    electric_efficiency: float = Field(0.0, ge=0, le=1, allow_inf_nan=False)

    @model_validator(mode="after")
    def _consistent(self) -> Converter:
        if self.carrier == ELECTRICITY and self.electric_efficiency:
            raise ValueError(f"{self.name}: an electric converter cannot produce electricity")
        return self


class Storage(Strict):
    """A battery or heat store: energy follows charge × η_charge − discharge / η_discharge."""

    energy_min: float = Field(ge=0, allow_inf_nan=False)
    energy_max: float = Field(gt=0, allow_inf_nan=False)
    energy_start: float = Field(ge=0, allow_inf_nan=False)
    energy_end_min: float | None = Field(None, description="default: energy_start")
    charge_power: float = Field(ge=0, allow_inf_nan=False)
    discharge_power: float = Field(ge=0, allow_inf_nan=False)
    charge_efficiency: float = Field(0.95, gt=0, le=1)
    discharge_efficiency: float = Field(0.95, gt=0, le=1)

    @model_validator(mode="after")
    def _band(self) -> Storage:
        end = self.end_min
        if not self.energy_min <= self.energy_start <= self.energy_max:
            raise ValueError(
                f"energy_start {self.energy_start} is outside [{self.energy_min}, "
                f"{self.energy_max}]"
            )
        if not self.energy_min <= end <= self.energy_max:
            raise ValueError(f"energy_end_min {end} is outside the storage's band")
        return self

    @property
    def end_min(self) -> float:
        return self.energy_start if self.energy_end_min is None else self.energy_end_min


class FlexibleDemand(Strict):
    """Energy that must be served by the profile's time at the latest and at most `shift_h`
    hours earlier, never curtailed (seed 001 eq. 13, flex+n)."""

    name: str
    carrier: Literal["electricity", "heat"]
    profile: list[float] = Field(description="when it would be served unshifted, per hour")
    shift_h: int = Field(ge=0)
    max_power: float | None = Field(None, gt=0, description="at most this per hour")

    def window(self) -> tuple[Array, Array]:
        """Bounds on the cumulative energy served by the end of each hour."""
        cum = np.cumsum(np.asarray(self.profile, dtype=float))
        upper = np.minimum(cum[-1], np.concatenate([cum, np.full(self.shift_h, cum[-1])]))
        return cum, upper[self.shift_h : self.shift_h + len(cum)]


class Prosumer(Strict):
    """A multi-carrier prosumer: base electric and heat demand, heat converters, an optional
    battery and heat store, and flexible demand of either carrier."""

    name: str
    kind: str
    electric_demand: list[float]
    heat_demand: list[float] | None = None
    converters: list[Converter] = Field(default_factory=list)
    battery: Storage | None = None
    heat_store: Storage | None = None
    flexible: list[FlexibleDemand] = Field(default_factory=list)

    @property
    def has_heat(self) -> bool:
        return self.heat_demand is not None or any(f.carrier == "heat" for f in self.flexible)


class Instance(Strict):
    name: str
    unit: Literal["MW", "kW"]
    hours: int = Field(ge=1)
    passive_demand: list[float]
    generators: list[Generator] = Field(min_length=1)
    prosumers: list[Prosumer]
    carrier_prices: dict[str, list[float]] = Field(
        default_factory=dict, description="€ per unit·h of each non-electric carrier, per hour"
    )
    price_cap: float = Field(gt=0, description="the auction's ceiling price, € per unit·h")

    @model_validator(mode="after")
    def _consistent(self) -> Instance:
        def need(what: str, values: Sequence[float] | None) -> None:
            if values is not None and len(values) != self.hours:
                raise ValueError(f"{what} has {len(values)} values, need {self.hours} (hours)")
            if values is not None and not all(math.isfinite(v) for v in values):
                raise ValueError(f"{what} has a value that is not a finite number")

        need("passive_demand", self.passive_demand)
        names = [g.name for g in self.generators] + [p.name for p in self.prosumers]
        if len(names) != len(set(names)):
            raise ValueError("agent names must be unique")
        for g in self.generators:
            need(f"{g.name}.p_min", g.p_min)
            need(f"{g.name}.p_max", g.p_max)
            if any(lo > hi for lo, hi in zip(g.p_min, g.p_max, strict=True)):
                raise ValueError(f"{g.name}: p_min above p_max in some hour")
        for c, prices in self.carrier_prices.items():
            need(f"carrier_prices.{c}", prices)
        for p in self.prosumers:
            need(f"{p.name}.electric_demand", p.electric_demand)
            need(f"{p.name}.heat_demand", p.heat_demand)
            for f in p.flexible:
                need(f"{p.name}.{f.name}.profile", f.profile)
            for cv in p.converters:
                if cv.carrier != ELECTRICITY and cv.carrier not in self.carrier_prices:
                    raise ValueError(f"{p.name}.{cv.name}: no price for carrier {cv.carrier!r}")
            if p.has_heat and not any(cv.heat_efficiency > 0 for cv in p.converters):
                raise ValueError(f"{p.name}: heat demand but no converter that makes heat")
        return self

    @property
    def agents(self) -> int:
        return len(self.generators) + len(self.prosumers)


# --- dispatch, its cost and its check ------------------------------------------------------


@dataclass
class StorageDispatch:
    charge: Array
    discharge: Array
    energy: Array  # at the end of each hour


@dataclass
class ProsumerDispatch:
    net: Array  # P: injection (+) or consumption (−)
    converter_input: dict[str, Array]
    flexible: dict[str, Array]  # energy served in each hour
    battery: StorageDispatch | None = None
    heat_store: StorageDispatch | None = None


@dataclass
class Dispatch:
    generators: dict[str, Array]
    prosumers: dict[str, ProsumerDispatch] = field(default_factory=dict)

    def imbalance(self, instance: Instance) -> Array:
        """Supply minus demand per hour (seed 001 eq. 16)."""
        supply = sum((p for p in self.generators.values()), np.zeros(instance.hours))
        net = sum((p.net for p in self.prosumers.values()), np.zeros(instance.hours))
        out: Array = supply + net - np.asarray(instance.passive_demand, dtype=float)
        return out


@dataclass(frozen=True)
class CoordinationResult:
    """What each coordination method (coordination.py) returns."""

    method: str
    status: Literal["optimal", "converged", "not-converged", "cleared"]
    dispatch: Dispatch
    prices: Array  # € per unit·h, each hour
    cost: float  # objective (1) on `dispatch` (€), plus energy left unserved at the price cap
    iterations: int  # coordination rounds over the whole horizon (1 unless iterating)
    messages: int  # agent ↔ coordinator messages, each way counted
    seconds: float
    primal_residual: float = 0.0  # ‖imbalance‖₂ of the dispatch returned
    dual_residual: float | None = None  # price-response only
    details: dict[str, Any] = field(default_factory=dict)


def carrier_cost(instance: Instance, prosumer: Prosumer, d: ProsumerDispatch) -> float:
    """What the prosumer pays for its non-electric carriers (€)."""
    return float(
        sum(
            np.dot(instance.carrier_prices[cv.carrier], d.converter_input[cv.name])
            for cv in prosumer.converters
            if cv.carrier != ELECTRICITY
        )
    )


def system_cost(instance: Instance, dispatch: Dispatch) -> float:
    """Seed 001 objective (1) on a dispatch: generation cost plus the prosumers' carrier cost."""
    generation = sum(g.cost(dispatch.generators[g.name]) for g in instance.generators)
    carriers = sum(
        carrier_cost(instance, p, dispatch.prosumers[p.name]) for p in instance.prosumers
    )
    return float(generation + carriers)


def violations(instance: Instance, dispatch: Dispatch, tol: float, balance_tol: float) -> list[str]:
    """Every constraint of the MIES (seed 001 eqs. 2–13) that `dispatch` breaks by more than `tol`
    (the balance by more than `balance_tol`), as messages naming the agent, constraint and hour."""
    out: list[str] = []

    def check(what: str, excess: Array, limit: float = tol) -> None:
        bad = np.flatnonzero(excess > limit)
        if bad.size:
            out.append(f"{what}: off by {float(excess[bad].max()):.3g} in hour {int(bad[0])}")

    check("balance", np.abs(dispatch.imbalance(instance)), balance_tol)
    for g in instance.generators:
        p = dispatch.generators[g.name]
        check(f"{g.name} below p_min", np.asarray(g.p_min) - p)
        check(f"{g.name} above p_max", p - np.asarray(g.p_max))
    for pr in instance.prosumers:
        d = dispatch.prosumers[pr.name]
        loc = np.zeros(instance.hours)
        grid = np.asarray(pr.electric_demand, dtype=float).copy()
        heat = -np.asarray(pr.heat_demand or np.zeros(instance.hours), dtype=float)
        for cv in pr.converters:
            x = d.converter_input[cv.name]
            check(f"{pr.name}.{cv.name} negative", -x)
            check(f"{pr.name}.{cv.name} above capacity", x - cv.capacity)
            loc += cv.electric_efficiency * x
            heat += cv.heat_efficiency * x
            if cv.carrier == ELECTRICITY:
                grid += x
        for f in pr.flexible:
            x = d.flexible[f.name]
            low, high = f.window()
            served = np.cumsum(x)
            check(f"{pr.name}.{f.name} negative", -x)
            check(f"{pr.name}.{f.name} later than its profile", low - served)
            check(f"{pr.name}.{f.name} earlier than {f.shift_h} h", served - high)
            if f.max_power is not None:
                check(f"{pr.name}.{f.name} above max_power", x - f.max_power)
            if f.carrier == ELECTRICITY:
                grid += x
            else:
                heat -= x
        for label, spec, s in (
            ("battery", pr.battery, d.battery),
            ("heat store", pr.heat_store, d.heat_store),
        ):
            if spec is None or s is None:
                continue
            prev = np.concatenate([[spec.energy_start], s.energy[:-1]])
            flow = spec.charge_efficiency * s.charge - s.discharge / spec.discharge_efficiency
            check(f"{pr.name} {label} energy balance", np.abs(s.energy - prev - flow))
            check(f"{pr.name} {label} charge", np.maximum(-s.charge, s.charge - spec.charge_power))
            check(
                f"{pr.name} {label} discharge",
                np.maximum(-s.discharge, s.discharge - spec.discharge_power),
            )
            check(
                f"{pr.name} {label} energy band",
                np.maximum(spec.energy_min - s.energy, s.energy - spec.energy_max),
            )
            check(f"{pr.name} {label} end energy", np.array([spec.end_min - s.energy[-1]]))
            if label == "battery":
                loc += s.discharge
                grid += s.charge
            else:
                heat += s.discharge - s.charge
        check(f"{pr.name} net power", np.abs(d.net - (loc - grid)))
        if pr.has_heat:
            check(f"{pr.name} heat balance", np.abs(heat))
    return out


# --- a synthetic system shaped like the paper's ----------------------------------------------

# technology: (units at granularity 1, units added per step, capacity MW in total, b €/MWh,
# share of capacity that must run, availability profile)
TECHNOLOGIES: dict[str, tuple[int, int, float, float, float, str]] = {
    "onwind": (3, 1, 1800, 1.0, 0.0, "wind"),
    "offwind": (1, 1, 600, 1.5, 0.0, "wind"),
    "solar": (3, 1, 1500, 0.5, 0.0, "solar"),
    "ror": (1, 0, 150, 2.0, 0.0, "ror"),
    "biomass": (1, 0, 250, 45.0, 0.0, "firm"),
    "nuclear": (1, 0, 400, 12.0, 0.3, "firm"),
    "lignite": (1, 0, 700, 32.0, 0.0, "firm"),
    "coal": (1, 1, 700, 48.0, 0.0, "firm"),
    "CCGT": (2, 1, 900, 68.0, 0.0, "firm"),
    "OCGT": (1, 1, 400, 95.0, 0.0, "firm"),
    "oil": (1, 0, 300, 150.0, 0.0, "firm"),
}
PROSUMER_KINDS = ("heat-chp", "heat-pump", "battery", "ev")  # one of each added per step
PROSUMERS_AT_1 = {"heat-chp": 4, "heat-pump": 4, "battery": 3, "ev": 3}
PASSIVE_PEAK_MW = 2200.0
METHANE_EUR_PER_MWH = 35.0


def _wind(rng: np.random.Generator, hours: int) -> Array:
    z = np.zeros(hours)
    for t in range(1, hours):  # AR(1): wind changes over hours, not from one hour to the next
        z[t] = 0.93 * z[t - 1] + rng.normal(0, 0.37)
    return np.clip(0.38 + 0.28 * z, 0.02, 0.95)


def synthetic(granularity: int = 1, hours: int = 24, seed: int = 0) -> Instance:
    """A system shaped like seed 001's (a copper plate, in MW): 16 generators and 14 prosumers
    at granularity 1, each step one more adds 6 generators and 4 prosumers (7 → 90 agents).
    The totals (capacities, demands) stay the same at every granularity and are split over
    more agents, as PyPSA-Eur's clustering splits the same country into more nodes."""
    if not 1 <= granularity <= 20:
        raise ValueError(f"granularity {granularity}: use 1 (30 agents) to 20")
    if not 1 <= hours <= 24 * 31:
        raise ValueError(f"hours {hours}: use 1 to 744")
    rng = np.random.default_rng(seed)
    days = math.ceil(hours / 24)
    hod = np.arange(hours) % 24
    day = np.arange(hours) // 24
    weather = {  # shared by all units of a kind, each unit adds its own noise
        "wind": _wind(rng, hours),
        "solar": np.clip(np.sin(np.pi * (hod - 6) / 12), 0, None)
        * rng.uniform(0.35, 1.0, days)[day],
        "ror": 0.55 + 0.05 * np.sin(2 * np.pi * np.arange(hours) / 168),
        "firm": np.ones(hours),
    }
    outdoor = 3 + 4 * np.sin(2 * np.pi * (hod - 9) / 24) + rng.normal(0, 2.5, days)[day]
    heat_shape = np.clip(18 - outdoor, 2, None) * (1 + 0.25 * np.exp(-((hod - 7) ** 2) / 3))
    heat_shape /= heat_shape.max()
    elec_shape = (
        0.62
        + 0.22 * np.exp(-((hod - 9.5) ** 2) / 8)
        + 0.33 * np.exp(-((hod - 19) ** 2) / 6)
        - 0.06 * np.isin(day % 7, (5, 6))
    )
    elec_shape *= 1 + rng.normal(0, 0.02, hours)

    generators = []
    for tech, (units, step, capacity, b, must_run, profile) in TECHNOLOGIES.items():
        n = units + step * (granularity - 1)
        shares = rng.uniform(0.7, 1.3, n)
        for i, share in enumerate(shares / shares.sum()):
            cap = capacity * share
            avail = weather[profile]
            if profile != "firm":  # each site sees the weather a little differently
                avail = avail * rng.uniform(0.85, 1.05) + rng.normal(0, 0.02, hours)
                avail = np.clip(avail, 0, 1)
            bg = b * rng.uniform(0.95, 1.05)
            rise = max(0.2 * bg, 2.0)  # €/MWh the marginal cost climbs from 0 to full output
            generators.append(
                Generator(
                    name=f"{tech}-{i + 1}",
                    technology=tech,
                    a=rise / (2 * cap),
                    b=bg,
                    p_min=list(must_run * cap * np.ones(hours)),
                    p_max=list(cap * avail),
                )
            )

    counts = {k: PROSUMERS_AT_1[k] + granularity - 1 for k in PROSUMER_KINDS}
    prosumers = []
    for kind in PROSUMER_KINDS:
        shares = rng.uniform(0.6, 1.4, counts[kind])
        for i, share in enumerate(shares / shares.sum()):
            prosumers.append(_prosumer(f"{kind}-{i + 1}", kind, share, heat_shape, elec_shape, rng))
    methane = METHANE_EUR_PER_MWH * (1 + 0.04 * np.sin(2 * np.pi * (hod - 8) / 24))
    return Instance(
        name=f"synthetic-g{granularity}-{hours}h-s{seed}",
        unit="MW",
        hours=hours,
        passive_demand=list(PASSIVE_PEAK_MW * elec_shape),
        generators=generators,
        prosumers=prosumers,
        carrier_prices={"methane": list(methane)},
        price_cap=3000.0,
    )


def _store(capacity: float, power: float, eff: float) -> Storage:
    return Storage(
        energy_min=0.0,
        energy_max=capacity,
        energy_start=0.5 * capacity,
        charge_power=power,
        discharge_power=power,
        charge_efficiency=eff,
        discharge_efficiency=eff,
    )


def _prosumer(
    name: str,
    kind: str,
    share: float,
    heat_shape: Array,
    elec_shape: Array,
    rng: np.random.Generator,
) -> Prosumer:
    """One prosumer holding `share` of its kind's totals (MW): district heat with a CHP, homes
    with heat pumps, a battery operator, or EV charging with vehicle-to-grid batteries."""
    hours = len(heat_shape)
    hod = np.arange(hours) % 24
    if kind in ("heat-chp", "heat-pump"):
        peak = share * (900.0 if kind == "heat-chp" else 500.0)
        heat = peak * heat_shape
        flex = 0.1 * heat  # e.g. hot tap water and pre-heating that may come earlier
        need = 1.25 * float((heat + flex).max())  # converters alone can always cover the heat
        if kind == "heat-chp":
            eta_h, eta_e = rng.uniform(0.42, 0.48), rng.uniform(0.36, 0.42)
            converters = [
                Converter(
                    name="chp",
                    kind="chp",
                    carrier="methane",
                    capacity=0.6 * need / eta_h,
                    heat_efficiency=eta_h,
                    electric_efficiency=eta_e,
                ),
                Converter(
                    name="e-boiler",
                    kind="e_boiler",
                    carrier=ELECTRICITY,
                    capacity=0.5 * need / 0.99,
                    heat_efficiency=0.99,
                ),
            ]
            base = np.zeros(hours)
            store = _store(4 * float(heat.mean()), 0.5 * peak, 0.98)
        else:
            cop = rng.uniform(2.8, 3.4)
            converters = [
                Converter(
                    name="heat-pump",
                    kind="heat_pump",
                    carrier=ELECTRICITY,
                    capacity=0.7 * need / cop,
                    heat_efficiency=cop,
                ),
                Converter(
                    name="gas-boiler",
                    kind="gas_boiler",
                    carrier="methane",
                    capacity=0.6 * need / 0.92,
                    heat_efficiency=0.92,
                ),
            ]
            base = share * 100.0 * elec_shape
            store = _store(3 * float(heat.mean()), 0.4 * peak, 0.98)
        return Prosumer(
            name=name, kind=kind, electric_demand=list(base), heat_demand=list(heat),
            converters=converters, heat_store=store,
            flexible=[
                FlexibleDemand(
                    name="flex-heat", carrier="heat", profile=list(flex), shift_h=3,
                    max_power=2 * float(flex.max()),
                )
            ],
        )  # fmt: skip
    if kind == "battery":
        power = share * 400.0
        return Prosumer(
            name=name,
            kind=kind,
            electric_demand=[0.0] * hours,
            battery=_store(4 * power, power, 0.95),
        )
    # EV charging: the cars' own plan charges just before the 07:00 departure; the fleet may
    # charge up to 8 hours earlier and its batteries can give power back (V2G)
    daily = share * 2000.0  # MWh a day
    profile = np.where((hod >= 3) & (hod < 7), daily / 4, 0.0)
    power = share * 150.0
    return Prosumer(
        name=name,
        kind=kind,
        electric_demand=list(share * 300.0 * elec_shape),
        battery=_store(4 * power, power, 0.92),
        flexible=[
            FlexibleDemand(
                name="ev-charging",
                carrier=ELECTRICITY,
                profile=list(profile),
                shift_h=8,
                max_power=float(profile.max()),
            )
        ],
    )


# --- a neighbourhood of our own homes ---------------------------------------------------------


def home_prosumer(name: str, home: PlanInputs, hours: int) -> Prosumer:
    """A home from the planner's own inputs as a MIES prosumer in kW over whole hours (the
    first `hours`): PV lowers the base load; the battery as it is; the heat pump as a converter
    at its mean COP heating the house, whose thermal mass between the comfort band's edges is a
    heat store; appliances and the EV as flexible demand that may run from their earliest start.
    The LP drops what the planner solves as a MILP (minimum power, on/off times, whole cycles)."""
    ptus = 4
    if home.ptus < ptus * hours:
        raise ValueError(f"{name}: {home.ptus} PTUs are fewer than {hours} hours")

    def hourly(series: Sequence[float]) -> Array:
        out: Array = np.asarray(series[: ptus * hours], dtype=float).reshape(hours, ptus).mean(1)
        return out

    def hour_of(instant: object) -> float:
        return (instant - home.start).total_seconds() / 3600  # type: ignore[operator,no-any-return]

    base = hourly(home.base_load_w) / 1000
    converters: list[Converter] = []
    flexible: list[FlexibleDemand] = []
    battery = heat_store = None
    heat_demand = None
    for d in home.devices:
        if d.kind == "pv":
            base = base - hourly(d.forecast_w) / 1000
        elif d.kind == "battery":
            kwh = d.capacity_wh / 100_000  # kWh per percent
            battery = Storage(
                energy_min=d.soc_min_pct * kwh,
                energy_max=d.soc_max_pct * kwh,
                energy_start=min(max(d.soc_start_pct, d.soc_min_pct), d.soc_max_pct) * kwh,
                energy_end_min=None if d.soc_end_min_pct is None else d.soc_end_min_pct * kwh,
                charge_power=d.max_charge_w / 1000,
                discharge_power=d.max_discharge_w / 1000,
                charge_efficiency=d.charge_efficiency,
                discharge_efficiency=d.discharge_efficiency,
            )
        elif d.kind == "heat_pump":
            outdoor, t_min, t_max = (hourly(x) for x in (d.outdoor_temp_c, d.t_min_c, d.t_max_c))
            # heat to hold the room at the band's lower edge, plus reheating after a setback
            loss = np.clip((t_min - outdoor) / d.resistance_k_per_kw, 0, None)
            reheat = d.capacitance_kwh_per_k * np.clip(np.diff(t_min, prepend=t_min[0]), 0, None)
            heat_demand = loss + reheat
            band = d.capacitance_kwh_per_k * float((t_max - t_min).min())
            cop = max(1.0, d.cop_at_7c + d.cop_per_k * (float(outdoor.mean()) - 7))
            converters.append(
                Converter(
                    name=d.id,
                    kind="heat_pump",
                    carrier=ELECTRICITY,
                    capacity=d.rated_power_w / 1000,
                    heat_efficiency=cop,
                )
            )
            if band > 0:
                start = d.capacitance_kwh_per_k * (d.room_temp_c - float(t_min[0]))
                heat_store = Storage(
                    energy_min=0.0,
                    energy_max=band,
                    energy_start=min(max(start, 0.0), band),
                    energy_end_min=0.0,
                    charge_power=d.rated_power_w / 1000 * cop,
                    discharge_power=float(heat_demand.max()) + 1.0,
                    charge_efficiency=1.0,
                    discharge_efficiency=1.0,
                )
        elif d.kind in ("appliance", "ev"):
            first = max(
                0, math.ceil(hour_of(d.earliest_start if d.kind == "appliance" else d.arrive))
            )
            last = min(
                hours, math.floor(hour_of(d.latest_finish if d.kind == "appliance" else d.depart))
            )
            if d.kind == "appliance":
                energy = sum(d.profile_w) / 4000  # kWh of one cycle
                power = max(d.profile_w) / 1000
            else:
                energy = d.need_wh() / d.efficiency / 1000
                power = d.power_w(d.max_current_a) / 1000
            run = math.ceil(energy / power)
            if last - first < run:
                continue  # its window lies outside the hours asked for
            profile = np.zeros(hours)
            profile[last - run : last] = energy / run
            flexible.append(
                FlexibleDemand(
                    name=d.id,
                    carrier=ELECTRICITY,
                    profile=list(profile),
                    shift_h=last - run - first,
                    max_power=power,
                )
            )
    return Prosumer(
        name=name,
        kind="home",
        electric_demand=list(base),
        heat_demand=None if heat_demand is None else list(heat_demand),
        converters=converters,
        battery=battery,
        heat_store=heat_store,
        flexible=flexible,
    )


def neighbourhood(
    homes: Sequence[PlanInputs],
    hours: int = 24,
    transformer_kw: float | None = None,
    price_eur_per_kwh: float | None = None,
    markup_eur_per_kwh: float = 0.10,
) -> Instance:
    """Our homes behind one transformer (in kW): the grid supply is the only generator, its
    cost a·p² + b·p with b the homes' mean import price (unless given) and a such that the
    marginal price climbs `markup` from no load to the transformer's limit (default 4 kW per
    home); it may run backwards (export) to the same limit."""
    if not homes:
        raise ValueError("a neighbourhood needs at least one home")
    limit = 4.0 * len(homes) if transformer_kw is None else transformer_kw
    b = (
        float(np.mean([np.mean(h.import_price) for h in homes]))
        if price_eur_per_kwh is None
        else price_eur_per_kwh
    )
    grid = Generator(
        name="grid",
        technology="transformer",
        a=markup_eur_per_kwh / (2 * limit),
        b=b,
        p_min=[-limit] * hours,
        p_max=[limit] * hours,
    )
    return Instance(
        name=f"neighbourhood-{len(homes)}-homes-{hours}h",
        unit="kW",
        hours=hours,
        passive_demand=[0.0] * hours,
        generators=[grid],
        prosumers=[home_prosumer(f"home-{n + 1}", h, hours) for n, h in enumerate(homes)],
        price_cap=3.0,
    )
