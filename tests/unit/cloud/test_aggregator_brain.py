"""The aggregator's and the DSO's brains through Plan and Validate for a neighbourhood of ten
homes whose evening peak overloads its transformer: prices out, plans and offers in (one home
silent), the D-prognosis holds sums only, the DSO's request met by the cheapest homes' blocks,
each home ordered its share; orders taken once; a restarted aggregator resumes its round."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from homeflex.agents.messages import (
    DPrognosis,
    FlexOffer,
    FlexOrder,
    FlexRequest,
    OfferBlock,
    Payload,
    PPlan,
    Prices,
    Settlement,
)
from homeflex.agents.node import Outgoing
from homeflex.agents.rounds import RoundStore
from homeflex.cloud.aggregator.brain import AggregatorBrain, DayPrices
from homeflex.cloud.dso.brain import CongestionPoint, DsoBrain
from homeflex.cloud.market.objects import Direction
from homeflex.cloud.market.settlement import Ledger

DAY = date(2026, 1, 15)
T0 = 1_768_000_000.0
HOMES = [f"home-{n}" for n in range(10)]
PEAK = range(76, 84)  # 19:00-21:00
LIMIT_KW = 30.0


def home_plan(n: int, rid: str) -> PPlan:
    return PPlan(round=rid, day=DAY, revision=0,
                 net_kw=[3.2 if t in PEAK else 2.0 for t in range(96)])  # fmt: skip


def home_offer(n: int, rid: str) -> FlexOffer:
    """0.5 kW less in each peak PTU, home n asking 0.05 + 0.02 n €/kWh; home 0's is one run
    of an appliance, all or nothing."""
    blocks = [
        OfferBlock(ptu=t, direction="up", kw=0.5, price=round(0.05 + 0.02 * n, 2), divisible=n != 0)
        for t in PEAK
    ]
    return FlexOffer(round=rid, id=f"{HOMES[n]}.{rid}", day=DAY, blocks=blocks)


def flat_prices(day: date) -> DayPrices:
    return DayPrices([0.30] * 96, [0.05] * 96)


def every_home_answers(n: Neighbourhood) -> str:
    """The day's round opened and answered by all ten homes (32 kW in the peak): the DSO
    orders 2 kW of the cheapest. The round's id."""
    n.route(n.agg.open_round(DAY, T0), T0)
    rid = n.agg.round_id(DAY)
    for k, home in enumerate(HOMES):
        n.agg.on_message(home, home_plan(k, rid), T0 + 1)
        n.agg.on_message(home, home_offer(k, rid), T0 + 1)
    n.route(n.agg.on_tick(T0 + 2), T0 + 2)
    return rid


class Neighbourhood:
    def __init__(self, store: RoundStore) -> None:
        self.agg = AggregatorBrain("agr-1", frozenset(HOMES), "dso-1", "trafo-1", store,
                                   flat_prices, answer_window_s=60)  # fmt: skip
        point = CongestionPoint("trafo-1", LIMIT_KW, frozenset({"agr-1"}))
        self.dso = DsoBrain("dso-1", [point], max_price=0.20)
        self.to_homes: list[Outgoing] = []
        self.to_dso: list[Payload] = []
        self.to_agg: list[Payload] = []

    def route(self, out: list[Outgoing], now: float) -> None:
        """Hand each message to its brain at once, as if every delivery succeeded first time."""
        while out:
            o = out.pop(0)
            if o.to == "dso-1":
                self.to_dso.append(o.message)
                ack, more = self.dso.on_message("agr-1", o.message, now)
            elif o.to == "agr-1":
                self.to_agg.append(o.message)
                ack, more = self.agg.on_message("dso-1", o.message, now)
            else:
                self.to_homes.append(o)
                continue
            assert ack.status == "ok", ack.detail
            out += more


def test_plan_and_validate_meet_the_request_from_the_cheapest_homes(tmp_path: Path) -> None:
    n = Neighbourhood(RoundStore(tmp_path / "rounds.db"))
    n.route(n.agg.open_round(DAY, T0), T0)
    prices = [o for o in n.to_homes if isinstance(o.message, Prices)]
    assert sorted(o.to for o in prices) == HOMES
    rid = prices[0].message.round  # type: ignore[attr-defined]
    for k, home in enumerate(HOMES[:9]):  # home-9 stays silent
        for answer in (home_plan(k, rid), home_offer(k, rid)):
            ack, _ = n.agg.on_message(home, answer, T0 + 5)
            assert ack.status == "ok"
    n.route(n.agg.on_tick(T0 + 30), T0 + 30)
    assert n.to_dso == []  # home-9 may still answer
    n.route(n.agg.on_tick(T0 + 60), T0 + 60)  # the deadline: the round closes without it

    # the DSO got the A-plan: nine homes summed, 28.8 kW at the peak ... and more homes are
    # not in any aggregator: give the point enough other load to be over the limit
    (prognosis,) = [m for m in n.to_dso if isinstance(m, DPrognosis)]
    assert prognosis.homes == 9 and prognosis.net_kw[80] == pytest.approx(9 * 3.2)
    assert set(DPrognosis.model_fields) == {
        "round", "day", "first_ptu", "congestion_point", "net_kw", "homes"
    }  # fmt: skip
    check = n.dso.check("trafo-1", DAY)
    assert check is not None
    assert check.safe is True  # 28.8 kW < 30 kW: no request

    # the next day the same nine homes and home-9 answer, and the peak is 32 kW
    later = date(2026, 1, 16)
    n.route(n.agg.open_round(later, T0 + 100), T0 + 100)
    rid2 = n.agg.round_id(later)
    for k, home in enumerate(HOMES):
        n.agg.on_message(home, home_plan(k, rid2).model_copy(update={"day": later}), T0 + 105)
        n.agg.on_message(home, home_offer(k, rid2).model_copy(update={"day": later}), T0 + 105)
    n.to_homes.clear()
    n.route(n.agg.on_tick(T0 + 106), T0 + 106)  # all answered: closes at once

    # the DSO asked for the 2 kW over the limit in each peak PTU, the aggregator offered its
    # tiers (nothing of a home's own), the DSO ordered the cheapest: homes 0-3 (0.05-0.11
    # €/kWh), 0.5 kW each in every peak PTU (home 0's all-or-nothing run fits whole)
    (request,) = [m for m in n.to_agg if isinstance(m, FlexRequest)]
    assert request.profile_kw == pytest.approx(dict.fromkeys(PEAK, 2.0))
    (offer,) = [m for m in n.to_dso if isinstance(m, FlexOffer)]
    assert {b.kw for b in offer.blocks} == {0.5}  # one home per price step here
    orders = [o for o in n.to_homes if isinstance(o.message, FlexOrder)]
    got: dict[str, float] = {}
    for o in orders:
        assert isinstance(o.message, FlexOrder) and o.key == f"order:{o.message.id}"
        assert o.message.offer == f"{o.to}.{rid2}"
        got[o.to] = got.get(o.to, 0.0) + sum(o.message.profile_kw.values())
    per_ptu: dict[int, float] = {}
    for o in orders:
        for t, kw in o.message.profile_kw.items():  # type: ignore[attr-defined]
            per_ptu[t] = per_ptu.get(t, 0.0) + kw
    assert per_ptu == pytest.approx(dict.fromkeys(PEAK, 2.0))
    check2 = n.dso.check("trafo-1", later)
    assert check2 is not None
    assert check2.safe and max(check2.after_kw()) <= LIMIT_KW + 1e-9
    cost = check2.procurements[Direction.UP].total_cost_eur
    # the cheapest way: 4 × 0.5 kW per PTU from the cheapest divisible blocks, or home 0's
    cheapest = sorted([0.05] + [round(0.05 + 0.02 * k, 2) for k in range(1, 10)])[:4]
    assert cost == pytest.approx(sum(cheapest) * 0.5 * 0.25 * len(PEAK))
    assert got == pytest.approx({h: 0.5 * len(PEAK) for h in HOMES[:4]})

    # the DSO resends an order whose ack it missed: taken before, nothing new for the homes
    first = next(m for m in n.to_dso if isinstance(m, FlexOffer))
    dso_orders = [
        o
        for o in n.dso._buy(check2, check2.requests[Direction.UP], T0 + 200)
        if isinstance(o.message, FlexOrder)
    ]
    tiers = first.tiers()
    assert dso_orders and all(o.message.offer in tiers for o in dso_orders)  # type: ignore[attr-defined]
    ack, more = n.agg.on_message("dso-1", dso_orders[0].message, T0 + 200)
    assert (ack.status, more) == ("ok", [])
    # an order below the tier's price, or for more than the tier holds, is refused saying which
    order = dso_orders[0].message
    assert isinstance(order, FlexOrder)
    cheap = order.model_copy(update={"id": "cheap", "price": 0.0})
    ack, more = n.agg.on_message("dso-1", cheap, T0 + 201)
    assert (ack.status, more) == ("refused", []) and "the order pays 0.0" in ack.detail
    big = order.model_copy(update={"id": "big", "profile_kw": dict.fromkeys(PEAK, 50.0)})
    ack, more = n.agg.on_message("dso-1", big, T0 + 202)
    assert (ack.status, more) == ("refused", []) and "asks more kW" in ack.detail


def test_a_restarted_aggregator_resumes_its_open_round(tmp_path: Path) -> None:
    store = RoundStore(tmp_path / "rounds.db")
    n = Neighbourhood(store)
    n.route(n.agg.open_round(DAY, T0), T0)
    rid = n.agg.round_id(DAY)
    n.agg.on_message("home-3", home_plan(3, rid), T0 + 1)
    # the process dies; a new one opens the same store
    again = AggregatorBrain("agr-1", frozenset(HOMES), "dso-1", "trafo-1", store, flat_prices)
    assert list(again.rounds) == [rid] and "home-3" in again.rounds[rid].plans
    assert again.open_round(DAY, T0 + 2) == []  # not asked twice
    ack, _ = again.on_message("home-3", home_plan(3, rid), T0 + 3)
    assert ack.status == "ok" and "taken" in ack.detail


def test_the_day_is_settled_against_the_plans_before_the_orders(tmp_path: Path) -> None:
    n = Neighbourhood(RoundStore(tmp_path / "rounds.db"))
    every_home_answers(n)
    orders = {o.to: o.message for o in n.to_homes if isinstance(o.message, FlexOrder)}
    assert sorted(orders) == HOMES[:4]  # 0.5 kW each in every peak PTU, as above
    ledger = Ledger(tmp_path / "ledger.db")

    def metered(given_kw: float) -> dict[int, float]:
        """kWh per PTU of a home that took `given_kw` less than planned in the peak."""
        return {t: ((3.2 - given_kw) if t in PEAK else 2.0) * 0.25 for t in range(96)}

    readings = {"home-0": metered(0.5), "home-1": metered(0.25), "home-2": metered(0.0)}
    out = n.agg.settle(DAY, readings, ledger, penalty_eur_kwh=0.30)
    paid = {o.to: o.message for o in out}
    assert sorted(paid) == HOMES[:3]  # home-3 has no meter readings yet: not settled
    kwh = 0.5 * 0.25 * len(PEAK)  # what each order asked: 1 kWh
    for home, delivered in (("home-0", kwh), ("home-1", kwh / 2), ("home-2", 0.0)):
        msg = paid[home]
        price = orders[home].price  # type: ignore[attr-defined]
        assert isinstance(msg, Settlement) and msg.order == orders[home].id  # type: ignore[attr-defined]
        assert msg.delivered_kwh == pytest.approx(delivered)
        assert msg.shortfall_kwh == pytest.approx(kwh - delivered)
        assert msg.payment_eur == pytest.approx(delivered * price)
        assert msg.penalty_eur == pytest.approx((kwh - delivered) * 0.30)
    # later the readings of home-3 arrive: only its order is settled; then nothing more
    readings["home-3"] = metered(0.5)
    (late,) = n.agg.settle(DAY, readings, ledger, penalty_eur_kwh=0.30)
    assert late.to == "home-3" and late.key == f"settlement:{orders['home-3'].id}"  # type: ignore[attr-defined]
    assert n.agg.settle(DAY, readings, ledger, penalty_eur_kwh=0.30) == []
    assert len(ledger.entries()) == 4 and ledger.verify() == []


MIDDAY = range(48, 52)  # 12:00-13:00


def test_midday_back_flow_is_met_by_the_homes_that_take_more_cheapest(tmp_path: Path) -> None:
    """Ten homes export 4 kW each at midday: 40 kW back through a 30 kW transformer. Each
    offers to take 1.5 kW more then (downward) and 0.5 kW less in the evening (upward): the DSO
    asks for 10 kW downward only, and the cheapest homes are ordered to take more."""
    n = Neighbourhood(RoundStore(tmp_path / "rounds.db"))
    n.route(n.agg.open_round(DAY, T0), T0)
    rid = n.agg.round_id(DAY)
    for k, home in enumerate(HOMES):
        plan = PPlan(round=rid, day=DAY, revision=0,
                     net_kw=[-4.0 if t in MIDDAY else 2.0 for t in range(96)])  # fmt: skip
        price = round(0.02 + 0.01 * k, 2)
        blocks = [OfferBlock(ptu=t, direction="down", kw=1.5, price=price) for t in MIDDAY]
        blocks += home_offer(k, rid).blocks  # upward in the evening: not wanted today
        n.agg.on_message(home, plan, T0 + 5)
        n.agg.on_message(home, FlexOffer(round=rid, id=f"{home}.{rid}", day=DAY, blocks=blocks),
                         T0 + 5)  # fmt: skip
    n.route(n.agg.on_tick(T0 + 6), T0 + 6)

    (request,) = [m for m in n.to_agg if isinstance(m, FlexRequest)]
    assert request.direction == "down" and request.id.endswith(".down")
    assert request.profile_kw == pytest.approx(dict.fromkeys(MIDDAY, 10.0))
    (offer,) = [m for m in n.to_dso if isinstance(m, FlexOffer)]
    assert {b.direction for b in offer.blocks} == {"down"}  # the evening blocks left out
    assert sum(b.kw for b in offer.blocks if b.ptu == 48) == pytest.approx(15.0)
    orders = [o for o in n.to_homes if isinstance(o.message, FlexOrder)]
    got: dict[str, float] = {}
    for o in orders:
        assert isinstance(o.message, FlexOrder) and o.message.direction == "down"
        assert set(o.message.profile_kw) == set(MIDDAY)
        got[o.to] = got.get(o.to, 0.0) + o.message.profile_kw[48]
    # 10 kW a PTU, cheapest first: homes 0-5 all their 1.5 kW (9 kW), home 6 the last 1 kW
    assert got == pytest.approx({h: 1.5 for h in HOMES[:6]} | {HOMES[6]: 1.0})
    check = n.dso.check("trafo-1", DAY)
    assert check is not None and check.safe is True
    assert min(check.after_kw()) == pytest.approx(-LIMIT_KW)


def test_a_later_request_of_the_day_is_offered_only_what_no_order_took(tmp_path: Path) -> None:
    n = Neighbourhood(RoundStore(tmp_path / "rounds.db"))
    rid = every_home_answers(n)  # 32 kW: the DSO orders homes 0-3's 0.5 kW
    # homes 0-7 ask at most the DSO's 0.20 €/kWh
    (first,) = [m for m in n.to_dso if isinstance(m, FlexOffer)]
    assert sum(b.kw for b in first.blocks if b.ptu == 80) == pytest.approx(8 * 0.5)
    sold = {o.to for o in n.to_homes if isinstance(o.message, FlexOrder)}
    assert sold == set(HOMES[:4])
    # the DSO asks again the same day (its power flow found more to do): homes 4-7 are left
    again = FlexRequest(round=rid, id="trafo-1.2026-01-15.1", day=DAY, congestion_point="trafo-1",
                        profile_kw={80: 1.0}, max_price=0.2, answer_by=T0 + 100)  # fmt: skip
    ack, out = n.agg.on_message("dso-1", again, T0 + 10)
    assert ack.status == "ok"
    (offer,) = [o.message for o in out]
    assert isinstance(offer, FlexOffer) and offer.request == again.id
    assert {b.ptu for b in offer.blocks} == {80}
    assert sum(b.kw for b in offer.blocks) == pytest.approx(4 * 0.5)
    assert min(b.price for b in offer.blocks) == pytest.approx(0.13)  # home-4's, rounded up
    # a restarted aggregator makes the same offer of it, and takes its orders
    n.agg = AggregatorBrain("agr-1", frozenset(HOMES), "dso-1", "trafo-1", n.agg.store,
                            flat_prices, answer_window_s=60)  # fmt: skip
    assert n.agg.flex[again.id].offer == offer
