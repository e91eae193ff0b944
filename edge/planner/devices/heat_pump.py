"""A heat pump heating a house: a 1R1C thermal model stepped exactly per PTU, a comfort band kept
with penalised slack, COP from the outdoor temperature, and minimum on and off times."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from homeflex.clock import PTU_SECONDS
from homeflex.edge.planner.model import DeviceSchedule, Extract, LinExpr, PlanModel

COP_FLOOR = 1.0  # below this the pump would heat worse than a resistor; never planned lower


class HeatPumpSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["heat_pump"] = "heat_pump"
    id: str
    rated_power_w: float = Field(gt=0, description="electrical power at full output")
    min_power_w: float = Field(
        0, ge=0, description="electrical power at the lowest modulation; = rated: on/off only"
    )
    cop_at_7c: float = Field(3.5, gt=0, description="COP at 7 °C outdoors (EN 14511 A7)")
    cop_per_k: float = Field(0.1, ge=0, description="COP gained per K warmer outdoors")
    resistance_k_per_kw: float = Field(
        gt=0, description="house to outdoors: K of difference per kW of heat loss"
    )
    capacitance_kwh_per_k: float = Field(gt=0, description="heat stored per K of the house")
    outdoor_temp_c: list[float] = Field(min_length=1, description="forecast per PTU of the plan")
    gains_w: list[float] | None = Field(
        None, description="heat from sun, people, appliances per PTU (default none)"
    )
    room_temp_c: float = Field(description="room temperature now")
    t_min_c: list[float] = Field(min_length=1, description="comfort band's lower edge per PTU")
    t_max_c: list[float] = Field(min_length=1, description="comfort band's upper edge per PTU")
    comfort_penalty_eur_per_kh: float = Field(
        10.0, gt=0, description="per K·h outside the band: far above what the energy costs"
    )
    min_on_ptus: int = Field(1, ge=1)
    min_off_ptus: int = Field(1, ge=1)
    on_now: bool = False
    ptus_in_state: int = Field(
        1000, ge=0, description="PTUs it has already been on (or off) for, to count min on/off"
    )

    @model_validator(mode="after")
    def _consistent(self) -> HeatPumpSpec:
        if self.min_power_w > self.rated_power_w:
            raise ValueError(
                f"{self.id}: min_power_w {self.min_power_w} is above rated_power_w "
                f"{self.rated_power_w}"
            )
        for t, (low, high) in enumerate(zip(self.t_min_c, self.t_max_c, strict=False)):
            if low > high:
                raise ValueError(f"{self.id}: t_min_c[{t}] = {low} is above t_max_c[{t}] = {high}")
        return self

    def check_horizon(self, ptus: int) -> None:
        """Every series must cover the plan; the message says which one falls short."""
        series = {
            "outdoor_temp_c": self.outdoor_temp_c,
            "t_min_c": self.t_min_c,
            "t_max_c": self.t_max_c,
            "gains_w": self.gains_w or [0.0] * ptus,
        }
        for name, values in series.items():
            if len(values) < ptus:
                raise ValueError(
                    f"{self.id}: {name} has {len(values)} values, the plan {ptus} PTUs"
                )

    def cop(self, t: int) -> float:
        """COP in PTU `t`: linear in the outdoor temperature, never below COP_FLOOR."""
        return max(COP_FLOOR, self.cop_at_7c + self.cop_per_k * (self.outdoor_temp_c[t] - 7.0))

    def decay(self) -> float:
        """How much of the indoor-outdoor difference is left after one PTU with no heat."""
        tau_h = self.resistance_k_per_kw * self.capacitance_kwh_per_k
        return math.exp(-PTU_SECONDS / 3600.0 / tau_h)

    def next_temp(self, t: int, temp: float, heat_w: float) -> float:
        """Room temperature at the end of PTU `t` from `temp` at its start, with the heat pump
        delivering `heat_w` (thermal) throughout: the RC equation's exact solution for inputs
        constant over the PTU."""
        a = self.decay()
        return a * temp + (1 - a) * self._steady(t, heat_w)

    def _steady(self, t: int, heat_w: float) -> float:
        """Where the room would settle if PTU `t`'s outdoor temperature and heat held forever."""
        return self.outdoor_temp_c[t] + self.resistance_k_per_kw * (heat_w + self.gain(t)) / 1000.0

    def gain(self, t: int) -> float:
        return self.gains_w[t] if self.gains_w else 0.0


def build_heat_pump(spec: HeatPumpSpec, m: PlanModel) -> Extract:
    spec.check_horizon(m.ptus)
    a, dt = spec.decay(), m.dt_h
    r = spec.resistance_k_per_kw / 1000.0  # K per W
    penalty = spec.comfort_penalty_eur_per_kh * dt  # € per K outside the band for one PTU
    on_off = spec.min_power_w >= spec.rated_power_w
    on, power, temp, under, over = [], [], [], [], []
    starts: list[LinExpr] = []
    stops: list[LinExpr] = []
    previous_on: LinExpr | float = 1.0 if spec.on_now else 0.0
    previous_temp: LinExpr | float = spec.room_temp_c
    for t in range(m.ptus):
        x = m.boolean(f"{spec.id}.on[{t}]")
        if on_off:
            p: LinExpr = spec.rated_power_w * x
        else:
            p = m.num(0, spec.rated_power_w, f"{spec.id}.power_w[{t}]")
            m.constrain(p >= spec.min_power_w * x, f"{spec.id}.min_power[{t}]")
            m.constrain(p <= spec.rated_power_w * x, f"{spec.id}.max_power[{t}]")
        start = m.num(0, 1, f"{spec.id}.start[{t}]")
        stop = m.num(0, 1, f"{spec.id}.stop[{t}]")
        m.constrain(x - previous_on == start - stop, f"{spec.id}.switch[{t}]")
        m.constrain(start + stop <= 1, f"{spec.id}.one_switch[{t}]")
        steady = spec.outdoor_temp_c[t] + r * (spec.cop(t) * p + spec.gain(t))
        y = m.num(-m.solver.infinity(), m.solver.infinity(), f"{spec.id}.room_temp_c[{t}]")
        m.constrain(y == a * previous_temp + (1 - a) * steady, f"{spec.id}.rc[{t}]")
        lo = m.num(0, m.solver.infinity(), f"{spec.id}.under_k[{t}]")
        hi = m.num(0, m.solver.infinity(), f"{spec.id}.over_k[{t}]")
        m.constrain(y + lo >= spec.t_min_c[t], f"{spec.id}.t_min[{t}]")
        m.constrain(y - hi <= spec.t_max_c[t], f"{spec.id}.t_max[{t}]")
        m.add_penalty(lo, penalty)
        m.add_penalty(hi, penalty)
        m.add_power(t, p)
        on.append(x)
        power.append(p)
        temp.append(y)
        under.append(lo)
        over.append(hi)
        starts.append(start)
        stops.append(stop)
        previous_on, previous_temp = x, y
    _min_times(spec, m, on, starts, stops)

    def extract() -> DeviceSchedule:
        p_w = [m.value(p) for p in power]
        outside = zip(under, over, strict=True)
        violation = [(lo.solution_value() + hi.solution_value()) * dt for lo, hi in outside]
        return DeviceSchedule(
            spec.id,
            p_w,
            {
                "room_temp_c": [y.solution_value() for y in temp],
                "heat_w": [spec.cop(t) * p for t, p in enumerate(p_w)],
                "comfort_violation_kh": violation,
                "on": [float(round(x.solution_value())) for x in on],
            },
        )

    return extract


def _min_times(
    spec: HeatPumpSpec,
    m: PlanModel,
    on: list[LinExpr],
    starts: list[LinExpr],
    stops: list[LinExpr],
) -> None:
    """A start keeps it on for `min_on_ptus`, a stop off for `min_off_ptus`, counting the PTUs it
    has already spent in its present state before the plan."""
    for t in range(m.ptus):
        recent = starts[max(0, t - spec.min_on_ptus + 1) : t + 1]
        m.constrain(m.solver.Sum(recent) <= on[t], f"{spec.id}.min_on[{t}]")
        recent = stops[max(0, t - spec.min_off_ptus + 1) : t + 1]
        m.constrain(m.solver.Sum(recent) <= 1 - on[t], f"{spec.id}.min_off[{t}]")
    held = (spec.min_on_ptus if spec.on_now else spec.min_off_ptus) - spec.ptus_in_state
    for t in range(min(max(0, held), m.ptus)):
        m.constrain(on[t] == (1 if spec.on_now else 0), f"{spec.id}.held[{t}]")


def thermostat(spec: HeatPumpSpec, ptus: int) -> DeviceSchedule:
    """What a plain thermostat does, without prices: at rated power whenever the room would
    otherwise end the PTU below the band, off when heating would take it above, else as it was;
    minimum on and off times kept. The fallback's and the baseline's heat pump."""
    spec.check_horizon(ptus)
    power, temps, violation = [], [], []
    on, held = spec.on_now, spec.ptus_in_state
    temp = spec.room_temp_c
    for t in range(ptus):
        heated = spec.next_temp(t, temp, spec.cop(t) * spec.rated_power_w)
        want = on
        if spec.next_temp(t, temp, 0.0) < spec.t_min_c[t]:
            want = True
        elif heated > spec.t_max_c[t]:
            want = False
        if want != on and held >= (spec.min_on_ptus if on else spec.min_off_ptus):
            on, held = want, 0
        held += 1
        p = spec.rated_power_w if on else 0.0
        temp = heated if on else spec.next_temp(t, temp, 0.0)
        power.append(p)
        temps.append(temp)
        outside = max(0.0, spec.t_min_c[t] - temp, temp - spec.t_max_c[t])
        violation.append(outside * PTU_SECONDS / 3600.0)
    return DeviceSchedule(
        spec.id,
        power,
        {
            "room_temp_c": temps,
            "heat_w": [spec.cop(t) * p for t, p in enumerate(power)],
            "comfort_violation_kh": violation,
            "on": [1.0 if p else 0.0 for p in power],
        },
    )
