"""The DSO's brain on seed 004's worked example (150 homes in three aggregators, a 300 kW
D-prognosis peak at 20:00 against a 280 kW transformer): the request is the excess, asked of
every aggregator; their offers bought at least cost; no PTU over the limit after the orders;
answers taken once; a silent aggregator does not block the check. Settle: each order against
the D-prognosis it was bought on, from the aggregators' summed meters, once, never a home's."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pytest

from homeflex.agents.messages import (
    Ack,
    DPrognosis,
    FlexOffer,
    FlexOrder,
    FlexRequest,
    Metered,
    OfferBlock,
    Settlement,
)
from homeflex.cloud.dso.brain import CongestionPoint, DsoBrain
from homeflex.cloud.dso.checks import CheckStore
from homeflex.cloud.market import objects as mo
from homeflex.cloud.market.dso import congestion_request, procure
from homeflex.cloud.market.settlement import Ledger
from tests.unit.market.test_dso import (
    AGGREGATORS,
    HOMES_PER_AGR,
    LIMIT_KW,
    aggregator_offers,
    homes_load,
)

DAY = date(2026, 1, 15)
T0 = 1_768_000_000.0


def brain() -> DsoBrain:
    point = CongestionPoint("trafo-1", LIMIT_KW, frozenset(AGGREGATORS))
    return DsoBrain("dso-1", [point], max_price=0.25)


def prognoses(load: np.ndarray) -> dict[str, DPrognosis]:
    out = {}
    for n, agr in enumerate(AGGREGATORS):
        mine = load[n * HOMES_PER_AGR : (n + 1) * HOMES_PER_AGR].sum(0)
        out[agr] = DPrognosis(
            round=f"{agr}.d1",
            day=DAY,
            congestion_point="trafo-1",
            homes=HOMES_PER_AGR,
            net_kw=[float(x) for x in mine],
        )
    return out


def as_message(agr: str, request_id: str, tiers: list[mo.FlexOffer]) -> FlexOffer:
    """An aggregator's market tiers as the one offer message it sends the DSO."""
    blocks = [
        OfferBlock(ptu=t, direction="up", kw=kw, price=o.price, divisible=o.divisible)
        for o in tiers
        if o.participant == agr
        for t, kw in sorted(o.profile_kw.items())
        if kw > 0
    ]
    return FlexOffer(round=f"{agr}.d1", id=f"{agr}.offer", day=DAY, request=request_id,
                     blocks=blocks)  # fmt: skip


def test_the_worked_example_is_validated_bought_and_safe_afterwards() -> None:
    rng = np.random.default_rng(4)
    load = homes_load(rng)
    dso = brain()
    sent = []
    for n, (agr, p) in enumerate(prognoses(load).items()):
        ack, out = dso.on_message(agr, p, T0 + n)
        assert ack.status == "ok"
        sent += out
    # every aggregator of the point is asked for the whole excess over 280 kW
    total = [float(x) for x in load.sum(0)]
    expected = congestion_request(total, LIMIT_KW, request_id="x", buyer="dso-1", max_price=0.25)
    assert sorted(o.to for o in sent) == sorted(AGGREGATORS)
    request = sent[0].message
    assert isinstance(request, FlexRequest)
    assert request.profile_kw == pytest.approx(expected.profile_kw)
    assert max(expected.profile_kw.values()) == pytest.approx(20.0)  # the 300 kW peak
    assert request.max_price == 0.25 and request.answer_by == T0 + 2 + 120

    # the aggregators answer with their tiers (seed 004: each sums its homes by price)
    market_request = expected.model_copy(update={"id": request.id})
    tiers = aggregator_offers(market_request, load, rng)
    orders = []
    for agr in AGGREGATORS:
        ack, out = dso.on_message(agr, as_message(agr, request.id, tiers), T0 + 10)
        assert ack.status == "ok"
        orders += out
    check = dso.check("trafo-1", DAY)
    assert check is not None
    assert list(check.procurements) == [mo.Direction.UP] and check.safe
    # the cheapest offers: the same purchase as procuring the tiers directly
    direct = procure(market_request, tiers)
    assert check.procurements[mo.Direction.UP].total_cost_eur == pytest.approx(
        direct.total_cost_eur
    )
    assert max(check.after_kw()) <= LIMIT_KW + 1e-6
    # one order per accepted tier, to its aggregator, naming the offer it answers
    assert len(orders) == len(direct.accepted)
    for o in orders:
        assert isinstance(o.message, FlexOrder)
        assert o.message.offer in as_message(o.to, request.id, tiers).tiers()  # a tier of it
        assert o.key == f"order:{o.message.id}"
    ordered = [o.message for o in orders if isinstance(o.message, FlexOrder)]
    ordered_kw = sum(sum(m.profile_kw.values()) for m in ordered)
    assert ordered_kw == pytest.approx(sum(sum(p.values()) for p in direct.accepted.values()))


def test_answers_are_taken_once_and_nothing_after_the_purchase() -> None:
    rng = np.random.default_rng(4)
    load = homes_load(rng)
    dso = brain()
    ps = prognoses(load)
    dso.on_message("agr-a", ps["agr-a"], T0)
    ack, out = dso.on_message("agr-a", ps["agr-a"], T0 + 1)
    assert ack.status == "ok" and out == []  # its ack was lost: sent again
    ack, _ = dso.on_message("agr-x", ps["agr-a"], T0)
    assert ack.status == "refused" and "no homes at congestion point" in ack.detail
    ack, _ = dso.on_message("agr-a", Ack(status="ok"), T0)
    assert ack.status == "refused"


def test_a_silent_aggregator_does_not_block_the_check_and_its_last_load_stands_in() -> None:
    rng = np.random.default_rng(4)
    load = homes_load(rng)
    dso = brain()
    ps = prognoses(load)
    dso.on_message("agr-a", ps["agr-a"], T0)
    dso.on_message("agr-b", ps["agr-b"], T0 + 1)
    assert dso.on_tick(T0 + 60) == []  # still waiting for agr-c
    out = dso.on_tick(T0 + 120)
    # the first day nothing stands in for agr-c: two thirds of 300 kW is under 280
    first = dso.check("trafo-1", DAY)
    assert first is not None
    assert out == [] and first.safe is True and first.estimated == {}
    # the next day agr-c is silent again: its D-prognosis of the day before stands in
    later = DAY.replace(day=16)
    dso.on_message("agr-c", ps["agr-c"].model_copy(update={"day": DAY.replace(day=14)}), T0)
    for agr in ("agr-a", "agr-b"):
        dso.on_message(agr, ps[agr].model_copy(update={"day": later}), T0 + 200)
    out = dso.on_tick(T0 + 200 + 120)
    check = dso.check("trafo-1", later)
    assert check is not None
    assert list(check.estimated) == ["agr-c"] and check.estimated["agr-c"].day.day == 14
    assert max(check.prognosis_kw()) == pytest.approx(300.0)
    # the two that reported are asked, each in its own round; the silent one is not
    assert sorted(o.to for o in out) == ["agr-a", "agr-b"]
    assert {getattr(o.message, "round", None) for o in out} == {"agr-a.d1", "agr-b.d1"}


# --- Settle ------------------------------------------------------------------------------------

SETTLE_PTUS = (80, 81)  # 20:00-20:30


def two_aggregators() -> tuple[DsoBrain, dict[str, FlexOrder]]:
    """A 30 kW point with agr-1 (18 kW) and agr-2 (14 kW) in PTUs 80-81: 2 kW over. agr-1
    offers 1.5 kW at 0.10 €/kWh, agr-2 2 kW at 0.15: the DSO orders 1.5 kW of agr-1 and
    0.5 kW of agr-2 in each PTU. Then both plan again holding what they sold (16.5 and
    13.5 kW): the point is validated again, safe, and the orders stay as they were bought."""
    point = CongestionPoint("trafo-1", 30.0, frozenset({"agr-1", "agr-2"}))
    dso = DsoBrain("dso-1", [point], max_price=0.25)

    def prognosis(agr: str, peak_kw: float, rnd: str) -> DPrognosis:
        net = [peak_kw if t in SETTLE_PTUS else 5.0 for t in range(96)]
        return DPrognosis(round=rnd, day=DAY, congestion_point="trafo-1", net_kw=net, homes=5)

    out = []
    for agr, kw in (("agr-1", 18.0), ("agr-2", 14.0)):
        ack, more = dso.on_message(agr, prognosis(agr, kw, f"{agr}.r0"), T0)
        assert ack.status == "ok"
        out += more
    request = out[0].message
    assert isinstance(request, FlexRequest) and request.profile_kw == {80: 2.0, 81: 2.0}
    orders: dict[str, FlexOrder] = {}
    for agr, kw, price in (("agr-1", 1.5, 0.10), ("agr-2", 2.0, 0.15)):
        blocks = [OfferBlock(ptu=t, direction="up", kw=kw, price=price) for t in SETTLE_PTUS]
        offer = FlexOffer(round=f"{agr}.r0", id=f"{agr}.o", day=DAY, request=request.id,
                          blocks=blocks)  # fmt: skip
        ack, more = dso.on_message(agr, offer, T0 + 5)
        assert ack.status == "ok"
        orders.update({o.to: o.message for o in more if isinstance(o.message, FlexOrder)})
    assert orders["agr-1"].profile_kw == pytest.approx({80: 1.5, 81: 1.5})
    assert orders["agr-2"].profile_kw == pytest.approx({80: 0.5, 81: 0.5})
    for agr, kw in (("agr-1", 16.5), ("agr-2", 13.5)):
        ack, more = dso.on_message(agr, prognosis(agr, kw, f"{agr}.r1"), T0 + 50)
        assert ack.status == "ok" and more == []
    again = dso.check("trafo-1", DAY)
    assert again is not None and again.generation == 1 and again.safe is True
    return dso, orders


def meter(peak_kw: dict[int, float]) -> dict[int, float]:
    """An aggregator's homes' metered kWh per PTU: `peak_kw` in the peak, 5 kW elsewhere."""
    return {t: peak_kw.get(t, 5.0) * 0.25 for t in range(96)}


def test_the_dso_settles_each_order_against_the_prognosis_it_bought_on(tmp_path: Path) -> None:
    dso, orders = two_aggregators()
    ledger = Ledger(tmp_path / "dso-ledger.db")
    # agr-1 gave its 1.5 kW at 20:00 and only 0.75 kW at 20:15 (against its 18 kW, not the
    # 16.5 kW of its later plan, which already holds the order); agr-2's meters are not in yet
    metered = {"agr-1": meter({80: 16.5, 81: 17.25})}
    out = dso.settle(DAY, metered, ledger, penalty_eur_kwh=0.40)
    (paid,) = out
    msg = paid.message
    assert paid.to == "agr-1" and paid.key == f"settlement:{orders['agr-1'].id}"
    assert isinstance(msg, Settlement) and msg.order == orders["agr-1"].id and msg.day == DAY
    assert msg.delivered_kwh == pytest.approx((1.5 + 0.75) * 0.25)  # 0.5625 kWh
    assert msg.shortfall_kwh == pytest.approx(0.75 * 0.25)  # 0.1875 kWh
    assert msg.payment_eur == pytest.approx(0.10 * 0.5625)  # 0.05625 €
    assert msg.penalty_eur == pytest.approx(0.40 * 0.1875)  # 0.075 €

    # agr-2's meters arrive (it gave more than ordered: paid for the order only); agr-1's
    # order is not settled twice, also by a DSO restarted on the same ledger
    metered["agr-2"] = meter({80: 13.0, 81: 13.5})
    (late,) = dso.settle(DAY, metered, ledger, penalty_eur_kwh=0.40)
    msg = late.message
    assert late.to == "agr-2" and isinstance(msg, Settlement)
    assert msg.delivered_kwh == pytest.approx(1.0 * 0.25) and msg.shortfall_kwh == 0.0
    assert msg.payment_eur == pytest.approx(0.15 * 0.25) and msg.penalty_eur == 0.0
    assert dso.settle(DAY, metered, ledger, penalty_eur_kwh=0.40) == []
    assert dso.settle(DAY.replace(day=16), metered, ledger, penalty_eur_kwh=0.40) == []
    records = [e.data() for e in ledger.entries()]
    assert [(r["order"], r["participant"]) for r in records] == [
        (orders["agr-1"].id, "agr-1"), (orders["agr-2"].id, "agr-2")
    ]  # fmt: skip
    assert [p["baseline_kw"] for p in records[0]["periods"]] == [18.0, 18.0]
    assert ledger.verify() == []


def test_an_order_waits_for_every_ordered_ptu_metered(tmp_path: Path) -> None:
    dso, _ = two_aggregators()
    ledger = Ledger(tmp_path / "dso-ledger.db")
    partial = {"agr-1": {80: 16.5 * 0.25}, "agr-2": {}}  # 20:15 not metered yet
    assert dso.settle(DAY, partial, ledger, penalty_eur_kwh=0.40) == []
    assert ledger.entries() == []
    full = {"agr-1": meter({80: 16.5, 81: 16.5}), "agr-2": meter({80: 13.5, 81: 13.5})}
    out = dso.settle(DAY, full, ledger, penalty_eur_kwh=0.40)
    assert sorted(o.to for o in out) == ["agr-1", "agr-2"]
    assert sum(o.message.payment_eur for o in out) == pytest.approx(  # type: ignore[attr-defined]
        (0.10 * 1.5 + 0.15 * 0.5) * 2 * 0.25
    )


def test_the_dso_takes_no_home_meter_and_its_ledger_names_no_home(tmp_path: Path) -> None:
    dso, _ = two_aggregators()
    ledger = Ledger(tmp_path / "dso-ledger.db")
    with pytest.raises(ValueError, match="home-3, not an aggregator of dso-1"):
        dso.settle(DAY, {"agr-1": meter({}), "home-3": meter({})}, ledger, 0.40)
    assert ledger.entries() == []
    dso.settle(DAY, {"agr-1": meter({}), "agr-2": meter({})}, ledger, 0.40)
    assert {e.data()["participant"] for e in ledger.entries()} == {"agr-1", "agr-2"}


def test_two_orders_of_one_aggregator_in_a_ptu_count_each_kw_once(tmp_path: Path) -> None:
    """agr-1 holds two tiers ordered in the same PTUs (1 kW at 10 ct, 1 kW at 12 ct) and its
    homes give 1.5 kW: the cheap order is delivered in full, the dear one by half."""
    point = CongestionPoint("trafo-1", 30.0, frozenset({"agr-1"}))
    dso = DsoBrain("dso-1", [point], max_price=0.25)
    net = [32.0 if t in SETTLE_PTUS else 5.0 for t in range(96)]
    prognosis = DPrognosis(round="r0", day=DAY, congestion_point="trafo-1", net_kw=net, homes=9)
    (req,) = dso.on_message("agr-1", prognosis, T0)[1]
    assert isinstance(req.message, FlexRequest)
    blocks = [OfferBlock(ptu=t, direction="up", kw=1.0, price=p)
              for t in SETTLE_PTUS for p in (0.10, 0.12)]  # fmt: skip
    offer = FlexOffer(round="r0", id="agr-1.o", day=DAY, request=req.message.id, blocks=blocks)
    _, placed = dso.on_message("agr-1", offer, T0 + 1)
    orders = {o.message.price: o.message for o in placed if isinstance(o.message, FlexOrder)}
    assert sorted(orders) == [0.10, 0.12]
    ledger = Ledger(tmp_path / "dso-ledger.db")
    out = dso.settle(DAY, {"agr-1": meter({80: 30.5, 81: 30.5})}, ledger, penalty_eur_kwh=0.40)
    got = {o.message.order: o.message for o in out if isinstance(o.message, Settlement)}
    cheap, dear = got[orders[0.10].id], got[orders[0.12].id]
    assert cheap.delivered_kwh == pytest.approx(2 * 1.0 * 0.25) and cheap.penalty_eur == 0.0
    assert dear.delivered_kwh == pytest.approx(2 * 0.5 * 0.25)
    assert dear.payment_eur == pytest.approx(0.12 * 0.25)
    assert dear.penalty_eur == pytest.approx(0.40 * 0.25)
    assert cheap.delivered_kwh + dear.delivered_kwh == pytest.approx(2 * 1.5 * 0.25)


# --- both directions ---------------------------------------------------------------------------

MIDDAY = (48, 49, 50, 51)  # 12:00-13:00: the homes' PV flows back
EVENING_PEAK = (80, 81)


def test_back_flow_is_bought_away_downward_and_the_evening_upward_on_the_same_day(
    tmp_path: Path,
) -> None:
    """A 30 kW point: agr-1 exports 34 kW at midday (4 kW of back-flow too much) and draws
    33 kW in the evening (3 kW too much). The DSO asks for both, each its own request; the
    midday orders are downward (more load), paid when the meters show the load raised."""
    dso = DsoBrain("dso-1", [CongestionPoint("trafo-1", 30.0, frozenset({"agr-1"}))], 0.25,
                   ledger=Ledger(tmp_path / "dso.db"))  # fmt: skip
    net = [-34.0 if t in MIDDAY else 33.0 if t in EVENING_PEAK else 5.0 for t in range(96)]
    p = DPrognosis(round="agr-1.r0", day=DAY, congestion_point="trafo-1", net_kw=net, homes=5)
    ack, out = dso.on_message("agr-1", p, T0)
    assert ack.status == "ok"
    requests = {o.message.direction.value: o.message for o in out}  # type: ignore[union-attr]
    up, down = requests["up"], requests["down"]
    assert isinstance(up, FlexRequest) and isinstance(down, FlexRequest)
    assert up.id == "trafo-1.2026-01-15" and up.profile_kw == {80: 3.0, 81: 3.0}
    assert down.id == "trafo-1.2026-01-15.down"
    assert down.profile_kw == pytest.approx(dict.fromkeys(MIDDAY, 4.0))
    # an offer of the wrong direction for a request is not bought: only its own way counts
    orders = []
    for req, direction, price in ((up, "up", 0.10), (down, "down", 0.03)):
        blocks = [OfferBlock(ptu=t, direction=direction, kw=5.0, price=price)
                  for t in req.profile_kw]  # fmt: skip
        blocks.append(OfferBlock(ptu=80, direction="up" if direction == "down" else "down",
                                 kw=9.0, price=0.0))  # fmt: skip
        offer = FlexOffer(round="agr-1.r0", id=f"agr-1.{req.id}", day=DAY, request=req.id,
                          blocks=blocks)  # fmt: skip
        ack, more = dso.on_message("agr-1", offer, T0 + 5)
        assert ack.status == "ok"
        orders += [o.message for o in more if isinstance(o.message, FlexOrder)]
    by_way = {o.direction.value: o for o in orders}
    assert len(orders) == 2
    assert by_way["up"].profile_kw == pytest.approx({80: 3.0, 81: 3.0})
    assert by_way["down"].profile_kw == pytest.approx(dict.fromkeys(MIDDAY, 4.0))
    assert by_way["down"].price == 0.03
    check = dso.check("trafo-1", DAY)
    assert check is not None and check.safe is True
    assert max(abs(kw) for kw in check.after_kw()) == pytest.approx(30.0)

    # the meters: midday load raised by 3 kW of the 4 (export 31 kW), the evening fully given
    kwh = {t: 5.0 * 0.25 for t in range(96)}
    kwh |= {t: -31.0 * 0.25 for t in MIDDAY} | {t: 30.0 * 0.25 for t in EVENING_PEAK}
    metered = Metered(day=DAY, congestion_point="trafo-1", first_ptu=0,
                      net_kwh=[kwh[t] for t in range(96)], homes=5)  # fmt: skip
    ack, settled = dso.on_message("agr-1", metered, T0 + 86_400)
    assert ack.status == "ok", ack.detail
    paid = {s.message.order: s.message for s in settled if isinstance(s.message, Settlement)}
    d = paid[by_way["down"].id]
    assert d.delivered_kwh == pytest.approx(3.0 * 0.25 * 4)
    assert d.shortfall_kwh == pytest.approx(1.0 * 0.25 * 4)
    assert d.payment_eur == pytest.approx(0.03 * 3.0)
    assert paid[by_way["up"].id].delivered_kwh == pytest.approx(3.0 * 0.25 * 2)


# --- a restart ---------------------------------------------------------------------------------


def test_a_dso_restarted_mid_round_goes_on_with_its_checks(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    load = homes_load(rng)
    ps = prognoses(load)

    def dso() -> DsoBrain:
        point = CongestionPoint("trafo-1", LIMIT_KW, frozenset(AGGREGATORS))
        return DsoBrain("dso-1", [point], max_price=0.25, store=CheckStore(tmp_path / "c.db"))

    first = dso()
    requests = []
    for n, (agr, p) in enumerate(ps.items()):
        requests += first.on_message(agr, p, T0 + n)[1]
    request = requests[0].message
    assert isinstance(request, FlexRequest)
    # the DSO dies after asking; a new one takes its checks back from the store
    again = dso()
    check = again.check("trafo-1", DAY)
    assert check is not None and check.safe is None and check.answer_by == T0 + 2 + 120
    assert check.prognosis_kw() == pytest.approx([float(x) for x in load.sum(0)])
    assert check.requests[mo.Direction.UP].profile_kw == pytest.approx(request.profile_kw)
    ack, out = again.on_message("agr-a", ps["agr-a"], T0 + 5)  # resent: its ack was lost
    assert (ack.detail, out) == ("taken before", [])

    market_request = check.requests[mo.Direction.UP]
    tiers = aggregator_offers(market_request, load, rng)
    orders = []
    for agr in AGGREGATORS[:2]:
        assert again.on_message(agr, as_message(agr, request.id, tiers), T0 + 10)[0].status == "ok"
    # and dies again between two offers: the third one completes the purchase all the same
    third = dso()
    agr = AGGREGATORS[2]
    ack, orders = third.on_message(agr, as_message(agr, request.id, tiers), T0 + 11)
    assert ack.status == "ok"
    bought = third.check("trafo-1", DAY)
    assert bought is not None and bought.safe is True
    direct = procure(market_request, tiers)
    assert bought.procurements[mo.Direction.UP].total_cost_eur == pytest.approx(
        direct.total_cost_eur
    )
    # the same orders, ids and all, as a DSO that never stopped places
    plain, same = brain(), []
    for n, (a, p) in enumerate(ps.items()):
        plain.on_message(a, p, T0 + n)
    for a in AGGREGATORS:
        same += plain.on_message(a, as_message(a, request.id, tiers), T0 + 10)[1]
    assert [(o.to, o.message) for o in orders] == [(o.to, o.message) for o in same]
    assert len(orders) == len(direct.accepted)
    # after the purchase: the offers are known, the purchase the same, nothing bought twice
    fourth = dso()
    done = fourth.check("trafo-1", DAY)
    assert done is not None and done.safe is True and done.after_kw() == bought.after_kw()
    ack, out = fourth.on_message(agr, as_message(agr, request.id, tiers), T0 + 12)
    assert (ack.detail, out) == ("taken before", [])
