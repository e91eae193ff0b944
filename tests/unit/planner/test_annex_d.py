"""Seed 004 Annex D: a washing machine the user would start at 15:00, allowed 11:00-17:00, moves
into the sunny hours; a reduction request is met, or refused with the reason."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from homeflex.edge.planner.devices.appliance import ApplianceSpec
from homeflex.edge.planner.inputs import PlanInputs, Request
from homeflex.edge.planner.planner import solve

DAY = datetime(2026, 6, 1, tzinfo=UTC)
WASHER = [2000.0, 2000.0, 300.0, 300.0, 300.0, 300.0, 800.0, 100.0]  # 2 h cycle, heating first


def at(hour: float) -> datetime:
    return DAY + timedelta(hours=hour)


def pv_w(t: int) -> float:
    """2.5 kWp on a clear day, peak at 12:00: around noon the surplus carries the washer's 2 kW
    heating, at 15:00 it no longer does."""
    hour = t / 4 + 0.125
    return max(0.0, 2500 * math.cos((hour - 12) / 7 * math.pi / 2)) if 5 < hour < 19 else 0.0


def inputs(**extra: object) -> PlanInputs:
    return PlanInputs.model_validate(
        {
            "start": DAY,
            "import_price": [0.30] * 96,
            "export_price": [0.05] * 96,  # the seed's feed-in tariff
            "base_load_w": [300.0 - pv_w(t) for t in range(96)],
            "devices": [
                ApplianceSpec(
                    id="washer",
                    profile_w=WASHER,
                    earliest_start=at(11),
                    latest_finish=at(17),
                    preferred_start=at(15),
                )
            ],
            **extra,
        }
    )


def test_washer_moves_into_the_sunny_hours() -> None:
    plan = solve(inputs())
    start = int(plan.device("washer").series["start_ptu"][0])
    # its 2 kW heating (the first 30 minutes) lands where the surplus covers it: 11:00-14:00
    assert 44 <= start <= 54, start
    assert plan.status == "optimal"
    # cheaper than the user's own 15:00 start, by exactly the self-consumed energy
    fixed = inputs(
        devices=[
            ApplianceSpec(
                id="washer", profile_w=WASHER, earliest_start=at(15), latest_finish=at(17)
            )
        ]
    )
    assert solve(fixed).energy_cost_eur > plan.energy_cost_eur + 0.05


def test_a_reduction_request_is_met() -> None:
    # the neighbourhood asks: no more than 100 W import 11:00-13:00
    req = Request(id="r1", start=at(11), end=at(13), max_net_w=100)
    plan = solve(inputs(requests=[req]))
    assert plan.requests[0].met
    assert all(plan.net_w[t] <= 100 + 1e-6 for t in range(44, 52))


def test_an_impossible_request_is_refused_with_the_reason() -> None:
    # 04:00-05:00 there is no sun and nothing to shift: the 300 W base load stays
    req = Request(id="r2", start=at(4), end=at(5), max_net_w=0)
    plan = solve(inputs(requests=[req]))
    outcome = plan.requests[0]
    assert not outcome.met
    assert "cannot be met" in outcome.reason and "04:00 UTC" in outcome.reason
