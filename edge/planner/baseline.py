"""The baseline the KPIs compare a plan against: no planner, every device runs when its user wants
it (appliances at their preferred start, the car charged at full power on arrival, PV never
curtailed, the battery idle, the heat pump on its thermostat), billed with the planner's tariff."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

from homeflex.clock import PTU_SECONDS
from homeflex.edge.planner.devices.appliance import ApplianceSpec
from homeflex.edge.planner.devices.battery import BatterySpec
from homeflex.edge.planner.devices.ev import EvSpec
from homeflex.edge.planner.devices.heat_pump import HeatPumpSpec, thermostat
from homeflex.edge.planner.devices.pv import PvSpec
from homeflex.edge.planner.inputs import PlanInputs
from homeflex.edge.planner.model import DeviceSchedule
from homeflex.edge.planner.planner import Plan
from homeflex.edge.planner.tariff import ptu_costs

DONE_WH = 1e-6  # what float rounding leaves of a need


def ptus_from_start(inputs: PlanInputs, instant: datetime) -> float:
    """PTUs from the plan's start to `instant`; whole PTUs are taken as the planner takes them: a
    start mid-PTU waits for the next one (ceil), a departure mid-PTU is gone for it (floor)."""
    return (instant.timestamp() - inputs.start.timestamp()) / PTU_SECONDS


def appliance(spec: ApplianceSpec, inputs: PlanInputs) -> DeviceSchedule:
    """Started by hand at the preferred time (else as early as allowed); a cycle running past the
    horizon is cut there."""
    wanted = spec.preferred_start or spec.earliest_start
    start = min(inputs.ptus, max(0, math.ceil(ptus_from_start(inputs, wanted))))
    power = [0.0] * inputs.ptus
    for k, p in enumerate(spec.profile_w[: inputs.ptus - start]):
        power[start + k] = p
    return DeviceSchedule(spec.id, power, {"start_ptu": [float(start)]})


def pv(spec: PvSpec, inputs: PlanInputs) -> DeviceSchedule:
    """Everything the panels deliver, never curtailed."""
    return DeviceSchedule(
        spec.id, [-p for p in spec.forecast_w], {"curtailed_w": [0.0] * len(spec.forecast_w)}
    )


def battery(spec: BatterySpec, inputs: PlanInputs) -> DeviceSchedule:
    """Idle: a battery nobody steers neither charges nor discharges, so the baseline is something
    the planner could also do and its bill an upper bound on the plan's."""
    zeros = [0.0] * inputs.ptus
    return DeviceSchedule(
        spec.id,
        zeros,
        {"soc_pct": [spec.soc_start_pct] * inputs.ptus, "charge_w": zeros, "discharge_w": zeros},
    )


def ev(spec: EvSpec, inputs: PlanInputs) -> DeviceSchedule:
    """Plugged in and charged at full current at once until the need is in the car (the last PTU
    at part power, as a charger stops when the car is full)."""
    full = spec.power_w(spec.max_current_a)
    per_ptu_wh = spec.efficiency * full * PTU_SECONDS / 3600.0
    first = math.ceil(ptus_from_start(inputs, spec.arrive))
    last = math.floor(ptus_from_start(inputs, spec.depart))  # exclusive
    power = [0.0] * inputs.ptus
    delivered = [0.0] * inputs.ptus
    left = spec.need_wh()
    total = 0.0
    for t in range(inputs.ptus):
        if first <= t < last and left > DONE_WH:
            wh = min(per_ptu_wh, left)
            power[t] = full * wh / per_ptu_wh
            left -= wh
            total += wh
        delivered[t] = total
    return DeviceSchedule(spec.id, power, {"energy_wh": delivered})


def heat_pump(spec: HeatPumpSpec, inputs: PlanInputs) -> DeviceSchedule:
    """Its own thermostat, blind to prices."""
    return thermostat(spec, inputs.ptus)


RULES: dict[str, Callable[[Any, PlanInputs], DeviceSchedule]] = {
    "appliance": appliance,
    "battery": battery,
    "ev": ev,
    "heat_pump": heat_pump,
    "pv": pv,
}


def baseline(inputs: PlanInputs) -> Plan:
    """What the home would do and pay without a planner, as a Plan (status "baseline"): the grid
    takes whatever the devices and the base load need, limits and requests are not steered for.
    Its objective is the bill plus what the planner charges for discomfort (K·h outside the band),
    so that the two objectives compare."""
    missing = sorted({d.kind for d in inputs.devices} - RULES.keys())
    if missing:
        raise ValueError(f"the baseline has no rule for device kinds {missing}")
    devices = [RULES[spec.kind](spec, inputs) for spec in inputs.devices]
    net = [inputs.base_load_w[t] + sum(d.power_w[t] for d in devices) for t in range(inputs.ptus)]
    imp = [max(0.0, n) for n in net]
    exp = [max(0.0, -n) for n in net]
    bill = sum(ptu_costs(inputs.import_price, inputs.export_price, imp, exp))
    discomfort = sum(
        spec.comfort_penalty_eur_per_kh * sum(d.series["comfort_violation_kh"])
        for spec, d in zip(inputs.devices, devices, strict=True)
        if isinstance(spec, HeatPumpSpec)
    )
    return Plan(
        start=inputs.start.timestamp(),
        ptus=inputs.ptus,
        status="baseline",
        net_w=net,
        import_w=imp,
        export_w=exp,
        energy_cost_eur=bill,
        objective_eur=bill + discomfort,
        devices=devices,
    )
