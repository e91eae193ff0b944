"""Battery builder: arbitrage under a two-level price with exact efficiency losses, the SoC band
and reserve, no simultaneous charge and discharge, wear, the end target, a start below reserve."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from homeflex.edge.planner.devices.battery import BatterySpec
from homeflex.edge.planner.inputs import PlanInputs
from homeflex.edge.planner.planner import Plan, solve

DAY = datetime(2026, 6, 1, tzinfo=UTC)
CHEAP, DEAR = 0.10, 0.40
BASE_W = 2000.0  # 500 Wh per PTU
ETA = 0.9


def battery(**changes: Any) -> dict[str, Any]:
    spec = {
        "kind": "battery",
        "id": "bat",
        "capacity_wh": 4000,
        "soc_start_pct": 50,
        "soc_min_pct": 10,
        "soc_max_pct": 90,
        "max_charge_w": 4000,
        "max_discharge_w": 4000,
        "charge_efficiency": ETA,
        "discharge_efficiency": ETA,
    }
    return spec | changes


def plan(cheap: int, dear: int, **changes: Any) -> Plan:
    """`cheap` PTUs at 0.10 €/kWh then `dear` at 0.40; exports earn nothing, so the battery
    only pays by covering the home's own load in the dear PTUs."""
    n = cheap + dear
    return solve(
        PlanInputs.model_validate(
            {
                "start": DAY,
                "ptus": n,
                "import_price": [CHEAP] * cheap + [DEAR] * dear,
                "export_price": [0.0] * n,
                "base_load_w": [BASE_W] * n,
                "devices": [battery(**changes)],
            }
        )
    )


def check_physics(p: Plan, spec: BatterySpec) -> None:
    """Every PTU: one direction only, power limits, SoC recurrence with both efficiencies."""
    s = p.device(spec.id)
    soc = spec.soc_start_pct
    for t in range(p.ptus):
        c, d = s.series["charge_w"][t], s.series["discharge_w"][t]
        assert min(c, d) <= 1e-6, (t, c, d)
        assert -1e-6 <= c <= spec.max_charge_w + 1e-6
        assert -1e-6 <= d <= spec.max_discharge_w + 1e-6
        assert s.power_w[t] == pytest.approx(c - d, abs=1e-6)
        wh = 0.25 * (spec.charge_efficiency * c - d / spec.discharge_efficiency)
        soc += wh / spec.capacity_wh * 100
        assert s.series["soc_pct"][t] == pytest.approx(soc, abs=1e-6)


def test_arbitrage_fills_in_cheap_ptus_and_empties_to_the_reserve_in_dear_ones() -> None:
    # 1 h cheap, 2 h dear: the dear load (4000 Wh) is more than the battery can give, so it
    # charges to its 90 % maximum and discharges to its 10 % reserve
    p = plan(4, 8)
    spec = BatterySpec.model_validate(battery())
    check_physics(p, spec)
    s = p.device("bat")
    assert s.series["soc_pct"][3] == pytest.approx(90, abs=1e-6)
    assert s.series["soc_pct"][-1] == pytest.approx(10, abs=1e-6)
    assert min(s.series["soc_pct"]) >= 10 - 1e-6 and max(s.series["soc_pct"]) <= 90 + 1e-6
    charged_ac = 0.25 * sum(s.series["charge_w"])
    given_ac = 0.25 * sum(s.series["discharge_w"])
    # 2000 → 3600 Wh stored costs 1600 / 0.9 AC; 3600 → 400 Wh stored gives 3200 × 0.9 AC
    assert charged_ac == pytest.approx(1600 / ETA, abs=1e-3)
    assert given_ac == pytest.approx(3200 * ETA, abs=1e-3)
    assert sum(s.series["charge_w"][4:]) == pytest.approx(0, abs=1e-6)
    assert sum(s.series["discharge_w"][:4]) == pytest.approx(0, abs=1e-6)
    assert max(p.export_w) == pytest.approx(0, abs=1e-6)  # nothing given away at 0 €/kWh
    bill = CHEAP * (4 * 500 + 1600 / ETA) / 1000 + DEAR * (8 * 500 - 3200 * ETA) / 1000
    assert p.energy_cost_eur == pytest.approx(bill, abs=1e-6)


def test_charges_only_what_the_dear_ptus_can_use() -> None:
    # 1 h cheap, 1 h dear: 2000 Wh of dear load need 2000 / 0.9 Wh stored above the reserve
    p = plan(4, 4)
    check_physics(p, BatterySpec.model_validate(battery()))
    s = p.device("bat")
    needed = 2000 / ETA + 400  # stored Wh at the start of the dear hour
    assert s.series["soc_pct"][3] == pytest.approx(needed / 40, abs=1e-6)
    assert s.series["soc_pct"][-1] == pytest.approx(10, abs=1e-6)
    assert s.series["discharge_w"][4:] == pytest.approx([BASE_W] * 4, abs=1e-6)
    charged = 0.25 * sum(s.series["charge_w"])
    assert charged == pytest.approx((needed - 2000) / ETA, abs=1e-3)
    assert p.energy_cost_eur == pytest.approx(CHEAP * (2000 + charged) / 1000, abs=1e-6)


def test_never_charges_and_discharges_in_the_same_ptu_even_when_burning_energy_pays() -> None:
    # paid 0.20 €/kWh to import, charged as much to export: charging and discharging at once
    # would burn imported energy in the losses without filling the battery
    n = 4
    p = solve(
        PlanInputs.model_validate(
            {
                "start": DAY,
                "ptus": n,
                "import_price": [-0.20] * n,
                "export_price": [-0.20] * n,
                "base_load_w": [0.0] * n,
                "devices": [battery(soc_start_pct=90)],
            }
        )
    )
    check_physics(p, BatterySpec.model_validate(battery(soc_start_pct=90)))
    assert sum(p.device("bat").series["charge_w"]) > 1000  # it is pushed to take energy


def test_wear_stops_arbitrage_that_does_not_pay_for_it() -> None:
    # at 0.20 €/kWh each way, buying at 0.10 to save 0.9 × 0.9 × 0.40 loses money; giving the
    # stored energy still pays (0.9 × 0.40 > 0.9 × 0.20)
    p = plan(4, 4, cycle_cost_eur_per_kwh=0.2)
    s = p.device("bat")
    assert sum(s.series["charge_w"]) == pytest.approx(0, abs=1e-6)
    given = 0.25 * sum(s.series["discharge_w"])
    assert given == pytest.approx(1600 * ETA, abs=1e-3)  # 50 % → 10 % of 4000 Wh
    assert p.objective_eur == pytest.approx(p.energy_cost_eur + 0.2 * given / 1000, abs=1e-6)


def test_the_end_target_keeps_energy_for_tomorrow() -> None:
    p = plan(4, 8, soc_end_min_pct=50)
    check_physics(p, BatterySpec.model_validate(battery(soc_end_min_pct=50)))
    s = p.device("bat")
    assert s.series["soc_pct"][-1] == pytest.approx(50, abs=1e-6)
    assert s.notes == []


def test_a_battery_below_its_reserve_recharges_first_and_says_so() -> None:
    # all dear: charging costs, but the reserve comes first; 200 Wh stored fit in one PTU
    p = plan(0, 4, soc_start_pct=5)
    s = p.device("bat")
    check_physics(p, BatterySpec.model_validate(battery(soc_start_pct=5)))
    assert s.series["soc_pct"][0] == pytest.approx(10, abs=1e-6)
    assert min(s.series["soc_pct"]) >= 10 - 1e-6
    assert "below its 10 % reserve" in s.notes[0]


def test_an_unreachable_end_target_is_noted_not_infeasible() -> None:
    # 1 PTU at 400 W charge: 2000 + 0.25 × 400 × 0.9 = 2090 Wh < 90 % of 4000
    p = plan(1, 0, soc_end_min_pct=90, max_charge_w=400)
    s = p.device("bat")
    assert s.series["soc_pct"][0] == pytest.approx(2090 / 40, abs=1e-6)
    assert "ends 1510 Wh short of 90 %" in s.notes[0]


def test_a_band_upside_down_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"bat: soc_min_pct 80\.0 is above soc_max_pct 20\.0"):
        BatterySpec.model_validate(battery(soc_min_pct=80, soc_max_pct=20))


def test_prices_near_zero_still_reach_the_optimum() -> None:
    """Found by hypothesis: with prices of 0 to 0.06 ct/kWh SCIP stopped 1.4e-4 above the
    optimum at its default dual tolerance; doubling every price must double the cost."""
    from homeflex.edge.planner.devices.pv import PvSpec

    ptus = 37
    ramp = [round(t * 1.7e-05, 6) for t in range(ptus)]
    battery = BatterySpec(id="battery", capacity_wh=7003.0, soc_start_pct=0.0, soc_min_pct=0.0,
                   soc_max_pct=58.0, max_charge_w=2318.0, max_discharge_w=625.0,
                   charge_efficiency=0.875, discharge_efficiency=1.0,
                   cycle_cost_eur_per_kwh=0.0)  # fmt: skip
    base = PlanInputs(
        start=datetime(2026, 6, 1, 8, tzinfo=UTC), ptus=ptus, import_price=ramp,
        export_price=ramp, base_load_w=[50.0] * ptus, relative_gap=0.0, absolute_gap_eur=0.0,
        devices=[PvSpec(id="pv", forecast_w=[0.0] * ptus, curtailable=False), battery],
    )  # fmt: skip
    doubled = base.model_copy(
        update={"import_price": [2 * p for p in ramp], "export_price": [2 * p for p in ramp]}
    )
    assert solve(doubled).energy_cost_eur == pytest.approx(
        2 * solve(base).energy_cost_eur, rel=1e-6, abs=1e-9
    )
