"""The planner's cost equals an optimum found without it: every combination of appliance starts
enumerated and billed directly on small random homes; with a battery and PV, a separate LP on
another solver (GLOP) for each appliance start."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

import ortools.linear_solver.pywraplp as pywraplp
import pytest

from homeflex.edge.planner.devices.appliance import ApplianceSpec
from homeflex.edge.planner.devices.battery import BatterySpec
from homeflex.edge.planner.devices.pv import PvSpec
from homeflex.edge.planner.inputs import PlanInputs
from homeflex.edge.planner.planner import solve

START = datetime(2026, 6, 1, 10, tzinfo=UTC)
PTU_H = 0.25


def bill(prices_in: list[float], prices_out: list[float], net_w: list[float]) -> float:
    """Written out here, apart from the planner's tariff: W over a quarter hour at €/kWh."""
    total = 0.0
    for p_in, p_out, n in zip(prices_in, prices_out, net_w, strict=True):
        total += (p_in * n if n > 0 else p_out * n) * PTU_H / 1000
    return total


def random_home(rng: random.Random) -> tuple[PlanInputs, list[tuple[list[float], int, int]]]:
    """A home of 16-24 PTUs with PV folded into the base load (negative = surplus) and 1-3
    appliances; returns the inputs and each appliance's (profile, first start, last start)."""
    ptus = rng.randint(16, 24)
    peak = rng.uniform(0, 4000)
    base = [rng.uniform(100, 800) - peak * max(0.0, 1 - abs(t - ptus / 2) / 6) for t in range(ptus)]
    # distinct prices, some negative: no ties, and surplus sometimes costs money
    import_price = [round(rng.uniform(-0.05, 0.45), 4) + t * 1e-6 for t in range(ptus)]
    export_price = [round(rng.uniform(-0.08, 0.12), 4) + t * 1e-6 for t in range(ptus)]
    specs = []
    apps = []
    for k in range(rng.randint(1, 3)):
        profile = [float(rng.randrange(50, 2500, 50)) for _ in range(rng.randint(1, 6))]
        first = rng.randint(0, ptus - len(profile))
        last = rng.randint(first, ptus - len(profile))
        specs.append(
            ApplianceSpec(
                id=f"a{k}",
                profile_w=profile,
                earliest_start=START + timedelta(minutes=15 * first),
                latest_finish=START + timedelta(minutes=15 * (last + len(profile))),
            )
        )
        apps.append((profile, first, last))
    inputs = PlanInputs(
        start=START,
        ptus=ptus,
        import_price=import_price,
        export_price=export_price,
        base_load_w=base,
        devices=specs,
        relative_gap=0.0,
        absolute_gap_eur=0.0,
    )
    return inputs, apps


def enumerated_minimum(inputs: PlanInputs, apps: list[tuple[list[float], int, int]]) -> float:
    best = float("inf")
    for starts in itertools.product(*(range(first, last + 1) for _, first, last in apps)):
        net = list(inputs.base_load_w)
        for (profile, _, _), s in zip(apps, starts, strict=True):
            for k, p in enumerate(profile):
                net[s + k] += p
        best = min(best, bill(inputs.import_price, inputs.export_price, net))
    return best


@pytest.mark.parametrize("seed", range(25))
def test_appliance_starts_match_enumeration(seed: int) -> None:
    inputs, apps = random_home(random.Random(seed))
    plan = solve(inputs)
    expected = enumerated_minimum(inputs, apps)
    assert plan.status == "optimal"
    assert plan.energy_cost_eur == pytest.approx(expected, rel=1e-6, abs=1e-9)
    # and the schedule the planner reports bills to the same amount
    assert bill(inputs.import_price, inputs.export_price, plan.net_w) == pytest.approx(
        expected, rel=1e-6, abs=1e-9
    )


def battery_lp_minimum(
    inputs: PlanInputs, battery: BatterySpec, pv_w: list[float], fixed_w: list[float]
) -> float:
    """The cheapest day of a home with a battery and curtailable PV, as a plain LP on GLOP: the
    binary that forbids charging and discharging at once is left out, which cannot lower the
    optimum while both prices are non-negative on import and export never pays more than import
    (doing both only loses energy)."""
    s = pywraplp.Solver.CreateSolver("GLOP")
    assert s is not None
    n = inputs.ptus
    cap = battery.capacity_wh / 100
    soc = battery.soc_start_pct * cap
    cost = 0.0
    for t in range(n):
        c = s.NumVar(0, battery.max_charge_w, "")
        d = s.NumVar(0, battery.max_discharge_w, "")
        made = s.NumVar(0, pv_w[t], "")
        bought = s.NumVar(0, s.infinity(), "")
        sold = s.NumVar(0, s.infinity(), "")
        s.Add(bought - sold == inputs.base_load_w[t] + fixed_w[t] + c - d - made)
        soc = soc + PTU_H * (battery.charge_efficiency * c - d / battery.discharge_efficiency)
        s.Add(soc >= battery.soc_min_pct * cap)
        s.Add(soc <= battery.soc_max_pct * cap)
        kwh = PTU_H / 1000
        cost += kwh * (inputs.import_price[t] * bought - inputs.export_price[t] * sold)
        cost += kwh * battery.cycle_cost_eur_per_kwh * (c + d)
    if battery.soc_end_min_pct is not None:
        s.Add(soc >= battery.soc_end_min_pct * cap)
    s.Minimize(cost)
    assert s.Solve() == pywraplp.Solver.OPTIMAL
    return float(s.Objective().Value())


@pytest.mark.parametrize("seed", range(30))
def test_battery_pv_and_an_appliance_match_a_separate_lp(seed: int) -> None:
    rng = random.Random(1000 + seed)
    inputs, apps = random_home(rng)
    n = inputs.ptus
    import_price = [rng.uniform(0.05, 0.45) + t * 1e-6 for t in range(n)]
    export_price = [min(p, rng.uniform(-0.05, 0.12)) for p in import_price]
    peak = rng.uniform(1000, 6000)
    pv_w = [peak * max(0.0, 1 - abs(t - n / 2) / 7) for t in range(n)]
    battery = BatterySpec(
        id="bat",
        capacity_wh=rng.uniform(2000, 12000),
        soc_start_pct=rng.uniform(20, 90),
        soc_min_pct=rng.uniform(5, 20),
        soc_max_pct=rng.uniform(90, 100),
        max_charge_w=rng.uniform(1000, 5000),
        max_discharge_w=rng.uniform(1000, 5000),
        charge_efficiency=rng.uniform(0.85, 1.0),
        discharge_efficiency=rng.uniform(0.85, 1.0),
        cycle_cost_eur_per_kwh=rng.choice([0.0, rng.uniform(0, 0.05)]),
        soc_end_min_pct=rng.choice([None, rng.uniform(20, 50)]),
    )
    home = inputs.model_copy(
        update={
            "import_price": import_price,
            "export_price": export_price,
            "base_load_w": [abs(b) for b in inputs.base_load_w],
            "devices": [*inputs.devices[:1], battery, PvSpec(id="pv", forecast_w=pv_w)],
        }
    )
    profile, first, last = apps[0]
    expected = float("inf")
    for s in range(first, last + 1):
        fixed = [0.0] * n
        fixed[s : s + len(profile)] = profile
        expected = min(expected, battery_lp_minimum(home, battery, pv_w, fixed))
    plan = solve(home)
    assert plan.status == "optimal"
    assert plan.objective_eur == pytest.approx(expected, rel=1e-6, abs=1e-7)
