"""The plan when the solver has none (or no time): fixed rules per device kind, no optimisation,
the same Plan fields as the planner's so that the control loop and the KPIs read it alike."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from homeflex.clock import PTU_SECONDS
from homeflex.edge.planner import baseline
from homeflex.edge.planner.devices.battery import BatterySpec
from homeflex.edge.planner.devices.heat_pump import HeatPumpSpec
from homeflex.edge.planner.inputs import PlanInputs, Request
from homeflex.edge.planner.model import DeviceSchedule
from homeflex.edge.planner.planner import MET_TOLERANCE_W, Plan, RequestOutcome
from homeflex.edge.planner.tariff import ptu_costs

DT_H = PTU_SECONDS / 3600.0


def battery(spec: BatterySpec, inputs: PlanInputs, residual_w: list[float]) -> DeviceSchedule:
    """Self-consumption: charges from what the home would export, discharges to cover what it
    would import, within its power limits, its reserve and its maximum."""
    wh = spec.capacity_wh / 100.0
    energy, low, high = spec.soc_start_pct * wh, spec.soc_min_pct * wh, spec.soc_max_pct * wh
    charge, discharge, soc = [], [], []
    for r in residual_w:
        room = max(0.0, high - energy) / (spec.charge_efficiency * DT_H)
        stock = max(0.0, energy - low) * spec.discharge_efficiency / DT_H
        c = min(-r, spec.max_charge_w, room) if r < 0 else 0.0
        d = min(r, spec.max_discharge_w, stock) if r > 0 else 0.0
        energy += DT_H * (spec.charge_efficiency * c - d / spec.discharge_efficiency)
        charge.append(c)
        discharge.append(d)
        soc.append(energy / wh)
    return DeviceSchedule(
        spec.id,
        [c - d for c, d in zip(charge, discharge, strict=True)],
        {"soc_pct": soc, "charge_w": charge, "discharge_w": discharge},
    )


# Kinds whose rule needs only their own spec; batteries come last, on what the others leave.
# The user's own behaviour, as in the baseline; only the battery has a rule of its own here.
RULES: dict[str, Callable[[Any, PlanInputs], DeviceSchedule]] = {
    "appliance": baseline.appliance,
    "ev": baseline.ev,
    "heat_pump": baseline.heat_pump,
    "pv": baseline.pv,
}


def fallback_plan(inputs: PlanInputs) -> Plan:
    """A plan by rules (status "fallback"): appliances at their preferred start, EVs at full
    current from arrival, heat pumps by thermostat, PV never curtailed, batteries for
    self-consumption. A kind without a rule stays idle, with a note saying so. Requests are not
    steered for; each is reported met or not as the rules happen to leave it."""
    n = inputs.ptus
    schedules: dict[str, DeviceSchedule] = {}
    for spec in inputs.devices:
        if spec.kind in RULES:
            schedules[spec.id] = RULES[spec.kind](spec, inputs)
        elif spec.kind != "battery":
            note = f"{spec.id}: the fallback has no rule for kind {spec.kind!r}; left idle"
            schedules[spec.id] = DeviceSchedule(spec.id, [0.0] * n, notes=[note])
    residual = [
        inputs.base_load_w[t] + sum(s.power_w[t] for s in schedules.values()) for t in range(n)
    ]
    for spec in inputs.devices:
        if isinstance(spec, BatterySpec):
            schedules[spec.id] = s = battery(spec, inputs, residual)
            residual = [r + p for r, p in zip(residual, s.power_w, strict=True)]
    imp = [max(0.0, r) for r in residual]
    exp = [max(0.0, -r) for r in residual]
    bill = sum(ptu_costs(inputs.import_price, inputs.export_price, imp, exp))
    discomfort = sum(
        spec.comfort_penalty_eur_per_kh * sum(schedules[spec.id].series["comfort_violation_kh"])
        for spec in inputs.devices
        if isinstance(spec, HeatPumpSpec)
    )
    return Plan(
        start=inputs.start.timestamp(),
        ptus=n,
        status="fallback",
        net_w=residual,
        import_w=imp,
        export_w=exp,
        energy_cost_eur=bill,
        objective_eur=bill + discomfort,
        devices=[schedules[spec.id] for spec in inputs.devices],
        requests=[_outcome(inputs, r, residual) for r in inputs.net_bounds()],
    )


def _outcome(inputs: PlanInputs, r: Request, net_w: list[float]) -> RequestOutcome:
    start = inputs.start.timestamp()
    first = max(0, int((r.start.timestamp() - start) // PTU_SECONDS))
    last = min(inputs.ptus, math.ceil((r.end.timestamp() - start) / PTU_SECONDS))
    missed = 0.0
    for t in range(first, last):
        if r.max_net_w is not None:
            missed = max(missed, net_w[t] - r.max_net_w)
        if r.min_net_w is not None:
            missed = max(missed, r.min_net_w - net_w[t])
    if missed <= MET_TOLERANCE_W:
        return RequestOutcome(r.id, True, kind=r.kind)
    return RequestOutcome(
        r.id,
        False,
        f"not met by up to {missed:.0f} W: the solver found no plan and the fallback rules "
        "do not steer for requests",
        r.kind,
    )
