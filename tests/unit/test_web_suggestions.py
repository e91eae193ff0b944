"""Suggestions from the home's own data: each figure in the text is computed from what the
home recorded or planned, and none is made without the data for it."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from homeflex.edge.home import Home
from homeflex.edge.planner.planner import solve
from homeflex.edge.preferences import Preferences, apply
from homeflex.edge.web.history import Bucket
from homeflex.edge.web.plan_view import view
from homeflex.edge.web.suggestions import car_window, sold_cheap, standby, suggest
from tests.unit.test_home import NOW, T0, config, snapshot


def day(n: int, imported: float, exported: float) -> Bucket:
    return Bucket("day", date(2026, 5, n), f"2026-05-{n:02d}", imported, exported, 0.0,
                  imported - exported, 0.0, False, 96)  # fmt: skip


def test_a_standby_load_at_night_is_priced_per_100_w(tmp_path: Path) -> None:
    home = Home(config(tmp_path))  # UTC+2: local 01:00-05:00 is 23:00-03:00 UTC
    assert standby(home, 0.30) is None  # no history yet
    for night in range(4):  # local nights 28-31 May: 200, 250, 300, 350 W; 1 kW by day
        for ptu in range(96):
            ts = T0 - (night + 1) * 86400 - 7200 + ptu * 900  # local midnight + ptu
            home.history.base_load_w[ts] = 200.0 + 50 * night if 4 <= ptu < 20 else 1000.0
    s = standby(home, 0.30)
    assert s is not None
    assert "about 275 W (the median over 4 nights" in s.detail
    assert "Each 100 W less saves about 263 € a year at 0.30 €/kWh" in s.detail
    assert s.saving_eur == pytest.approx(0.1 * 8760 * 0.30 * (275 - 100) / 100)


def test_energy_sold_cheap_and_bought_dear_is_priced_at_the_gap() -> None:
    assert sold_cheap([day(1, 10, 0.5)], 0.30, 0.05, []) is None  # sells too little
    days = [day(n, 10.0, 3.0) for n in range(1, 29)]
    s = sold_cheap(days, 0.30, 0.05, ["washer", "dishwasher"])
    assert s is not None
    assert "Later finish-by times for washer, dishwasher let the planner run them" in s.detail
    bare = sold_cheap(days, 0.30, 0.05, [])  # a home without planned appliances
    assert bare is not None and "finish-by" not in bare.detail
    assert "In the last 28 days your home sold 84.0 kWh and bought 280.0 kWh" in s.detail
    assert s.saving_eur == pytest.approx(84.0 * 0.25 * 365 / 28)
    assert sold_cheap(days, 0.05, 0.05, []) is None  # no gap, nothing to gain


def test_the_car_charging_before_a_cheap_night_is_told_its_saving(tmp_path: Path) -> None:
    home = Home(config(tmp_path))  # no price file: the flat tariff everywhere
    inputs = home.make_inputs(NOW, snapshot(ev__ev_connected=1, ev__import_wh=0))
    plan = view(solve(inputs), inputs)
    assert car_window(home, plan) is None  # flat prices: nothing to gain by waiting
    assert suggest(home, [], plan, NOW) == []

    # ready by 12:00 local (10:00 UTC), and power cheap from then on
    (tmp_path / "prices.yaml").write_text(
        "start: 2026-06-01T00:00:00Z\nseries_step_s: 3600\n"
        f"import_price: {[0.40] * 10 + [0.10] * 38}\nexport_price: {[0.05] * 48}\n"
    )
    prefs = Preferences(devices={"ev": {"ready_by": "12:00", "energy_needed_wh": 10_000}})
    home = Home(apply(config(tmp_path), prefs))
    assert home.prices.reload(), home.prices.error
    inputs = home.make_inputs(NOW, snapshot(ev__ev_connected=1, ev__import_wh=0))
    plan = view(solve(inputs), inputs)
    s = car_window(home, plan)
    assert s is not None
    kwh = sum(r.energy_kwh for r in plan.runs if r.device == "ev")
    assert kwh == pytest.approx(10 / 0.9, rel=0.01)
    assert s.detail == (
        f"The car charges {kwh:.1f} kWh at 0.40 €/kWh on average to be ready by 12:00. After "
        f"that time the same hours of charging would cost 0.10 €/kWh: {0.3 * kwh:.2f} € less "
        "on this charge, if the car can wait."
    )
    assert (s.saving_eur, s.per) == (pytest.approx(0.3 * kwh), "on this charge")
