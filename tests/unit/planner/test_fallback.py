"""The rule-based fallback plan: every kind follows its rule, the energy balances and the bill is
the tariff's, with no solver involved."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from homeflex.edge.planner.devices.appliance import ApplianceSpec
from homeflex.edge.planner.devices.battery import BatterySpec
from homeflex.edge.planner.devices.ev import EvSpec
from homeflex.edge.planner.devices.heat_pump import HeatPumpSpec
from homeflex.edge.planner.devices.pv import PvSpec
from homeflex.edge.planner.fallback import fallback_plan
from homeflex.edge.planner.inputs import PlanInputs, Request

DAY = datetime(2026, 3, 20, tzinfo=UTC)
N = 96
WASHER = [2000.0, 2000.0, 300.0, 300.0]


def at(hour: float) -> datetime:
    return DAY + timedelta(hours=hour)


def sun(t: int) -> float:
    hour = t / 4
    return max(0.0, 5000 * math.sin((hour - 6) / 12 * math.pi)) if 6 < hour < 18 else 0.0


def home(**extra: object) -> PlanInputs:
    return PlanInputs.model_validate(
        {
            "start": DAY,
            "import_price": [0.20 + 0.10 * (17 <= t / 4 < 21) for t in range(N)],
            "export_price": [0.05] * N,
            "base_load_w": [400.0] * N,
            "devices": [
                ApplianceSpec(
                    id="washer",
                    profile_w=WASHER,
                    earliest_start=at(8),
                    latest_finish=at(20),
                    preferred_start=at(18),
                ),
                PvSpec(id="pv", forecast_w=[sun(t) for t in range(N)]),
                EvSpec(id="car", arrive=at(17.9), depart=at(23), energy_needed_wh=20_000, phases=3),
                HeatPumpSpec(
                    id="hp",
                    rated_power_w=1500,
                    min_power_w=1500,
                    resistance_k_per_kw=6,
                    capacitance_kwh_per_k=4,
                    outdoor_temp_c=[5.0] * N,
                    room_temp_c=20.5,
                    t_min_c=[20.0] * N,
                    t_max_c=[21.5] * N,
                    min_on_ptus=2,
                ),
                BatterySpec(
                    id="bat",
                    capacity_wh=10_000,
                    soc_start_pct=20,
                    soc_min_pct=10,
                    max_charge_w=3000,
                    max_discharge_w=3000,
                ),
            ],
            **extra,
        }
    )


def test_every_kind_follows_its_rule_and_the_energy_balances() -> None:
    inputs = home()
    plan = fallback_plan(inputs)
    assert plan.status == "fallback"
    dev = {d.device: d for d in plan.devices}

    # appliance at the user's 18:00
    assert dev["washer"].power_w[72:76] == WASHER
    assert sum(dev["washer"].power_w) == sum(WASHER)
    # PV never curtailed
    assert dev["pv"].power_w == [-sun(t) for t in range(N)]
    # car: from the first whole PTU plugged in (18:00) at 16 A × 3 × 230 V until 20 kWh are in
    car = dev["car"].power_w
    assert car[:72] == [0.0] * 72
    full = 16 * 3 * 230.0
    assert car[72] == full and car[73] == full
    # eight full PTUs bring 19 872 Wh, the ninth the last 128 Wh (the car stops when full)
    assert car[72:80] == [full] * 8 and sum(car[81:]) == 0
    assert math.isclose(car[80], 128 / (0.25 * 0.9))
    assert math.isclose(dev["car"].series["energy_wh"][-1], 20_000)
    # heat pump by thermostat: in the band, only ever off or at rated power
    assert all(20 <= y <= 21.5 + 0.3 for y in dev["hp"].series["room_temp_c"])
    assert set(dev["hp"].power_w) == {0.0, 1500.0}

    # battery: charges only from surplus, discharges only against import, never past either
    others = [
        inputs.base_load_w[t] + sum(d.power_w[t] for d in plan.devices if d.device != "bat")
        for t in range(N)
    ]
    bat = dev["bat"]
    energy = 2000.0
    for t in range(N):
        c, d = bat.series["charge_w"][t], bat.series["discharge_w"][t]
        assert c == 0 or d == 0
        assert c <= max(0.0, -others[t]) + 1e-9 and d <= max(0.0, others[t]) + 1e-9
        energy += 0.25 * (0.95 * c - d / 0.95)
        assert math.isclose(bat.series["soc_pct"][t], energy / 100, abs_tol=1e-9)
        assert 10 - 1e-9 <= bat.series["soc_pct"][t] <= 100 + 1e-9
    assert max(bat.series["soc_pct"]) > 90  # a sunny March day fills it
    assert min(bat.series["soc_pct"]) == 10  # and the evening empties it to the reserve

    # the home's balance and the tariff's bill
    bill = 0.0
    for t in range(N):
        net = others[t] + bat.power_w[t]
        assert math.isclose(plan.net_w[t], net, abs_tol=1e-9)
        assert plan.import_w[t] - plan.export_w[t] == plan.net_w[t]
        assert min(plan.import_w[t], plan.export_w[t]) == 0
        bill += 0.25 / 1000 * (inputs.import_price[t] * max(0, net) - 0.05 * max(0, -net))
    assert math.isclose(plan.energy_cost_eur, bill)
    assert plan.objective_eur >= plan.energy_cost_eur


def test_requests_are_reported_not_steered_for() -> None:
    # 18:00-19:00 the washer's and the car's 13 kW cannot stay under 5 kW by rules
    req = Request(id="cap", start=at(18), end=at(19), max_net_w=5000)
    easy = Request(id="night", start=at(2), end=at(3), max_net_w=5000)
    plan = fallback_plan(home(requests=[req, easy]))
    cap, night = plan.requests
    assert not cap.met and "fallback" in cap.reason
    assert night.met
