"""Operate: the aggregator keeps taking its homes' P-plan revisions after the round closed and,
in the PTUs locked by gate closure, orders from its own homes' unused blocks whatever the
portfolio plans above what it committed to the DSO: cheapest first, exactly the missing kW,
each block once, without a word to the DSO, and the same after a restart."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest

from homeflex.agents.messages import (
    Ack,
    DPrognosis,
    FlexOffer,
    FlexOrder,
    FlexRequest,
    OfferBlock,
    Payload,
    PPlan,
    Settlement,
)
from homeflex.agents.node import Outgoing
from homeflex.agents.rounds import RoundStore
from homeflex.cloud.aggregator.brain import AggregatorBrain, DayPrices, Settling
from homeflex.cloud.aggregator.meters import HistoryMeters
from homeflex.cloud.aggregator.operate import GATE_CLOSURE_S, locked, ptu_start
from homeflex.cloud.dso.brain import CongestionPoint, DsoBrain
from homeflex.cloud.market.settlement import Ledger

DAY = date(2026, 1, 15)
T0 = ptu_start(DAY - timedelta(days=1), 48)  # the day before, 12:00 UTC: day-ahead
NOW = ptu_start(DAY, 78) + 600  # 19:40 on the day: PTUs 78 (running) to 82 are locked
LOCKED = range(78, 83)
PEAK = range(76, 84)  # 19:00-21:00
# home → (price of its 0.4 kW blocks in the peak, €/kWh); home-4 is the one that deviates
PRICE = {"home-0": 0.10, "home-1": 0.06, "home-2": 0.08, "home-3": 0.12, "home-4": 0.20}
HOMES = sorted(PRICE)
TOLERANCE_KW = 0.2


def net_kw(peak_kw: float = 2.4, **more: float) -> list[float]:
    """2 kW all day, `peak_kw` in the peak; `p<n>=kW` adds kW in PTU n."""
    kw = [peak_kw if t in PEAK else 2.0 for t in range(96)]
    for key, extra in more.items():
        kw[int(key[1:])] += extra
    return kw


def plan(rid: str, revision: int = 0, **more: float) -> PPlan:
    return PPlan(round=rid, day=DAY, revision=revision, net_kw=net_kw(**more))


def offer(home: str, rid: str, direction: str = "up") -> FlexOffer:
    blocks = [OfferBlock(ptu=t, direction=direction, kw=0.4, price=PRICE[home]) for t in PEAK]
    return FlexOffer(round=rid, id=f"{home}.{rid}", day=DAY, blocks=blocks)


def flat(day: date) -> DayPrices:
    return DayPrices([0.30] * 96, [0.05] * 96)


class Portfolio:
    """One aggregator, its five homes answering in time, and, if given a limit, its DSO; the
    homes' net load in the peak is `peak_kw` each, and their blocks go in `direction`."""

    def __init__(
        self,
        path: Path,
        limit_kw: float | None = None,
        peak_kw: float = 2.4,
        direction: str = "up",
        settling: Settling | None = None,
    ) -> None:
        self.store = RoundStore(path)
        self.settling = settling
        self.agg = self.brain()
        self.dso = None
        if limit_kw is not None:
            point = CongestionPoint("trafo-1", limit_kw, frozenset({"agr-1"}))
            self.dso = DsoBrain("dso-1", [point], max_price=0.50)
        self.to_dso: list[Payload] = []
        self.to_homes: list[Outgoing] = []
        self.agg.open_round(DAY, T0)
        self.rid = self.agg.round_id(DAY)
        for home in HOMES:
            answers = (plan(self.rid, peak_kw=peak_kw), offer(home, self.rid, direction))
            for answer in answers:
                assert self.agg.on_message(home, answer, T0 + 5)[0].status == "ok"
        self.route(self.agg.on_tick(T0 + 6), T0 + 6)  # all answered: closes, D-prognosis out

    def brain(self) -> AggregatorBrain:
        return AggregatorBrain("agr-1", frozenset(HOMES), "dso-1", "trafo-1", self.store, flat,
                               redispatch_tolerance_kw=TOLERANCE_KW,
                               settling=self.settling)  # fmt: skip

    def route(self, out: list[Outgoing], now: float) -> list[Outgoing]:
        """Between the aggregator and the DSO at once; what goes to homes is returned."""
        homes = []
        while out:
            o = out.pop(0)
            if o.to == "dso-1":
                self.to_dso.append(o.message)
                if self.dso is not None:
                    ack, more = self.dso.on_message("agr-1", o.message, now)
                    assert ack.status == "ok", ack.detail
                    out += more
            elif o.to == "agr-1":
                ack, more = self.agg.on_message("dso-1", o.message, now)
                assert ack.status == "ok", ack.detail
                out += more
            else:
                homes.append(o)
        self.to_homes += homes
        return homes

    def revise(self, home: str, revision: int, **more: float) -> None:
        ack, out = self.agg.on_message(home, plan(self.rid, revision, **more), NOW)
        assert (ack.status, out) == ("ok", []), ack.detail

    def tick(self, now: float = NOW) -> list[FlexOrder]:
        before = len(self.to_dso)
        homes = self.route(self.agg.on_tick(now), now)
        assert len(self.to_dso) == before  # Operate says nothing to the DSO
        return list(orders(homes))


def orders(out: list[Outgoing]) -> Iterator[FlexOrder]:
    for o in out:
        assert isinstance(o.message, FlexOrder) and o.key == f"order:{o.message.id}"
        assert o.message.offer == f"{o.to}.{o.message.round}"  # the home's own offer
        yield o.message


def by_home(out: list[Outgoing]) -> dict[str, tuple[dict[int, float], float]]:
    """Each home's one order: kW per PTU (to the µW) and price."""
    got = {}
    for o in out:
        assert isinstance(o.message, FlexOrder) and o.to not in got
        got[o.to] = ({t: round(kw, 6) for t, kw in o.message.profile_kw.items()}, o.message.price)
    return got


def test_the_gate_locks_the_running_ptu_and_those_beginning_within_the_hour() -> None:
    assert [t for t in range(96) if locked(DAY, t, NOW)] == list(LOCKED)
    assert GATE_CLOSURE_S == 3600
    assert not any(locked(DAY, t, T0) for t in range(96))  # the day before: all open


def test_a_revision_over_the_commitment_is_redispatched_to_the_cheapest_unused_blocks(
    tmp_path: Path,
) -> None:
    p = Portfolio(tmp_path / "rounds.db")
    (prognosis,) = p.to_dso
    assert isinstance(prognosis, DPrognosis) and prognosis.net_kw[80] == pytest.approx(12.0)
    # home-4's heat pump will need 1 kW more at 20:00 (locked) and 20:45 (still open), after
    # the round closed: the revision is taken
    p.revise("home-4", 1, p80=1.0, p83=1.0)
    assert p.agg.operate.round(p.rid, DAY).plans["home-4"].revision == 1  # type: ignore[union-attr]

    got = p.tick()
    # exactly the missing 1 kW in PTU 80, cheapest first, each at its own price (pay-as-bid):
    # home-1's and home-2's whole 0.4 kW, 0.2 of home-0's; nothing for the open PTU 83
    assert by_home(p.to_homes) == {
        "home-1": ({80: 0.4}, 0.06),
        "home-2": ({80: 0.4}, 0.08),
        "home-0": ({80: 0.2}, 0.10),
    }
    assert sorted(o.id for o in got) == [f"{p.rid}.rd80.{n}" for n in range(3)]
    assert p.tick() == []  # the orders are in force though the homes have not re-planned yet
    # the homes take them into their plans: the portfolio is back on its commitment
    p.revise("home-1", 1, p80=-0.4)
    p.revise("home-2", 1, p80=-0.4)
    p.revise("home-0", 1, p80=-0.2)
    assert p.tick() == []

    # home-4 needs 0.3 kW more still: home-0's block was used once (0.2 kW of 0.4): never again
    p.revise("home-4", 2, p80=1.3, p83=1.0)
    (again,) = p.tick()
    assert p.to_homes[-1].to == "home-3" and again.id == f"{p.rid}.rd80.3"
    assert again.profile_kw == {80: pytest.approx(0.3)} and again.price == 0.12

    # and 1 kW more: 0.4 kW of home-4's own block left, then nothing; that is logged once
    p.revise("home-3", 1, p80=-0.3)
    p.revise("home-4", 3, p80=2.3, p83=1.0)
    (last,) = p.tick()
    assert p.to_homes[-1].to == "home-4" and last.profile_kw == {80: pytest.approx(0.4)}
    p.revise("home-4", 4, p80=1.9, p83=1.0)
    assert p.tick() == [] and p.agg.operate.days[DAY][0].short == {80}


def test_nothing_is_ordered_within_the_tolerance_or_outside_the_gate(tmp_path: Path) -> None:
    p = Portfolio(tmp_path / "rounds.db")
    p.revise("home-4", 1, p80=TOLERANCE_KW)  # just the tolerance
    p.revise("home-3", 1, p83=3.0)  # 20:45, more than an hour ahead: open for trading
    assert p.tick() == []
    # a quarter of an hour later PTU 83 is locked: re-dispatched then, not before
    later = p.tick(NOW + 900)
    assert {o.id for o in later} == {f"{p.rid}.rd83.{n}" for n in range(5)}
    assert sum(o.profile_kw[83] for o in later) == pytest.approx(2.0)  # every 0.4 kW block
    assert p.agg.operate.days[DAY][0].short == {83}  # 1 kW short, and said so


def test_the_dso_sale_is_the_commitment_and_a_refused_share_is_redispatched(
    tmp_path: Path,
) -> None:
    # 5 × 2.4 kW in the peak against 11.2 kW: the DSO buys 0.8 kW per peak PTU day-ahead,
    # the two cheapest homes' blocks (home-1, home-2)
    p = Portfolio(tmp_path / "rounds.db", limit_kw=11.2)
    shares = by_home(p.to_homes)
    assert sorted(shares) == ["home-1", "home-2"]
    assert all(profile == dict.fromkeys(PEAK, 0.4) for profile, _ in shares.values())
    # at 19:40 the homes have not re-planned: the shares are counted in force, nothing to do
    assert p.tick() == []
    p.revise("home-2", 1, peak_kw=2.0)
    assert p.tick() == []
    # home-1 refuses its share: the sale stands, so the portfolio makes up 0.4 kW in each
    # locked PTU from the cheapest block no order took: home-0's (home-1's and home-2's were)
    (refused,) = [o for o in p.to_homes if o.to == "home-1"]
    p.agg.on_delivered(refused.key or "", Ack(status="refused", detail="cannot"), NOW)
    got = p.tick()
    new = p.to_homes[-len(got) :]
    assert {o.to for o in new} == {"home-0"}
    assert {t: o.profile_kw[t] for o in got for t in o.profile_kw} == pytest.approx(
        dict.fromkeys(LOCKED, 0.4)
    )
    assert {o.price for o in got} == {0.10}
    # a DSO request now: the aggregator offers only PTUs after the gate
    req = FlexRequest(round=p.rid, id="late", day=DAY, congestion_point="trafo-1",
                      profile_kw={80: 0.4, 83: 0.4}, max_price=0.5, answer_by=NOW + 60)  # fmt: skip
    ack, out = p.agg.on_message("dso-1", req, NOW)
    (late,) = [o.message for o in out]
    assert ack.status == "ok" and isinstance(late, FlexOffer)
    assert {b.ptu for b in late.blocks} == {83}


def test_revisions_and_orders_survive_a_restart(tmp_path: Path) -> None:
    p = Portfolio(tmp_path / "rounds.db")
    p.revise("home-4", 1, p80=1.0)
    first = p.tick()
    assert len(first) == 3
    # the aggregator dies; a new one opens the same store
    p.agg = p.brain()
    r = p.agg.operate.round(p.rid, DAY)
    assert r is not None and r.plans["home-4"].revision == 1 and r.plans["home-4"].net_kw[80] == 3.4
    assert p.tick() == []  # the orders sent before are known: none again
    p.revise("home-4", 1, p80=1.0)  # resent: its ack was lost; taken before
    p.revise("home-4", 2, p80=1.3)
    (again,) = p.tick()  # not home-0's block again: home-3's
    assert p.to_homes[-1].to == "home-3" and again.id == f"{p.rid}.rd80.3"


def test_back_flow_beyond_a_downward_sale_is_redispatched_to_the_homes_that_take_more(
    tmp_path: Path,
) -> None:
    # the homes export 2.4 kW each in the peak: 12 kW back through a transformer for 11.2; the
    # DSO buys 0.8 kW more load per peak PTU day-ahead from the two cheapest (home-1, home-2)
    p = Portfolio(tmp_path / "rounds.db", limit_kw=11.2, peak_kw=-2.4, direction="down")
    shares = by_home(p.to_homes)
    assert sorted(shares) == ["home-1", "home-2"]
    assert all(profile == dict.fromkeys(PEAK, 0.4) for profile, _ in shares.values())
    assert p.tick() == []  # the shares are counted in force
    # home-4's PV will send back 1 kW more at 20:00: the floor the DSO bought is broken, and
    # the unused downward blocks make it up, cheapest first
    p.revise("home-4", 1, peak_kw=-2.4, p80=-1.0)
    got = p.tick()
    assert {o.direction for o in got} == {"down"}
    assert by_home(p.to_homes[-len(got) :]) == {
        "home-0": ({80: 0.4}, 0.10),
        "home-3": ({80: 0.4}, 0.12),
        "home-4": ({80: 0.2}, 0.20),
    }


def test_less_load_than_committed_is_no_breach_where_nothing_was_sold_downward(
    tmp_path: Path,
) -> None:
    p = Portfolio(tmp_path / "rounds.db")
    p.revise("home-4", 1, p80=-1.0)  # 1 kW less than its P-plan said: nobody minds
    assert p.tick() == []


def test_redispatch_orders_are_settled_against_the_plan_they_were_ordered_on(
    tmp_path: Path,
) -> None:
    p = Portfolio(tmp_path / "rounds.db")
    p.revise("home-4", 1, p80=1.0)
    assert len(p.tick()) == 3  # home-1 0.4 kW, home-2 0.4, home-0 0.2 at 20:00, from 2.4 kW
    # the meters at 20:00: home-1 took 2.0 kW (all of it), home-2 2.2 (half), home-0 2.4 (none)
    metered = {h: {t: 2.0 * 0.25 for t in range(96)} for h in HOMES}
    for home, kw in (("home-1", 2.0), ("home-2", 2.2), ("home-0", 2.4), ("home-4", 3.4)):
        metered[home][80] = kw * 0.25
    ledger = Ledger(tmp_path / "ledger.db")
    out = p.agg.settle(DAY, metered, ledger, penalty_eur_kwh=0.5)
    got = {o.to: o.message for o in out}
    assert sorted(got) == ["home-0", "home-1", "home-2"]  # home-4 was not ordered anything
    s1, s2, s0 = got["home-1"], got["home-2"], got["home-0"]
    assert isinstance(s1, Settlement) and isinstance(s2, Settlement)
    assert isinstance(s0, Settlement)
    assert (s1.delivered_kwh, s1.shortfall_kwh) == pytest.approx((0.1, 0.0))
    assert (s1.payment_eur, s1.penalty_eur) == pytest.approx((0.06 * 0.1, 0.0))
    assert (s2.delivered_kwh, s2.shortfall_kwh) == pytest.approx((0.05, 0.05))
    assert s2.payment_eur == pytest.approx(0.08 * 0.05)
    assert s2.penalty_eur == pytest.approx(0.5 * 0.05)
    assert (s0.delivered_kwh, s0.shortfall_kwh) == pytest.approx((0.0, 0.05))
    assert [p["baseline_kw"] for e in ledger.entries() for p in e.data()["periods"]] == [2.4] * 3
    # a restarted aggregator knows what it ordered, and the ledger what it settled: not again
    p.agg = p.brain()
    assert p.agg.settle(DAY, metered, ledger, penalty_eur_kwh=0.5) == []


def test_a_day_with_redispatch_and_no_sale_is_settled_on_the_tick_from_the_history(
    tmp_path: Path,
) -> None:
    from tests.unit.cloud.test_settle_day import DAY_END, History

    history = History(tmp_path / "history")
    ledger = Ledger(tmp_path / "ledger.db")
    settling = Settling(HistoryMeters.open(history.dir.root), ledger, 0.5, after_s=1800.0)
    p = Portfolio(tmp_path / "rounds.db", settling=settling)
    p.revise("home-4", 1, p80=1.0)
    assert len(p.tick()) == 3
    for home, kw in (("home-1", 2.0), ("home-2", 2.2), ("home-0", 2.4), ("home-4", 3.4)):
        history.day(home, {t: 2.4 for t in PEAK} | {80: kw})
    history.day("home-3", {t: 2.4 for t in PEAK})
    # a restarted aggregator: it finds the day in its store, though nothing was sold that day
    p.agg = p.brain()
    out = p.agg.on_tick(DAY_END + 1800.0)
    assert all(isinstance(o.message, Settlement) for o in out)  # no sum for the DSO
    delivered = {o.to: o.message.delivered_kwh for o in out}  # type: ignore[union-attr]
    assert delivered == pytest.approx({"home-1": 0.1, "home-2": 0.05, "home-0": 0.0})
    assert settling.done == {DAY}
    assert p.agg.on_tick(DAY_END + 1800.0 + 3600) == []
