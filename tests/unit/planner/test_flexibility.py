"""Bid blocks from re-solving at candidate prices."""

from __future__ import annotations

from homeflex.edge.planner.flexibility import bid_blocks, p_plan
from homeflex.edge.planner.planner import solve
from tests.unit.planner.test_annex_d import inputs


def test_p_plan_is_the_net_import_per_ptu() -> None:
    plan = solve(inputs())
    assert p_plan(plan) == plan.net_w
    assert len(p_plan(plan)) == 96


def test_bid_blocks_answer_a_price_in_the_asked_period() -> None:
    # The aggregator asks about 12:00-14:00 (PTUs 48-55). Cheap there, the washer runs there;
    # dear there, it leaves: the home's net energy in the period falls as the price rises.
    period = list(range(48, 56))
    blocks = bid_blocks(inputs(), [-0.2, 0.3, 2.0], period)
    assert [b.price_eur_kwh for b in blocks] == [-0.2, 0.3, 2.0]
    in_period = [sum(b.net_w[t] for t in period) for b in blocks]
    assert in_period[0] > in_period[1] >= in_period[2]
    # at -0.2 €/kWh the whole heating phase (2 × 2 kW) sits in the period; at 2 €/kWh none of it
    assert in_period[0] - in_period[2] >= 4000
    # the washer only moves: the day's energy is the same at every price
    energies = [sum(b.net_w) for b in blocks]
    assert max(energies) - min(energies) < 1e-6
