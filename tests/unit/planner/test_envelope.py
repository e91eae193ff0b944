"""The up/down envelope: the extremes of net power per PTU and what each costs, worked out by
hand for a lossless battery; preferences are held (an appliance's window, a request)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from homeflex.edge.planner.flexibility import envelope
from homeflex.edge.planner.inputs import PlanInputs, Request

DAY = datetime(2026, 6, 1, tzinfo=UTC)
N = 8
PRICE = 0.20


def at(t: float) -> datetime:
    return DAY + timedelta(minutes=15 * t)


def inputs(devices: list[dict[str, Any]], **extra: Any) -> PlanInputs:
    """1 kW of house load over N PTUs at a flat 0.20 €/kWh; exports earn nothing."""
    return PlanInputs.model_validate(
        {
            "start": DAY,
            "ptus": N,
            "import_price": [PRICE] * N,
            "export_price": [0.0] * N,
            "base_load_w": [1000.0] * N,
            "devices": devices,
            "relative_gap": 0.0,
            "absolute_gap_eur": 0.0,
            **extra,
        }
    )


BATTERY = {  # lossless, 4 kW, 1 kWh stored of 4 kWh
    "kind": "battery",
    "id": "bat",
    "capacity_wh": 4000,
    "soc_start_pct": 25,
    "soc_min_pct": 0,
    "max_charge_w": 4000,
    "max_discharge_w": 4000,
    "charge_efficiency": 1.0,
    "discharge_efficiency": 1.0,
}


def test_battery_extremes_and_their_costs() -> None:
    plan, (first,) = envelope(inputs([BATTERY]), ptus=[0])
    assert plan.energy_cost_eur == pytest.approx(0.20)  # 2 kWh of load, 1 kWh from the battery
    # up: 1 kW of house plus 4 kW of charging. 2 kWh stored then, of which the 7 PTUs left can
    # use 1.75: 0.25 kWh bought for nothing
    assert first.max_w == pytest.approx(5000.0)
    assert first.cost_up_eur == pytest.approx(0.25 * PRICE)
    # down: the whole 1 kWh discharged at once (4 kW), 0.75 kWh of it exported for nothing and
    # bought back later
    assert first.min_w == pytest.approx(-3000.0)
    assert first.cost_down_eur == pytest.approx(0.75 * PRICE)
    assert first.min_w <= first.planned_w <= first.max_w


def test_appliance_window_is_held() -> None:
    washer = {  # one PTU of 2 kW, to run somewhere in PTUs 2-5
        "kind": "appliance",
        "id": "washer",
        "profile_w": [2000.0],
        "earliest_start": at(2),
        "latest_finish": at(6),
    }
    _, points = envelope(inputs([washer]), ptus=[0, 3])
    outside, inside = points
    assert (outside.min_w, outside.max_w) == pytest.approx((1000.0, 1000.0))
    assert (inside.min_w, inside.max_w) == pytest.approx((1000.0, 3000.0))
    assert inside.cost_up_eur == pytest.approx(0.0)  # flat prices: moving it costs nothing


def test_a_request_the_plan_meets_is_not_given_up() -> None:
    cap = Request(id="cap", start=at(0), end=at(1), max_net_w=2000.0)
    _, (first,) = envelope(inputs([BATTERY], requests=[cap]), ptus=[0])
    assert first.max_w == pytest.approx(2000.0)
    assert first.min_w == pytest.approx(-3000.0)
