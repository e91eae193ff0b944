"""KPIs per day, checked by hand on two hours around midnight: a 1 kW appliance the user would
start at 23:00, moved by the planner onto the PV surplus at 23:30."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from homeflex.edge.planner.devices.appliance import ApplianceSpec
from homeflex.edge.planner.devices.pv import PvSpec
from homeflex.edge.planner.inputs import PlanInputs
from homeflex.edge.planner.kpi import report
from homeflex.edge.planner.planner import solve

START = datetime(2026, 6, 1, 23, tzinfo=UTC)
INPUTS = PlanInputs(
    start=START,
    ptus=8,
    import_price=[0.20] * 8,
    export_price=[0.05] * 8,
    base_load_w=[1000.0] * 8,
    devices=[
        # (a PV forecast at night is odd but makes the arithmetic plain)
        PvSpec(id="pv", forecast_w=[0, 0, 2000, 0, 0, 1500, 0, 0], curtailable=False),
        ApplianceSpec(
            id="washer",
            profile_w=[1000.0],
            earliest_start=START,
            latest_finish=START + timedelta(hours=2),
            preferred_start=START,
        ),
    ],
)


def test_kpis_per_day_for_the_plan_and_the_baseline() -> None:
    plan = solve(INPUTS)
    assert plan.device("washer").series["start_ptu"] == [2.0]  # all of its 1 kW from the sun
    kpis = json.loads(json.dumps(report(INPUTS, plan)))  # JSON-serialisable as it is
    day1, day2 = kpis["plan"]
    assert (day1["day"], day1["ptus"], day2["day"], day2["ptus"]) == (
        "2026-06-01",
        4,
        "2026-06-02",
        4,
    )
    # 23:00-24:00: 3 × 1 kW imported for 15 min = 0.75 kWh at 0.20; the 0.5 kWh of PV all used
    assert day1["bill_eur"] == pytest.approx(0.15)
    assert day1["pv_kwh"] == pytest.approx(0.5) and day1["self_consumption"] == pytest.approx(1)
    assert day1["peak_import_w"] == pytest.approx(1000)
    # 00:00-01:00: 0.75 kWh bought, 0.125 kWh of the 0.375 kWh PV sold at 0.05
    assert day2["bill_eur"] == pytest.approx(0.15 - 0.00625)
    assert day2["self_consumption"] == pytest.approx(2 / 3)
    assert day2["export_kwh"] == pytest.approx(0.125)
    assert day1["comfort_violation_kh"] == 0
    base1, base2 = kpis["baseline"]
    # started at 23:00 by hand: 2 kW peak, and half the 23:30 PV sold at 0.05 instead of used
    assert base1["bill_eur"] == pytest.approx(0.20 - 0.0125)
    assert base1["peak_import_w"] == pytest.approx(2000)
    assert base1["self_consumption"] == pytest.approx(0.5)
    assert base2 == day2
