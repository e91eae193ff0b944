"""An electric car on the home's charger: plugged in from `arrive` to `depart`, it needs a given
energy by departure. The charger runs off or between its minimum and maximum current; with V2G it
may also give power back, down to a floor. A need the window cannot hold is delivered as far as
possible and the shortfall noted, never an infeasible plan."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from homeflex.clock import PTU_SECONDS
from homeflex.edge.planner.model import DeviceSchedule, Extract, LinExpr, PlanModel

VOLTS = 230.0
# € per kWh short of the need at departure: far above any price, so the need is met whenever
# the window, the charger and the connection allow it.
SHORTFALL_PENALTY_EUR_PER_KWH = 100.0
SHORT_WH = 1.0  # below this a miss is rounding, not worth a note


class EvSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["ev"] = "ev"
    id: str
    arrive: datetime = Field(description="plugged in from (in the past when already plugged in)")
    depart: datetime
    energy_needed_wh: float | None = Field(
        None, ge=0, description="energy into the car's battery by departure"
    )
    capacity_wh: float | None = Field(None, gt=0, description="the car's usable battery energy")
    soc_arrival_pct: float | None = Field(
        None, ge=0, le=100, description="state of charge at arrival (now, if already plugged in)"
    )
    soc_target_pct: float | None = Field(None, ge=0, le=100)
    min_current_a: float = Field(6, gt=0, description="the charger cannot run below this")
    max_current_a: float = Field(16, gt=0)
    phases: Literal[1, 3] = 3
    efficiency: float = Field(0.9, gt=0, le=1, description="Wh into the car per AC Wh (and back)")
    v2g: bool = Field(False, description="the car may give power back to the home")
    v2g_floor_pct: float = Field(40, ge=0, le=100, description="V2G never goes below this")
    v2g_cost_eur_per_kwh: float = Field(0.0, ge=0, description="wear per kWh given back")

    @model_validator(mode="after")
    def _consistent(self) -> EvSpec:
        if self.depart <= self.arrive:
            raise ValueError(f"{self.id}: depart must be after arrive")
        if self.max_current_a < self.min_current_a:
            raise ValueError(
                f"{self.id}: max_current_a {self.max_current_a} is below "
                f"min_current_a {self.min_current_a}"
            )
        from_soc = (self.capacity_wh, self.soc_arrival_pct, self.soc_target_pct)
        if self.energy_needed_wh is None and None in from_soc:
            raise ValueError(
                f"{self.id}: give energy_needed_wh, or capacity_wh, soc_arrival_pct and "
                "soc_target_pct"
            )
        if self.v2g and None in from_soc[:2]:
            raise ValueError(f"{self.id}: V2G needs capacity_wh and soc_arrival_pct")
        return self

    def need_wh(self) -> float:
        if self.energy_needed_wh is not None:
            return self.energy_needed_wh
        capacity, arrival, target = self.capacity_wh, self.soc_arrival_pct, self.soc_target_pct
        if capacity is None or arrival is None or target is None:  # the validator prevents it
            raise ValueError(f"{self.id}: no energy_needed_wh and no state of charge to derive it")
        return max(0.0, capacity * (target - arrival) / 100)

    def power_w(self, amps: float) -> float:
        return amps * VOLTS * self.phases


def build_ev(spec: EvSpec, m: PlanModel) -> Extract:
    low, high = spec.power_w(spec.min_current_a), spec.power_w(spec.max_current_a)
    eta, dt = spec.efficiency, m.dt_h
    # whole PTUs plugged in: a car arriving mid-PTU starts in the next, one leaving mid-PTU stops
    first = math.ceil(_ptus_from_start(spec.arrive, m))
    last = math.floor(_ptus_from_start(spec.depart, m))  # exclusive
    window = range(max(0, first), min(m.ptus, last))
    need = spec.need_wh()
    # Only what cannot wait for the PTUs after this plan's horizon must be delivered now; the
    # following plans see the rest.
    later = max(0, last - max(m.ptus, first))
    due = max(0.0, need - later * eta * high * dt)
    # a charger running at least `low` may overshoot by less than one PTU at its minimum
    allowed = need + eta * low * dt
    floor = 0.0  # Wh below the arrival level the car may go (V2G)
    if spec.capacity_wh is not None and spec.soc_arrival_pct is not None:
        allowed = min(allowed, spec.capacity_wh * (100 - spec.soc_arrival_pct) / 100)
        if spec.v2g:
            # a car arriving below the floor never gives back below its arrival level
            floor = min(0.0, spec.capacity_wh * (spec.v2g_floor_pct - spec.soc_arrival_pct) / 100)

    charge: dict[int, LinExpr] = {}
    give: dict[int, LinExpr] = {}
    stored: LinExpr | float = 0.0  # Wh into the car since arrival (or now)
    for t in window:
        charging = m.boolean(f"{spec.id}.charging[{t}]")
        c = m.num(0, high, f"{spec.id}.charge_w[{t}]")
        m.constrain(c >= low * charging, f"{spec.id}.min_charge[{t}]")
        m.constrain(c <= high * charging, f"{spec.id}.max_charge[{t}]")
        flow = eta * c
        charge[t] = c
        if spec.v2g:
            giving = m.boolean(f"{spec.id}.giving[{t}]")
            g = m.num(0, high, f"{spec.id}.give_w[{t}]")
            m.constrain(g >= low * giving, f"{spec.id}.min_give[{t}]")
            m.constrain(g <= high * giving, f"{spec.id}.max_give[{t}]")
            m.constrain(charging + giving <= 1, f"{spec.id}.one_way[{t}]")
            if spec.v2g_cost_eur_per_kwh:
                m.add_cost(spec.v2g_cost_eur_per_kwh * dt / 1000.0 * g)
            flow = flow - g * (1.0 / eta)
            give[t] = g
        e = m.num(floor, allowed, f"{spec.id}.energy_wh[{t}]")
        m.constrain(e == stored + dt * flow, f"{spec.id}.energy[{t}]")
        m.add_power(t, c - give[t] if spec.v2g else c)
        stored = e
    short = m.num(0, due, f"{spec.id}.short_wh")
    m.constrain(stored + short >= due, f"{spec.id}.need")
    m.add_penalty(short, SHORTFALL_PENALTY_EUR_PER_KWH / 1000.0)

    def extract() -> DeviceSchedule:
        power = [0.0] * m.ptus
        delivered = [0.0] * m.ptus
        total = 0.0
        for t in range(m.ptus):
            if t in charge:
                c = charge[t].solution_value()
                g = give[t].solution_value() if t in give else 0.0
                power[t] = c - g
                total += dt * (eta * c - g / eta)
            delivered[t] = total
        notes = []
        missing = short.solution_value()
        if missing > SHORT_WH:
            by = min(spec.depart.timestamp(), m.instant(m.ptus))
            notes.append(
                f"{spec.id}: {missing:.0f} Wh short of the {due:.0f} Wh needed by "
                f"{datetime.fromtimestamp(by, UTC):%H:%M} UTC: the plug-in window, the "
                "charger's current or the connection cannot deliver more"
            )
        return DeviceSchedule(spec.id, power, {"energy_wh": delivered}, notes)

    return extract


def _ptus_from_start(instant: datetime, m: PlanModel) -> float:
    """PTUs from the plan's start to `instant`, not clamped to the horizon."""
    return (instant.timestamp() - m.start) / PTU_SECONDS
