"""A home battery: charges and discharges within its power limits (never both in one PTU), its
state of charge follows the energy through both efficiencies and stays between a reserve and a
maximum; each kWh through the inverter costs wear."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from homeflex.edge.planner.model import DeviceSchedule, Extract, LinExpr, PlanModel

# € per kWh outside the SoC band in each PTU, or short of the end target: far above any price,
# so the band is kept whenever it physically can be; soft so that a battery found outside its
# band (reserve raised, a blackout drained it) still gets a plan that brings it back.
BAND_PENALTY_EUR_PER_KWH = 100.0
SHORT_WH = 1.0  # below this a miss is rounding, not worth a note


class BatterySpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["battery"] = "battery"
    id: str
    capacity_wh: float = Field(gt=0, description="usable energy at 100 %")
    soc_start_pct: float = Field(ge=0, le=100, description="state of charge now")
    soc_min_pct: float = Field(10, ge=0, le=100, description="reserve kept for back-up")
    soc_max_pct: float = Field(100, ge=0, le=100)
    max_charge_w: float = Field(gt=0, description="AC power taken when charging at full rate")
    max_discharge_w: float = Field(gt=0, description="AC power given at full discharge rate")
    charge_efficiency: float = Field(0.95, gt=0, le=1, description="stored Wh per AC Wh taken")
    discharge_efficiency: float = Field(0.95, gt=0, le=1, description="AC Wh given per stored Wh")
    cycle_cost_eur_per_kwh: float = Field(
        0.0, ge=0, description="wear per kWh charged plus per kWh discharged (AC side)"
    )
    soc_end_min_pct: float | None = Field(
        None, ge=0, le=100, description="state of charge at least this at the end of the plan"
    )

    @model_validator(mode="after")
    def _band(self) -> BatterySpec:
        if self.soc_min_pct > self.soc_max_pct:
            raise ValueError(
                f"{self.id}: soc_min_pct {self.soc_min_pct} is above soc_max_pct {self.soc_max_pct}"
            )
        if self.soc_end_min_pct is not None and self.soc_end_min_pct > self.soc_max_pct:
            raise ValueError(
                f"{self.id}: soc_end_min_pct {self.soc_end_min_pct} is above "
                f"soc_max_pct {self.soc_max_pct}"
            )
        return self


def build_battery(spec: BatterySpec, m: PlanModel) -> Extract:
    wh = spec.capacity_wh / 100.0  # Wh per percent
    start, low, high = spec.soc_start_pct * wh, spec.soc_min_pct * wh, spec.soc_max_pct * wh
    penalty = BAND_PENALTY_EUR_PER_KWH / 1000.0  # € per Wh
    wear = spec.cycle_cost_eur_per_kwh * m.dt_h / 1000.0  # € per W held for one PTU
    charge, discharge, energy = [], [], []
    below: list[LinExpr] = []
    above: list[LinExpr] = []
    previous: LinExpr | float = start
    for t in range(m.ptus):
        c = m.num(0, spec.max_charge_w, f"{spec.id}.charge_w[{t}]")
        d = m.num(0, spec.max_discharge_w, f"{spec.id}.discharge_w[{t}]")
        charging = m.boolean(f"{spec.id}.charging[{t}]")
        m.constrain(c <= spec.max_charge_w * charging, f"{spec.id}.only_charge[{t}]")
        m.constrain(d <= spec.max_discharge_w * (1 - charging), f"{spec.id}.only_discharge[{t}]")
        # outside the band only as far as it starts outside it
        e = m.num(min(low, start), max(high, start), f"{spec.id}.energy_wh[{t}]")
        flow = spec.charge_efficiency * c - d * (1.0 / spec.discharge_efficiency)
        m.constrain(e == previous + m.dt_h * flow, f"{spec.id}.soc[{t}]")
        if start < low:
            s = m.num(0, low - start, f"{spec.id}.below_reserve_wh[{t}]")
            m.constrain(e + s >= low)
            below.append(s)
        if start > high:
            s = m.num(0, start - high, f"{spec.id}.above_max_wh[{t}]")
            m.constrain(e - s <= high)
            above.append(s)
        m.add_power(t, c - d)
        if wear:
            m.add_cost(wear * (c + d))
        charge.append(c)
        discharge.append(d)
        energy.append(e)
        previous = e
    for s in below + above:
        m.add_penalty(s, penalty)
    end_short: LinExpr | None = None
    if spec.soc_end_min_pct is not None:
        target = spec.soc_end_min_pct * wh
        end_short = m.num(0, target, f"{spec.id}.end_short_wh")
        m.constrain(previous + end_short >= target, f"{spec.id}.end_min")
        m.add_penalty(end_short, penalty)

    def extract() -> DeviceSchedule:
        c_w = [c.solution_value() for c in charge]
        d_w = [d.solution_value() for d in discharge]
        notes = []
        if below:
            notes.append(
                f"{spec.id}: starts at {spec.soc_start_pct:g} %, below its "
                f"{spec.soc_min_pct:g} % reserve; the plan brings it back as soon as it can"
            )
        if above:
            notes.append(
                f"{spec.id}: starts at {spec.soc_start_pct:g} %, above its "
                f"{spec.soc_max_pct:g} % maximum; the plan brings it back as soon as it can"
            )
        if end_short is not None and end_short.solution_value() > SHORT_WH:
            notes.append(
                f"{spec.id}: ends {end_short.solution_value():.0f} Wh short of "
                f"{spec.soc_end_min_pct:g} %: the charge power or the connection cannot reach it"
            )
        return DeviceSchedule(
            spec.id,
            [c - d for c, d in zip(c_w, d_w, strict=True)],
            {
                "soc_pct": [e.solution_value() / wh for e in energy],
                "charge_w": c_w,
                "discharge_w": d_w,
            },
            notes,
        )

    return extract
