"""EV builder: the need met in the cheapest PTUs of the window within the charger's current limits,
a shortfall noted when the window is too short, only what cannot wait beyond the horizon planned
now, and V2G down to its floor."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from homeflex.edge.planner.devices.ev import EvSpec
from homeflex.edge.planner.inputs import PlanInputs
from homeflex.edge.planner.planner import Plan, solve

NOON = datetime(2026, 6, 1, 12, tzinfo=UTC)
MIN_W, MAX_W = 6 * 230 * 3, 16 * 230 * 3  # 4140 W and 11040 W on three phases
ETA = 0.9


def at(hours: float) -> datetime:
    return NOON + timedelta(hours=hours)


def ev(**changes: Any) -> dict[str, Any]:
    spec = {
        "kind": "ev",
        "id": "car",
        "arrive": at(6),  # 18:00, PTU 24
        "depart": at(19),  # 07:00, PTU 76
        "energy_needed_wh": 20_000,
        "efficiency": ETA,
    }
    return spec | changes


def plan(prices: list[float], base_w: float = 0.0, **changes: Any) -> Plan:
    n = len(prices)
    return solve(
        PlanInputs.model_validate(
            {
                "start": NOON,
                "ptus": n,
                "import_price": prices,
                "export_price": [0.0] * n,
                "base_load_w": [base_w] * n,
                "devices": [ev(**changes)],
            }
        )
    )


def check_charger(p: Plan, first: int, last: int) -> None:
    """Power only inside [first, last) and there 0 or between the minimum and maximum."""
    power = p.device("car").power_w
    for t, w in enumerate(power):
        if not first <= t < last:
            assert w == pytest.approx(0, abs=1e-6), t
        assert abs(w) <= 1e-6 or MIN_W - 1e-6 <= abs(w) <= MAX_W + 1e-6, (t, w)


def test_the_need_is_met_in_the_cheapest_ptus_of_the_window() -> None:
    prices = [0.30] * 96
    prices[40:48] = [0.10] * 8  # 22:00-24:00
    prices[56:60] = [0.05] * 4  # 02:00-03:00
    prices[80:84] = [0.01] * 4  # 08:00-09:00: cheapest, but the car has left
    prices[20:24] = [0.01] * 4  # 17:00-18:00: cheapest, but the car is not there yet
    p = plan(prices)
    check_charger(p, 24, 76)
    power = p.device("car").power_w
    ac_wh = 20_000 / ETA
    # the four 0.05 PTUs at full power, the rest in the 0.10 PTUs, nothing at 0.30
    assert power[56:60] == pytest.approx([MAX_W] * 4, abs=1e-6)
    at_ten = 0.25 * sum(power[40:48])
    assert at_ten == pytest.approx(ac_wh - 4 * 0.25 * MAX_W, abs=1e-3)
    assert sum(w for t, w in enumerate(power) if prices[t] == 0.30) == pytest.approx(0, abs=1e-6)
    assert p.device("car").series["energy_wh"][-1] == pytest.approx(20_000, abs=1e-3)
    assert p.energy_cost_eur == pytest.approx((0.05 * 4 * 0.25 * MAX_W + 0.10 * at_ten) / 1000)
    assert p.device("car").notes == []


def test_the_need_follows_from_state_of_charge() -> None:
    p = plan(
        [0.30] * 96,
        energy_needed_wh=None,
        capacity_wh=60_000,
        soc_arrival_pct=30,
        soc_target_pct=80,
        phases=1,
        max_current_a=32,
    )
    # 50 % of 60 kWh; one phase, 6-32 A: 1380-7360 W
    energy = p.device("car").series["energy_wh"]
    assert energy[-1] == pytest.approx(30_000, abs=1e-3)
    assert max(p.device("car").power_w) <= 32 * 230 + 1e-6
    assert all(w < 1e-6 or w >= 6 * 230 - 1e-6 for w in p.device("car").power_w)


def test_a_need_the_window_cannot_hold_is_delivered_as_far_as_possible_and_noted() -> None:
    # plugged in 2 h: at most 8 × 0.25 h × 11040 W × 0.9 = 19872 Wh of the 25000 Wh
    p = plan([0.30] * 96, arrive=at(6), depart=at(8), energy_needed_wh=25_000)
    check_charger(p, 24, 32)
    assert p.device("car").power_w[24:32] == pytest.approx([MAX_W] * 8, abs=1e-6)
    assert p.device("car").series["energy_wh"][-1] == pytest.approx(19_872, abs=1e-3)
    assert p.device("car").notes == [
        "car: 5128 Wh short of the 25000 Wh needed by 20:00 UTC: the plug-in window, the "
        "charger's current or the connection cannot deliver more"
    ]


def test_a_car_arriving_mid_ptu_waits_for_the_next_and_stops_before_leaving() -> None:
    p = plan([0.30] * 96, arrive=at(6.1), depart=at(7.9), energy_needed_wh=50_000)
    check_charger(p, 25, 31)  # 18:15 to 19:45
    assert p.device("car").power_w[25:31] == pytest.approx([MAX_W] * 6, abs=1e-6)


def test_a_need_below_one_ptu_at_minimum_current_is_met_by_one_ptu_at_minimum() -> None:
    # the charger cannot run below 4140 W: 0.25 h of it puts 931.5 Wh in the car; no shortfall
    p = plan([0.30] * 96, energy_needed_wh=500)
    power = p.device("car").power_w
    assert sorted(power)[-2:] == pytest.approx([0, MIN_W], abs=1e-6)
    assert p.device("car").series["energy_wh"][-1] == pytest.approx(0.25 * MIN_W * ETA)
    assert p.device("car").notes == []


def test_only_what_cannot_wait_for_after_the_horizon_is_planned_now() -> None:
    # plan 12:00-24:00; the car leaves at 02:00, 8 PTUs after the horizon, in which up to
    # 8 × 2484 Wh can still be charged: of 30000 Wh, 10128 Wh are due within this plan
    prices = [0.30] * 48
    p = plan(prices, arrive=at(6), depart=at(14), energy_needed_wh=30_000)
    check_charger(p, 24, 48)
    assert p.device("car").series["energy_wh"][-1] == pytest.approx(30_000 - 19_872, abs=1e-3)


def v2g_plan(load_w: list[float], **changes: Any) -> Plan:
    """6 h plugged in, a 50 kWh car with a 40 % floor; 1 h peak at 0.50 then 0.05 €/kWh."""
    n = len(load_w)
    car = ev(arrive=NOON, depart=at(6), capacity_wh=50_000, v2g=True, v2g_floor_pct=40)
    return solve(
        PlanInputs.model_validate(
            {
                "start": NOON,
                "ptus": n,
                "import_price": [0.50] * 4 + [0.05] * (n - 4),
                "export_price": [0.0] * n,
                "base_load_w": load_w,
                "devices": [car | changes],
            }
        )
    )


def test_v2g_covers_the_evening_peak_and_still_meets_the_need() -> None:
    # at 60 % it wants 80 %; in the peak it gives the home's 6000 W (above the 4140 W minimum)
    # and buys it back cheaply
    p = v2g_plan(
        [6000.0] * 4 + [0.0] * 20,
        energy_needed_wh=None,
        soc_arrival_pct=60,
        soc_target_pct=80,
    )
    car = p.device("car")
    check_charger(p, 0, 24)
    assert car.power_w[:4] == pytest.approx([-6000.0] * 4, abs=1e-6)
    assert p.import_w[:4] == pytest.approx([0.0] * 4, abs=1e-6)
    given_stored = 4 * 0.25 * 6000 / ETA
    assert car.series["energy_wh"][3] == pytest.approx(-given_stored, abs=1e-3)
    assert car.series["energy_wh"][-1] == pytest.approx(10_000, abs=1e-3)
    charged_ac = 0.25 * sum(w for w in car.power_w if w > 0)
    assert charged_ac == pytest.approx((10_000 + given_stored) / ETA, abs=1e-3)
    assert p.energy_cost_eur == pytest.approx(0.05 * charged_ac / 1000, abs=1e-6)


def test_v2g_gives_nothing_when_the_home_needs_nothing() -> None:
    # exports earn 0 €/kWh: giving back would only lose energy
    p = v2g_plan([0.0] * 24, energy_needed_wh=None, soc_arrival_pct=60, soc_target_pct=80)
    assert min(p.device("car").power_w) == pytest.approx(0, abs=1e-6)


def test_v2g_stops_at_its_floor() -> None:
    # at 45 % only 2500 Wh are stored above the 40 % floor, for an 8000 W peak
    p = v2g_plan([8000.0] * 4 + [0.0] * 20, energy_needed_wh=5_000, soc_arrival_pct=45)
    energy = p.device("car").series["energy_wh"]
    assert min(energy) == pytest.approx(-2500, abs=1e-3)
    given_ac = -0.25 * sum(p.device("car").power_w[:4])
    assert given_ac == pytest.approx(2500 * ETA, abs=1e-3)
    assert energy[-1] == pytest.approx(5_000, abs=1e-3)


def test_a_spec_without_a_need_is_refused() -> None:
    with pytest.raises(ValidationError, match="car: give energy_needed_wh, or capacity_wh"):
        EvSpec.model_validate(ev(energy_needed_wh=None))
    with pytest.raises(ValidationError, match="car: V2G needs capacity_wh and soc_arrival_pct"):
        EvSpec.model_validate(ev(v2g=True))
