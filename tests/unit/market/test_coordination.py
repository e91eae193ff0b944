"""Seed 001's three coordination methods on the same instances: co-optimization and
price-response agree in cost and prices, the market auction costs at least as much, every
dispatch keeps the balance and every agent's constraints, and price-response says so when it
stops at its cap."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from homeflex.cloud.market import coordination as co
from homeflex.cloud.market import mies
from homeflex.cloud.market.registry import coordination_method, coordination_methods
from homeflex.edge.planner.inputs import PlanInputs

MW_TOL = 1e-3  # MW: what the QP and LP solvers leave on a constraint


@pytest.fixture(scope="module")
def small() -> mies.Instance:
    """The paper's smallest system (16 generators, 14 prosumers) over 8 hours."""
    return mies.synthetic(granularity=1, hours=8, seed=0)


@pytest.fixture(scope="module")
def results(small: mies.Instance) -> dict[str, mies.CoordinationResult]:
    return {
        "co": co.co_optimization(small),
        "pr": co.price_response(small),
        "ma": co.market_auction(small),
    }


# --- the instance ------------------------------------------------------------------------------


def test_synthetic_grows_like_the_paper_and_keeps_its_totals() -> None:
    sizes = {}
    for g in range(1, 8):
        inst = mies.synthetic(g, 24, seed=1)
        sizes[g] = (len(inst.generators), len(inst.prosumers))
        capacity = sum(max(gen.p_max) for gen in inst.generators if gen.technology == "CCGT")
        assert capacity == pytest.approx(mies.TECHNOLOGIES["CCGT"][2])  # split, not grown
    assert sizes[1] == (16, 14)
    assert all(sizes[g] == (16 + 6 * (g - 1), 14 + 4 * (g - 1)) for g in sizes)
    assert sum(sizes[7]) == 90
    assert mies.synthetic(1, 168).hours == 168
    with pytest.raises(ValueError, match="granularity 0"):
        mies.synthetic(0, 24)


def test_flexible_demand_window_is_flex_plus_n() -> None:
    f = mies.FlexibleDemand(
        name="f", carrier="electricity", profile=[0, 0, 2, 0, 1], shift_h=2, max_power=None
    )
    low, high = f.window()
    # served by the end of hour t: at least what the profile has asked by t, at most what it
    # asks by t + 2 (never more than the total)
    assert low.tolist() == [0, 0, 2, 2, 3]
    assert high.tolist() == [2, 2, 3, 3, 3]


def test_instance_refuses_a_series_of_the_wrong_length(small: mies.Instance) -> None:
    data = small.model_dump()
    data["passive_demand"] = data["passive_demand"][:-1]
    with pytest.raises(ValueError, match="passive_demand has 7 values, need 8"):
        mies.Instance.model_validate(data)
    data = small.model_dump()
    data["prosumers"][0]["converters"][0]["carrier"] = "hydrogen"
    with pytest.raises(ValueError, match="no price for carrier 'hydrogen'"):
        mies.Instance.model_validate(data)


# --- the three methods ---------------------------------------------------------------------


def test_co_optimization_prices_are_the_marginal_costs(
    small: mies.Instance, results: dict[str, mies.CoordinationResult]
) -> None:
    r = results["co"]
    assert r.status == "optimal"
    inside = 0
    for g in small.generators:
        p = r.dispatch.generators[g.name]
        free = (p > np.asarray(g.p_min) + 0.5) & (p < np.asarray(g.p_max) - 0.5)
        inside += int(free.sum())
        # a unit strictly between its limits runs where its marginal cost is the price
        assert np.allclose((g.b + 2 * g.a * p)[free], r.prices[free], atol=0.01)
    assert inside > 0


def test_cost_is_the_objective_on_the_dispatch(
    small: mies.Instance, results: dict[str, mies.CoordinationResult]
) -> None:
    for r in results.values():
        d = r.dispatch
        generation = sum(
            float(np.sum(g.a * d.generators[g.name] ** 2 + g.b * d.generators[g.name]))
            for g in small.generators
        )
        methane = np.asarray(small.carrier_prices["methane"])
        fuel = sum(
            float(methane @ d.prosumers[p.name].converter_input[c.name])
            for p in small.prosumers
            for c in p.converters
            if c.carrier == "methane"
        )
        assert r.cost == pytest.approx(generation + fuel, rel=1e-12)


def test_co_optimization_and_price_response_agree(
    results: dict[str, mies.CoordinationResult],
) -> None:
    co_r, pr = results["co"], results["pr"]
    assert pr.status == "converged"
    assert pr.primal_residual <= 0.1 and pr.dual_residual is not None and pr.dual_residual <= 0.1
    assert abs(pr.cost / co_r.cost - 1) <= 5e-4  # the acceptance: within 0.05 %
    diff = np.abs(pr.prices - co_r.prices)
    print(
        f"price-response vs co-optimization: cost {100 * (pr.cost / co_r.cost - 1):+.4f} %, "
        f"prices mean |Δ| {diff.mean():.3f} €/MWh, max {diff.max():.3f} (of "
        f"{co_r.prices.mean():.1f} on average), {pr.iterations} iterations"
    )
    assert diff.max() <= 0.01 * co_r.prices.mean()  # within 1 % of the price level


def test_market_auction_costs_at_least_the_optimum(
    results: dict[str, mies.CoordinationResult],
) -> None:
    co_r, ma = results["co"], results["ma"]
    gap = ma.cost / co_r.cost - 1
    print(f"market auction: cost gap {100 * gap:+.2f} % to co-optimization")
    assert ma.status == "cleared" and ma.iterations == 1
    assert ma.details["shortfall"] == 0
    assert gap >= -1e-6  # the optimum is a lower bound (up to the QP's tolerance)


@pytest.mark.parametrize("key", ["co", "pr", "ma"])
def test_every_dispatch_keeps_the_balance_and_every_agents_constraints(
    key: str, small: mies.Instance, results: dict[str, mies.CoordinationResult]
) -> None:
    r = results[key]
    balance = 0.1 if key == "pr" else MW_TOL  # price-response: up to its primal tolerance
    assert mies.violations(small, r.dispatch, MW_TOL, balance) == []
    assert np.abs(r.dispatch.imbalance(small)).max() <= balance
    assert math.isclose(r.primal_residual, float(np.linalg.norm(r.dispatch.imbalance(small))))
    for p in small.prosumers:
        d = r.dispatch.prosumers[p.name]
        for f in p.flexible:  # shifted, never curtailed
            assert d.flexible[f.name].sum() == pytest.approx(sum(f.profile), abs=MW_TOL)
        for spec, s in ((p.battery, d.battery), (p.heat_store, d.heat_store)):
            if spec is not None and s is not None:
                assert s.energy[-1] >= spec.energy_start - MW_TOL


def test_violations_names_what_is_broken(
    small: mies.Instance, results: dict[str, mies.CoordinationResult]
) -> None:
    d = results["co"].dispatch
    gen = small.generators[0]
    broken = mies.Dispatch(
        generators={**d.generators, gen.name: d.generators[gen.name] + 5.0},
        prosumers=d.prosumers,
    )
    found = mies.violations(small, broken, MW_TOL, MW_TOL)
    assert any(v.startswith("balance: off by 5") for v in found)
    who = next(p for p in small.prosumers if p.battery is not None)
    mine = d.prosumers[who.name]
    assert mine.battery is not None
    drained = mies.StorageDispatch(
        mine.battery.charge, mine.battery.discharge + 1.0, mine.battery.energy
    )
    broken = mies.Dispatch(
        generators=d.generators,
        prosumers={**d.prosumers, who.name: replace(mine, battery=drained)},
    )
    found = mies.violations(small, broken, MW_TOL, 10.0)
    assert f"{who.name} battery energy balance: off by" in found[0]


def test_price_response_reports_the_cap_honestly(small: mies.Instance) -> None:
    r = co.price_response(small, max_iterations=2)
    assert r.status == "not-converged"
    assert r.iterations == 2
    assert r.messages == 2 * small.agents * 2
    assert r.primal_residual > 0.1  # the reason it is not converged, and it is the dispatch's
    assert r.primal_residual == pytest.approx(np.linalg.norm(r.dispatch.imbalance(small)))
    assert len(r.details["trace"]) == 2 and r.details["trace"][-1][0] == r.primal_residual


def test_messages_per_method(
    small: mies.Instance, results: dict[str, mies.CoordinationResult]
) -> None:
    n, hours = small.agents, small.hours
    assert results["co"].messages == 2 * n  # models in, schedules out
    assert results["pr"].messages == 2 * n * results["pr"].iterations
    assert results["ma"].messages == 2 * n * hours  # a bid and a result per agent and hour


def test_market_auction_variants_stay_above_the_optimum(
    small: mies.Instance, results: dict[str, mies.CoordinationResult]
) -> None:
    perfect = co.market_auction(small, forecast="perfect")
    finer = co.market_auction(small, extra_candidates=[float(p) for p in range(0, 100, 5)])
    for r in (perfect, finer):
        assert r.cost >= results["co"].cost * (1 - 1e-6)
        assert mies.violations(small, r.dispatch, MW_TOL, MW_TOL) == []
    # more candidate prices make more (or as many) blocks
    assert finer.details["bid_blocks"] >= results["ma"].details["bid_blocks"]
    with pytest.raises(ValueError, match="forecast has 3 prices, need 8"):
        co.market_auction(small, forecast=[1.0, 2.0, 3.0])


def test_registry_runs_each_method_by_name(
    small: mies.Instance, results: dict[str, mies.CoordinationResult]
) -> None:
    assert {"co-optimization", "price-response", "market-auction"} <= set(coordination_methods())
    again = co.run("co-optimization", small)
    assert again.cost == pytest.approx(results["co"].cost, rel=1e-9)
    capped = coordination_method("price-response").run(small, max_iterations=1)
    assert capped.status == "not-converged"
    with pytest.raises(KeyError, match="choose one of"):
        coordination_method("auction")


# --- a neighbourhood of our own homes ----------------------------------------------------------

START = datetime(2026, 1, 15, tzinfo=UTC)


def home(n: int) -> PlanInputs:
    """A home as the planner sees it (15-minute PTUs): base load, PV, a battery, a heat pump
    and a washing machine that may run between 09:00 and 18:00."""
    ptus = 96
    hour = [t / 4 for t in range(ptus)]
    pv = [max(0.0, 3000 * math.sin(math.pi * (h - 7) / 10)) for h in hour]
    devices: list[dict[str, Any]] = [
        {"kind": "pv", "id": "pv", "forecast_w": pv},
        {
            "kind": "battery", "id": "battery", "capacity_wh": 10000, "soc_start_pct": 50,
            "max_charge_w": 3000, "max_discharge_w": 3000,
        },
        {
            "kind": "heat_pump", "id": "hp", "rated_power_w": 2500, "min_power_w": 800,
            "resistance_k_per_kw": 5.0 + n, "capacitance_kwh_per_k": 6.0,
            "outdoor_temp_c": [4 + 4 * math.sin((h - 9) / 24 * 2 * math.pi) for h in hour],
            "room_temp_c": 20.5, "t_min_c": [20.0 if 6 <= h < 23 else 17.0 for h in hour],
            "t_max_c": [23.0] * ptus,
        },
        {
            "kind": "appliance", "id": "washer", "profile_w": [2000.0] * 4 + [300.0] * 4,
            "earliest_start": START + timedelta(hours=9),
            "latest_finish": START + timedelta(hours=18),
        },
    ]  # fmt: skip
    return PlanInputs.model_validate(
        {
            "start": START,
            "ptus": ptus,
            "import_price": [0.25] * ptus,
            "export_price": [0.05] * ptus,
            "base_load_w": [300 + 400 * math.exp(-((h - 19) ** 2) / 6) + 20 * n for h in hour],
            "devices": devices,
        }
    )


def test_a_home_becomes_a_prosumer_in_kw() -> None:
    p = mies.home_prosumer("home-1", home(0), 24)
    assert p.battery is not None
    assert (p.battery.energy_max, p.battery.energy_start) == (10.0, 5.0)
    assert p.battery.charge_power == 3.0
    washer = next(f for f in p.flexible if f.name == "washer")
    assert sum(washer.profile) == pytest.approx((4 * 2000 + 4 * 300) / 4 / 1000)  # kWh
    assert washer.max_power == 2.0
    # the cycle's latest place ends at 18:00 and it may start from 09:00
    assert max(np.flatnonzero(washer.profile)) == 17
    assert washer.shift_h == 17 - 9 + 1 - math.ceil(sum(washer.profile) / 2.0)
    assert [c.kind for c in p.converters] == ["heat_pump"]
    assert p.heat_demand is not None and min(p.heat_demand) > 0
    # PV lowers the base load at noon below zero (export)
    assert p.electric_demand[12] < 0 < p.electric_demand[20]


def test_neighbourhood_methods_agree_with_the_optimum() -> None:
    inst = mies.neighbourhood([home(n) for n in range(3)], hours=24)
    assert inst.unit == "kW" and len(inst.generators) == 1
    best = co.co_optimization(inst)
    pr = co.price_response(inst)
    ma = co.market_auction(inst)
    assert mies.violations(inst, best.dispatch, 1e-4, 1e-4) == []
    assert pr.status == "converged"
    assert abs(pr.cost / best.cost - 1) <= 5e-4
    assert mies.violations(inst, pr.dispatch, 1e-4, 0.01) == []
    assert ma.cost >= best.cost * (1 - 1e-6)
    print(
        f"neighbourhood of 3 homes: co-optimization {best.cost:.3f} €, price-response "
        f"{100 * (pr.cost / best.cost - 1):+.4f} % ({pr.iterations} iterations), market auction "
        f"{100 * (ma.cost / best.cost - 1):+.2f} % (shortfall {ma.details['shortfall']:.2f} kWh)"
    )
