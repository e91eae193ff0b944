"""The plan as the owner reads it, from real solves: each run's reason is the one its inputs
give (the sun, a cheaper price, the neighbourhood), the cost is set against the baseline, and the
chart is well-formed SVG with a title per bar."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from homeflex.edge.planner.baseline import baseline
from homeflex.edge.planner.inputs import PlanInputs
from homeflex.edge.planner.planner import solve
from homeflex.edge.web.plan_view import gantt_svg, view

START = datetime(2026, 6, 1, 0, 0, tzinfo=UTC)
NOON = range(44, 56)  # 11:00-14:00


def inputs(**extra: Any) -> PlanInputs:
    return PlanInputs.model_validate(
        {
            "start": START,
            "ptus": 96,
            "import_price": [0.30] * 96,
            "export_price": [0.05] * 96,
            "base_load_w": [300.0] * 96,
            "devices": [
                {
                    "kind": "pv",
                    "id": "pv",
                    "forecast_w": [3000.0 if t in NOON else 0.0 for t in range(96)],
                },
                {
                    "kind": "appliance",
                    "id": "washer",
                    "profile_w": [2000, 2000],
                    "earliest_start": START,
                    "latest_finish": START + timedelta(hours=20),
                },
            ],
            **extra,
        }
    )


def test_a_load_moved_into_the_sun_says_so_with_the_surplus() -> None:
    i = inputs()
    plan = solve(i)
    v = view(plan, i)
    (washer,) = [r for r in v.runs if r.device == "washer"]
    assert washer.first in NOON and washer.end - washer.first == 2
    assert washer.reason == "the sun: the panels should give 2.7 kW more than the house uses"
    (pv,) = [r for r in v.runs if r.device == "pv"]
    assert (pv.first, pv.end, pv.reason) == (44, 56, "the sun: production as forecast")
    assert pv.energy_kwh == pytest.approx(-9.0)
    assert v.cost_eur == pytest.approx(plan.energy_cost_eur)
    assert v.baseline_eur == pytest.approx(baseline(i).energy_cost_eur)
    assert v.saving_eur > 0  # the baseline runs the washer at once, at night, from the grid


def test_a_cheaper_hour_and_a_neighbourhood_request_are_named() -> None:
    prices = [0.30] * 96
    prices[80:82] = [0.10, 0.10]  # 20:00-20:30, cheap, but after the washer's window
    prices[8:10] = [0.20, 0.20]  # 02:00-02:30, a little cheaper, inside it
    no_sun = [{"kind": "appliance", "id": "washer", "profile_w": [2000, 2000],
               "earliest_start": START, "latest_finish": START + timedelta(hours=20)}]  # fmt: skip
    i = inputs(import_price=prices, devices=no_sun)
    (washer,) = view(solve(i), i).runs
    assert (washer.first, washer.end) == (8, 10)
    average = sum(prices[:80]) / 80  # over its window, 00:00-20:00
    assert washer.reason == (
        f"cheaper power: 0.20 €/kWh against {average:.2f} on average over the hours it could run"
    )
    # the neighbourhood asks the home to take power 05:00-05:30: the washer goes there
    ask = {"id": "soak", "start": START + timedelta(hours=5),
           "end": START + timedelta(hours=5, minutes=30), "min_net_w": 2000}  # fmt: skip
    i = inputs(import_price=prices, devices=no_sun, requests=[ask])
    v = view(solve(i), i)
    (washer,) = v.runs
    assert (washer.first, washer.reason) == (
        20,
        "the neighbourhood: request soak asks the home to take power then",
    )
    svg = ET.fromstring(gantt_svg(v, utc_offset_h=2))
    ns = "{http://www.w3.org/2000/svg}"
    bars = svg.findall(f"{ns}rect")
    assert len(bars) == 1
    assert bars[0].findtext(f"{ns}title") == (
        "washer Mon 07:00–07:30: 2.0 kW drawn; "
        "the neighbourhood: request soak asks the home to take power then"
    )
