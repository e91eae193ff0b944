"""Accepted FlexOrders bind every plan until they expire and come before requests; a previous
plan is kept where changing it saves less than the change penalty."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from homeflex.edge.planner.inputs import FlexOrder, PlanInputs, PreviousPlan, Request
from homeflex.edge.planner.planner import solve

DAY = datetime(2026, 6, 1, tzinfo=UTC)
N = 8
BASE_W = 1000.0


def at(t: float) -> datetime:
    return DAY + timedelta(minutes=15 * t)


def inputs(
    prices: list[float] | None = None, start: int = 0, soc_pct: float = 25, **extra: Any
) -> PlanInputs:
    """A 4 kWh battery holding 1 kWh (four PTUs of the house's 1 kW) over N PTUs from PTU
    `start`; lossless, and exports earn nothing."""
    return PlanInputs.model_validate(
        {
            "start": at(start),
            "ptus": N,
            "import_price": prices or [0.20] * N,
            "export_price": [0.0] * N,
            "base_load_w": [BASE_W] * N,
            "devices": [
                {
                    "kind": "battery",
                    "id": "bat",
                    "capacity_wh": 4000,
                    "soc_start_pct": soc_pct,
                    "soc_min_pct": 0,
                    "max_charge_w": 4000,
                    "max_discharge_w": 4000,
                    "charge_efficiency": 1.0,
                    "discharge_efficiency": 1.0,
                }
            ],
            **extra,
        }
    )


def test_an_order_binds_the_plan_until_it_expires() -> None:
    # PTUs 2-3 are the cheapest: without the order the battery charges there
    prices = [0.30, 0.30, 0.10, 0.10, 0.30, 0.30, 0.30, 0.30]
    free = solve(inputs(prices))
    assert max(free.net_w[2:4]) > BASE_W + 1000
    order = FlexOrder(id="o1", start=at(2), end=at(4), max_net_w=0.0, price_eur=1.5, expires=at(6))
    bound = solve(inputs(prices, orders=[order]))
    assert bound.net_w[2] == pytest.approx(0.0, abs=1e-6)  # the battery carries the house
    assert bound.net_w[3] == pytest.approx(0.0, abs=1e-6)
    assert [(o.id, o.kind, o.met) for o in bound.requests] == [("o1", "order", True)]
    # a plan starting at its expiry no longer sees it
    later = solve(inputs(prices, start=6, orders=[order]))
    assert later.requests == []


def test_an_order_comes_before_a_request_that_contradicts_it() -> None:
    order = FlexOrder(id="o1", start=at(1), end=at(2), min_net_w=4000.0)
    request = Request(id="r1", start=at(1), end=at(2), max_net_w=500.0)
    plan = solve(inputs(orders=[order], requests=[request]))
    assert plan.net_w[1] == pytest.approx(4000.0, abs=1e-6)  # 1 kW house + 3 kW charging
    (o, r) = plan.requests
    assert (o.id, o.met) == ("o1", True)
    assert (r.id, r.met) == ("r1", False)
    assert "misses it by up to 3500 W" in r.reason


def test_an_order_the_home_cannot_meet_is_reported_not_infeasible() -> None:
    order = FlexOrder(id="o1", start=at(0), end=at(N), max_net_w=-5000.0)
    plan = solve(inputs(orders=[order]))
    (o,) = plan.requests
    assert not o.met and o.kind == "order"
    assert "cannot be met" in o.reason


def test_ties_keep_the_previous_plan() -> None:
    # flat prices: when the battery discharges makes no difference to the bill, so every
    # schedule that empties it is optimal; the change penalty picks the one already sent
    previous = PreviousPlan(start=at(0), net_w=[BASE_W, 0.0, BASE_W, 0.0, BASE_W, BASE_W, 0, 0])
    plan = solve(inputs(previous=previous))
    assert plan.net_w == pytest.approx(previous.net_w, abs=1e-6)
    # shifted by one PTU: the overlap is kept too
    shifted = solve(inputs(start=1, previous=previous))
    assert shifted.net_w[:7] == pytest.approx(previous.net_w[1:], abs=1e-6)


def test_a_saving_above_the_penalty_changes_the_plan() -> None:
    # 0.5 kWh in the battery, planned for the first two PTUs; the last two become dearer
    previous = PreviousPlan(start=at(0), net_w=[0.0, 0.0] + [BASE_W] * 6)
    prices = [0.20] * 6 + [0.25, 0.25]
    # moving it saves 0.5 kWh × 0.05 €/kWh = 0.025 €, and moves 1 kWh of net power:
    # 0.002 €/kWh (the default) lets it move
    plan = solve(inputs(prices, soc_pct=12.5, previous=previous))
    assert plan.net_w[6:] == pytest.approx([0.0, 0.0], abs=1e-6)
    assert plan.net_w[:6] == pytest.approx([BASE_W] * 6, abs=1e-6)
    # 0.03 €/kWh costs more than it saves: the plan in force stays
    sticky = solve(inputs(prices, soc_pct=12.5, previous=previous, change_penalty_eur_per_kwh=0.03))
    assert sticky.net_w == pytest.approx(previous.net_w, abs=1e-6)
