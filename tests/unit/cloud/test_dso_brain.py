"""The DSO's brain on seed 004's worked example (150 homes in three aggregators, a 300 kW
D-prognosis peak at 20:00 against a 280 kW transformer): the request is the excess, asked of
every aggregator; their offers bought at least cost; no PTU over the limit after the orders;
answers taken once; a silent aggregator does not block the check."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from homeflex.agents.messages import (
    Ack,
    DPrognosis,
    FlexOffer,
    FlexOrder,
    FlexRequest,
    OfferBlock,
)
from homeflex.cloud.dso.brain import CongestionPoint, DsoBrain
from homeflex.cloud.market import objects as mo
from homeflex.cloud.market.dso import congestion_request, procure
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
    assert check.procurement is not None and check.safe
    # the cheapest offers: the same purchase as procuring the tiers directly
    direct = procure(market_request, tiers)
    assert check.procurement.total_cost_eur == pytest.approx(direct.total_cost_eur)
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
