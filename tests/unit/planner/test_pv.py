"""PV builder: curtailed exactly down to the home's own use when exporting costs money, never
otherwise, and never at all when the inverter takes no limit."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from homeflex.edge.planner.devices.pv import PvSpec
from homeflex.edge.planner.inputs import PlanInputs
from homeflex.edge.planner.planner import Plan, solve

DAY = datetime(2026, 6, 1, 12, tzinfo=UTC)
FORECAST = [3000.0, 3000.0, 3000.0, 300.0, 3000.0, 3000.0, 3000.0, 300.0]
EXPORT = [0.05, 0.05, 0.05, 0.05, -0.10, -0.10, -0.10, -0.10]  # negative from 13:00
BASE_W = 500.0


def plan(curtailable: bool) -> Plan:
    return solve(
        PlanInputs.model_validate(
            {
                "start": DAY,
                "ptus": 8,
                "import_price": [0.30] * 8,
                "export_price": EXPORT,
                "base_load_w": [BASE_W] * 8,
                "devices": [
                    {"kind": "pv", "id": "roof", "forecast_w": FORECAST, "curtailable": curtailable}
                ],
            }
        )
    )


def test_curtailed_only_where_export_costs_and_only_the_surplus() -> None:
    p = plan(curtailable=True)
    pv = p.device("roof")
    # 13:00-14:00: the 2500 W surplus would cost 0.10 €/kWh to export; the 300 W PTU has none
    assert pv.series["curtailed_w"] == pytest.approx([0, 0, 0, 0, 2500, 2500, 2500, 0], abs=1e-6)
    assert pv.power_w == pytest.approx([-3000, -3000, -3000, -300, -500, -500, -500, -300])
    assert p.export_w == pytest.approx([2500, 2500, 2500, 0, 0, 0, 0, 0], abs=1e-6)
    assert p.import_w == pytest.approx([0, 0, 0, 200, 0, 0, 0, 200], abs=1e-6)
    # 3 × 625 Wh exported at 0.05, 2 × 50 Wh imported at 0.30
    assert p.energy_cost_eur == pytest.approx(-0.05 * 1.875 + 0.30 * 0.1, abs=1e-9)


def test_not_curtailable_exports_everything_and_pays_for_it() -> None:
    p = plan(curtailable=False)
    pv = p.device("roof")
    assert pv.series["curtailed_w"] == [0.0] * 8
    assert pv.power_w == [-f for f in FORECAST]
    assert p.export_w == pytest.approx([2500, 2500, 2500, 0, 2500, 2500, 2500, 0], abs=1e-6)
    assert p.energy_cost_eur == pytest.approx(-0.05 * 1.875 + 0.10 * 1.875 + 0.30 * 0.1)


def test_a_forecast_of_the_wrong_length_or_sign_is_refused_with_where() -> None:
    with pytest.raises(ValueError, match="roof: forecast_w has 3 values, the plan 8 PTUs"):
        solve(
            PlanInputs.model_validate(
                {
                    "start": DAY,
                    "ptus": 8,
                    "import_price": [0.30] * 8,
                    "export_price": [0.05] * 8,
                    "base_load_w": [0.0] * 8,
                    "devices": [{"kind": "pv", "id": "roof", "forecast_w": [1.0, 2.0, 3.0]}],
                }
            )
        )
    with pytest.raises(ValidationError, match=r"roof: forecast_w\[1\] = -5.0 W is negative"):
        PvSpec(id="roof", forecast_w=[0.0, -5.0])


def test_a_forecast_of_nanowatts_is_nothing_and_still_plans() -> None:
    """Found by hypothesis: a curtailable PV bound of 1.75e-9 W made SCIP's presolve declare
    the model infeasible; such a forecast is rounding noise and is planned as zero."""
    ptus = 28
    export = [round(t * 1.7e-05, 6) for t in range(ptus)]
    export[23] = -0.062109  # exporting would cost money: curtailment matters
    forecast = [0.0] * 5 + [1.7508844161453387e-09 * k for k in range(1, 20)] + [0.0] * 4
    inputs = PlanInputs(
        start=datetime(2026, 6, 1, 8, tzinfo=UTC),
        ptus=ptus,
        import_price=[round(t * 1.7e-05, 6) for t in range(ptus)],
        export_price=export,
        base_load_w=[50.0] * ptus,
        devices=[PvSpec(id="pv", forecast_w=forecast)],
        relative_gap=0.0,
        absolute_gap_eur=0.0,
    )
    plan = solve(inputs)
    assert plan.status == "optimal"
    assert plan.net_w == pytest.approx([50.0] * ptus, abs=1e-6)
