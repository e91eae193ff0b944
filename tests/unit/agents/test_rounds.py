"""The aggregator's round: idempotent answers, refusals with reasons, closing without the silent,
the A-plan, and resuming after a restart from what was stored."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from homeflex.agents.messages import FlexOffer, OfferBlock, PPlan, Prices
from homeflex.agents.rounds import Round, RoundStore

DAY = date(2026, 6, 21)
T0 = 1_782_000_000.0
HOMES = frozenset({"home-1", "home-2", "home-3"})


def plan(kw: float, revision: int = 0, round: str = "r1") -> PPlan:
    return PPlan(round=round, day=DAY, net_kw=[kw] * 96, revision=revision)


def offer(id: str, kw: float = 2.0) -> FlexOffer:
    block = OfferBlock(ptu=80, direction="up", kw=kw, price=0.1)
    return FlexOffer(round="r1", id=id, day=DAY, blocks=[block])


def test_answers_are_taken_once_and_a_higher_revision_replaces_a_lower() -> None:
    r = Round("r1", DAY, HOMES, answer_by=T0 + 60)
    ack, changed = r.take("home-1", plan(1.0), T0)
    assert (ack.status, changed) == ("ok", True)
    assert r.take("home-2", plan(2.0), T0)[1]
    ack, changed = r.take("home-1", plan(1.0), T0 + 1)  # sent again: its ack was lost
    assert (ack.status, changed) == ("ok", False) and "revision 0 was taken" in ack.detail
    assert r.take("home-1", plan(1.5, revision=1), T0 + 2)[1]
    ack, changed = r.take("home-1", plan(9.0, revision=0), T0 + 3)  # an older one, late
    assert (ack.status, changed) == ("ok", False)
    assert r.plans["home-1"].net_kw[0] == 1.5
    assert r.take("home-1", offer("h1.a"), T0)[1] and not r.take("home-1", offer("h1.a"), T0)[1]
    # the A-plan sums what was received; home-3 has not answered
    assert r.a_plan() == [3.5] * 96
    assert r.missing() == ["home-2", "home-3"] and not r.complete


@pytest.mark.parametrize(
    ("home", "answer", "says"),
    [
        ("home-9", plan(1.0), "home-9 was not asked in round r1"),
        ("home-1", plan(1.0, round="r0"), "answer for round 'r0', this is 'r1'"),
        ("home-1", PPlan(round="r1", day=date(2026, 6, 22), net_kw=[1.0], revision=0),
         "answer for 2026-06-22"),
        ("home-1", Prices(round="r1", day=DAY, import_eur_kwh=[0.1], export_eur_kwh=[0.0],
                          answer_by=0), "not Prices"),
    ],
)  # fmt: skip
def test_answers_that_do_not_belong_are_refused_with_the_reason(
    home: str, answer: PPlan, says: str
) -> None:
    r = Round("r1", DAY, HOMES, answer_by=T0 + 60)
    ack, changed = r.take(home, answer, T0)
    assert (ack.status, changed) == ("refused", False) and says in ack.detail
    assert r.plans == {} and r.offers == {}


def test_the_round_closes_when_all_answered_or_at_its_deadline_without_the_silent() -> None:
    r = Round("r1", DAY, frozenset({"home-1", "home-2"}), answer_by=T0 + 60)
    for h in ("home-1", "home-2"):
        r.take(h, plan(1.0), T0)
    assert not r.close_if_due(T0 + 1)  # plans, no offers yet
    r.take("home-1", offer("h1.a"), T0 + 2)
    r.take("home-2", offer("h2.a"), T0 + 3)
    assert r.close_if_due(T0 + 3) and r.closed_at == T0 + 3 and r.missing() == []
    late = Round("r2", DAY, HOMES, answer_by=T0 + 60)
    late.take("home-1", plan(1.0, round="r2"), T0)
    assert not late.close_if_due(T0 + 59) and late.close_if_due(T0 + 60)
    assert late.missing() == ["home-1", "home-2", "home-3"]  # home-1 sent no offer
    ack, _ = late.take("home-2", plan(1.0, round="r2"), T0 + 61)
    assert ack.status == "refused" and "closed" in ack.detail
    # home-1 missed the ack of the plan it sent in time: it is told the plan was taken
    ack, changed = late.take("home-1", plan(1.0, round="r2"), T0 + 62)
    assert (ack.status, changed) == ("ok", False)


def test_a_restarted_aggregator_resumes_the_round_from_its_store(tmp_path: Path) -> None:
    store = RoundStore(tmp_path / "rounds.db")
    r = Round("r1", DAY, HOMES, answer_by=T0 + 60)
    store.open_round(r)
    for home, answer in (("home-1", plan(1.0)), ("home-1", plan(2.0, 1)), ("home-2", offer("x"))):
        _, changed = r.take(home, answer, T0)
        if changed:
            store.save_answer(r, home, answer)
    store.close()

    again = RoundStore(tmp_path / "rounds.db")
    assert again.open_rounds() == ["r1"]
    back = again.load("r1")
    assert back is not None
    assert back == r  # homes, deadline, the latest revision and the offer
    assert back.take("home-1", plan(2.0, 1), T0 + 5)[0].status == "ok"  # resent: known
    back.close_if_due(T0 + 60)
    again.save_closed(back)
    assert again.open_rounds() == [] and again.load("nope") is None
