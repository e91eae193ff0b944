"""The home's agent brain with the real planner: prices answered with the P-plan and an offer
from the envelope; an order the home can keep is kept and re-planned with, one it cannot is
refused with the planner's reason; the same message again changes nothing."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from homeflex.agents.messages import FlexOffer, FlexOrder, OfferBlock, PPlan, Prices, Settlement
from homeflex.edge.cems import HomeBrain
from homeflex.edge.planner.flexibility import envelope
from homeflex.edge.planner.inputs import FlexOrder as PlannedOrder
from homeflex.edge.planner.inputs import PlanInputs
from homeflex.edge.preferences import Neighbourhood

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
    assert plan_msg.net_kw == pytest.approx([w / 1000 for w in b.answered[prices().round].net_w])
    # up: less than planned, down to the least; down: more, up to the most it can take
    for direction, room, cost in (
        ("up", lambda e: e.planned_w - e.min_w, lambda e: e.cost_down_eur),
        ("down", lambda e: e.max_w - e.planned_w, lambda e: e.cost_up_eur),
    ):
        by_ptu = {blk.ptu: blk for blk in offer_msg.blocks if blk.direction == direction}
        for e in points:
            kw = room(e) / 1000
            if kw * 1000 < 100:
                assert e.ptu not in by_ptu
                continue
            blk = by_ptu[e.ptu]
            assert blk.kw == pytest.approx(kw)
            assert blk.price == pytest.approx(cost(e) / (kw * 0.25) + 0.02)
        assert by_ptu  # the battery has room to give and to take in the evening
    assert len(offer_msg.blocks) == len({(b.ptu, b.direction) for b in offer_msg.blocks})
    again, more = b.on_message("agr-1", prices(), 1.0)
    assert (again.status, more) == ("ok", [])  # its ack was lost: answered before


def half_the_largest_block(b: HomeBrain, direction: str) -> tuple[OfferBlock, float, FlexOrder]:
    """The home's answer to the prices, and an order for half its largest block in
    `direction`: the block, the P-plan's W in its PTU, the order."""
    _, out = b.on_message("agr-1", prices(), 0.0)
    offer = out[1].message
    assert isinstance(offer, FlexOffer)
    blk = max((x for x in offer.blocks if x.direction == direction), key=lambda x: x.kw)
    order = FlexOrder(round=offer.round, id=f"o-{direction}", day=DAY, offer=offer.id,
                      direction=direction, profile_kw={blk.ptu: blk.kw * 0.5},
                      price=blk.price)  # fmt: skip
    return blk, b.answered[offer.round].at(blk.ptu), order


def test_an_order_it_can_keep_is_kept_and_one_it_cannot_is_refused() -> None:
    b = brain()
    blk, before, order = half_the_largest_block(b, "up")
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


def test_a_downward_order_raises_the_homes_load_in_its_ptus() -> None:
    b = brain()
    blk, before, order = half_the_largest_block(b, "down")
    ack, out = b.on_message("agr-1", order, 2.0)
    assert ack.status == "ok", ack.detail
    (replan,) = (o.message for o in out)
    assert isinstance(replan, PPlan)
    assert replan.net_kw[blk.ptu] >= (before / 1000) + blk.kw * 0.5 - 1e-3
    (bound,) = b.binding()
    assert bound.max_net_w is None and bound.min_net_w == pytest.approx(before + blk.kw * 500)
    # 30 kW more than planned is beyond the connection's 17.25 kW: refused
    too_much = order.model_copy(update={"id": "o-d2", "profile_kw": {blk.ptu + 1: 30.0}})
    ack, _ = b.on_message("agr-1", too_much, 3.0)
    assert ack.status == "refused" and "cannot deliver" in ack.detail


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


def test_a_plan_that_starts_the_evening_before_answers_for_the_priced_day_only() -> None:
    """The gateway plans from now: 8 PTUs of the day before lead into the priced day, and the
    P-plan, the offer and the orders still speak of the day's own PTUs."""
    lead = 8

    def from_before(p: Prices, orders: list[PlannedOrder]) -> PlanInputs:
        day = make_inputs(p, orders)
        return day.model_copy(
            update={
                "start": day.start - lead * timedelta(minutes=15),
                "ptus": day.ptus + lead,
                "import_price": [0.30] * lead + list(day.import_price),
                "export_price": [0.05] * lead + list(day.export_price),
                "base_load_w": [1000.0] * lead + list(day.base_load_w),
            }
        )

    b = HomeBrain("home-1", "agr-1", from_before, offer_ptus=EVENING)
    _, out = b.on_message("agr-1", prices(), 0.0)
    plan_msg, offer = (o.message for o in out)
    assert isinstance(plan_msg, PPlan) and isinstance(offer, FlexOffer)
    assert (plan_msg.first_ptu, len(plan_msg.net_kw)) == (0, 96)
    assert {blk.ptu for blk in offer.blocks} <= set(EVENING) and offer.blocks
    blk = offer.blocks[0]
    order = FlexOrder(round=offer.round, id="o-1", day=DAY, offer=offer.id, direction="up",
                      profile_kw={blk.ptu: blk.kw / 2}, price=blk.price)  # fmt: skip
    ack, _ = b.on_message("agr-1", order, 1.0)
    assert ack.status == "ok", ack.detail
    (bound,) = b.binding()
    assert bound.start == datetime(2026, 1, 15, tzinfo=UTC) + blk.ptu * timedelta(minutes=15)
    assert bound.max_net_w == pytest.approx(plan_msg.net_kw[blk.ptu] * 1000 - blk.kw * 500)


def test_prices_after_the_deadline_are_refused() -> None:
    ack, out = brain().on_message("agr-1", prices(), 5.0)  # answer_by is 0
    assert ack.status == "refused" and "closed before it came" in ack.detail and out == []


def test_orders_and_answers_survive_a_restart_and_reach_the_control_loop(tmp_path: Path) -> None:
    taken: list[PlannedOrder] = []
    state = tmp_path / "agent.json"
    b = HomeBrain("home-1", "agr-1", make_inputs, EVENING, on_order=taken.extend, state=state)
    _, out = b.on_message("agr-1", prices(), 0.0)
    offer = out[1].message
    assert isinstance(offer, FlexOffer)
    blk = max((x for x in offer.blocks if x.direction == "up"), key=lambda x: x.kw)
    order = FlexOrder(round=offer.round, id="o-1", day=DAY, offer=offer.id, direction="up",
                      profile_kw={blk.ptu: blk.kw / 2}, price=blk.price)  # fmt: skip
    assert b.on_message("agr-1", order, 1.0)[0].status == "ok"
    assert taken == b.binding() and len(taken) == 1

    again = HomeBrain("home-1", "agr-1", make_inputs, EVENING, state=state)
    assert again.binding() == b.binding()
    assert again.accepted == b.accepted
    assert again.answered[offer.round].net_w == b.answered[offer.round].net_w
    assert again.answered[offer.round].revision == 1
    assert again.on_message("agr-1", order, 2.0)[0].detail == "taken before"


def test_a_changed_plan_is_sent_as_a_revision_only_when_a_coming_ptu_moved() -> None:
    b = brain()
    b.on_message("agr-1", prices(), 0.0)
    a = b.answered[prices().round]
    start = datetime(2026, 1, 15, tzinfo=UTC).timestamp()
    now = start + 40 * 900  # PTU 40 has begun
    past = [w + 5000 for w in a.net_w]  # a change in PTUs that are over is no news
    assert b.revise(start, past[:40], now) == []
    small = list(a.net_w)
    small[50] += 400  # within revise_w
    assert b.revise(start, small, now) == [] and a.revision == 0
    big = list(a.net_w)
    big[60] += 2000
    (out,) = b.revise(start, big, now)
    assert isinstance(out.message, PPlan) and out.message.revision == 1
    assert out.message.net_kw[60] == pytest.approx(big[60] / 1000)
    assert out.key == f"plan:{prices().round}:1"


def test_on_a_day_the_owner_sits_out_the_home_sends_its_plan_and_offers_and_takes_nothing() -> None:
    choice = Neighbourhood(skip_days=[DAY])
    b = HomeBrain("home-1", "agr-1", make_inputs, offer_ptus=EVENING, choices=lambda: choice)
    ack, out = b.on_message("agr-1", prices(), 0.0)
    assert ack.status == "ok"
    plan_msg, offer_msg = (o.message for o in out)
    assert isinstance(plan_msg, PPlan) and isinstance(offer_msg, FlexOffer)
    assert offer_msg.blocks == []
    # the same P-plan as a home taking part: sitting out changes what is offered, not the plan
    taking_part = brain()
    _, theirs = taking_part.on_message("agr-1", prices(), 0.0)
    assert isinstance(theirs[0].message, PPlan)
    assert plan_msg.net_kw == pytest.approx(theirs[0].message.net_kw, abs=1e-3)
    order = FlexOrder(round=prices().round, id="o-1", day=DAY, offer="home-1.x", direction="up",
                      profile_kw={EVENING[0]: 0.5}, price=0.3)  # fmt: skip
    ack, out = b.on_message("agr-1", order, 1.0)
    assert (ack.status, ack.detail, out) == (
        "refused",
        "the owner does not take part on 2026-01-15",
        [],
    )
    assert b.binding() == []
    # another day: the home takes part again
    assert choice.takes_part(DAY + timedelta(days=1)) is None


def test_without_consent_to_share_its_plan_the_home_sends_nothing() -> None:
    choice = Neighbourhood(share_plan=False)
    b = HomeBrain("home-1", "agr-1", make_inputs, offer_ptus=EVENING, choices=lambda: choice)
    ack, out = b.on_message("agr-1", prices(), 0.0)
    assert out == [] and ack.status == "ok"
    assert ack.detail == "not answered: the owner does not consent to sharing the home's plan"
    assert b.answered == {}
