"""The home's agent brain with the real planner: prices answered with the P-plan and an offer
from the envelope; an order the home can keep is kept and re-planned with, one it cannot is
refused with the planner's reason; the same message again changes nothing."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from homeflex.agents.messages import FlexOffer, FlexOrder, PPlan, Prices, Settlement
from homeflex.edge.cems import HomeBrain
from homeflex.edge.planner.flexibility import envelope
from homeflex.edge.planner.inputs import FlexOrder as PlannedOrder
from homeflex.edge.planner.inputs import PlanInputs

DAY = date(2026, 1, 15)
EVENING = [76, 77, 78, 79]
BATTERY = {
    "kind": "battery",
    "id": "bat",
    "capacity_wh": 8000,
    "soc_start_pct": 50,
    "soc_min_pct": 10,
    "max_charge_w": 3000,
    "max_discharge_w": 3000,
    "charge_efficiency": 0.95,
    "discharge_efficiency": 0.95,
}


def make_inputs(prices: Prices, orders: list[PlannedOrder]) -> PlanInputs:
    """A home with 1 kW of load, 2 kW in the evening, and a battery."""
    n = len(prices.import_eur_kwh)
    start = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC) + prices.first_ptu * timedelta(
        minutes=15
    )
    load = [2000.0 if 68 <= prices.first_ptu + t < 88 else 1000.0 for t in range(n)]
    return PlanInputs.model_validate(
        {
            "start": start,
            "ptus": n,
            "import_price": prices.import_eur_kwh,
            "export_price": prices.export_eur_kwh,
            "base_load_w": load,
            "devices": [BATTERY],
            "orders": orders,
        }
    )


def prices(round_id: str = "agr-1.2026-01-15") -> Prices:
    # cheap at night, dear in the evening
    imp = [0.10 if t < 28 else 0.40 if 68 <= t < 88 else 0.25 for t in range(96)]
    return Prices(round=round_id, day=DAY, import_eur_kwh=imp, export_eur_kwh=[0.05] * 96,
                  answer_by=0)  # fmt: skip


def brain() -> HomeBrain:
    return HomeBrain("home-1", "agr-1", make_inputs, offer_ptus=EVENING)


def test_prices_are_answered_with_the_plan_and_the_envelope_as_the_offer() -> None:
    b = brain()
    ack, out = b.on_message("agr-1", prices(), 0.0)
    assert ack.status == "ok"
    plan_msg, offer_msg = (o.message for o in out)
    assert isinstance(plan_msg, PPlan) and isinstance(offer_msg, FlexOffer)
    assert [o.key for o in out] == ["plan:agr-1.2026-01-15:0", "offer:agr-1.2026-01-15"]
    assert all(o.to == "agr-1" for o in out)
    _, points = envelope(make_inputs(prices(), []), EVENING)
    assert plan_msg.net_kw == pytest.approx(
        [w / 1000 for w in b.answered[prices().round].plan.net_w]
    )
    by_ptu = {blk.ptu: blk for blk in offer_msg.blocks}
    for e in points:
        down = (e.planned_w - e.min_w) / 1000
        if down * 1000 < 100:
            assert e.ptu not in by_ptu
            continue
        blk = by_ptu[e.ptu]
        assert blk.kw == pytest.approx(down) and blk.direction == "up"
        assert blk.price == pytest.approx(e.cost_down_eur / (down * 0.25) + 0.02)
    assert by_ptu  # the battery has room to give in the evening
    again, more = b.on_message("agr-1", prices(), 1.0)
    assert (again.status, more) == ("ok", [])  # its ack was lost: answered before


def test_an_order_it_can_keep_is_kept_and_one_it_cannot_is_refused() -> None:
    b = brain()
    _, out = b.on_message("agr-1", prices(), 0.0)
    offer = out[1].message
    assert isinstance(offer, FlexOffer)
    blk = max(offer.blocks, key=lambda x: x.kw)
    before = b.answered[offer.round].plan.net_w[blk.ptu]
    order = FlexOrder(round=offer.round, id="o-1", day=DAY, offer=offer.id, direction="up",
                      profile_kw={blk.ptu: blk.kw * 0.5}, price=blk.price)  # fmt: skip
    ack, out = b.on_message("agr-1", order, 2.0)
    assert ack.status == "ok", ack.detail
    (replan,) = (o.message for o in out)
    assert isinstance(replan, PPlan) and replan.revision == 1
    assert replan.net_kw[blk.ptu] <= (before / 1000) - blk.kw * 0.5 + 1e-3
    assert [p.max_net_w for p in b.binding()] == pytest.approx([before - blk.kw * 500])
    assert b.on_message("agr-1", order, 3.0) == (
        ack.model_copy(update={"detail": "taken before"}),
        [],
    )
    # 20 kW less than planned in one PTU is beyond the battery: refused, nothing kept
    too_much = order.model_copy(update={"id": "o-2", "profile_kw": {blk.ptu + 1: 20.0}})
    ack, out = b.on_message("agr-1", too_much, 4.0)
    assert ack.status == "refused" and "cannot deliver" in ack.detail and out == []
    assert len(b.binding()) == 1


def test_only_its_aggregator_is_heard() -> None:
    ack, out = brain().on_message("agr-2", prices(), 0.0)
    assert ack.status == "refused" and "not this home's aggregator" in ack.detail and out == []


def test_a_settlement_is_kept_once() -> None:
    b = brain()
    paid = Settlement(order="o-1", day=DAY, delivered_kwh=0.5, shortfall_kwh=0.0,
                      payment_eur=0.06, penalty_eur=0.0)  # fmt: skip
    for _ in range(2):  # the second time: its ack was lost
        ack, out = b.on_message("agr-1", paid, 5.0)
        assert (ack.status, out) == ("ok", [])
    assert b.settlements == {"o-1": paid}
