"""Seed 004's worked example through the agents' brains: 150 homes in three aggregators of 50,
a 300 kW D-prognosis peak at 20:00 against a 280 kW transformer. Every home answers its
aggregator's prices with its P-plan and an offer; each aggregator sends the DSO its sum and,
asked, its tiers; the DSO buys the cheapest and orders; each aggregator splits its orders among
its homes. Afterwards no PTU is over 280 kW, the purchase is the cheapest one, and the homes'
orders add up to what the DSO bought from their aggregator."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pytest

from homeflex.agents.messages import FlexOffer, FlexOrder, OfferBlock, Payload, PPlan, Prices
from homeflex.agents.node import Outgoing
from homeflex.agents.rounds import RoundStore
from homeflex.cloud.aggregator.brain import AggregatorBrain, DayPrices
from homeflex.cloud.dso.brain import CongestionPoint, DsoBrain, _tiers
from homeflex.cloud.market.dso import procure
from homeflex.cloud.market.objects import Direction
from tests.unit.market.test_dso import AGGREGATORS, HOMES_PER_AGR, LIMIT_KW, homes_load

DAY = date(2026, 1, 15)
T0 = 1_768_000_000.0
PRICES = {"agr-a": (0.08, 0.20), "agr-b": (0.10, 0.26), "agr-c": (0.05, 0.30)}


def test_the_worked_example_through_the_brains(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    load = homes_load(rng)
    homes = {agr: [f"{agr}-h{k:02d}" for k in range(HOMES_PER_AGR)] for agr in AGGREGATORS}
    row = {h: n * HOMES_PER_AGR + k for n, agr in enumerate(AGGREGATORS)
           for k, h in enumerate(homes[agr])}  # fmt: skip
    share = {h: rng.uniform(0.04, 0.16) for h in row}
    price = {h: round(rng.uniform(*PRICES[h[:5]]), 3) for h in row}

    held: dict[str, dict[int, float]] = {}  # the orders each home holds

    def answer(home: str, prices: Prices) -> list[Payload]:
        """The home's plan: its load, less what it was ordered to give up."""
        kw = load[row[home]].copy()
        for t, given in held.get(home, {}).items():
            kw[t] -= given
        plan = PPlan(round=prices.round, day=prices.day, revision=0, net_kw=[float(x) for x in kw])
        blocks = [
            OfferBlock(
                ptu=t,
                direction="up",
                kw=float(share[home] * kw[t]),
                price=price[home],
                divisible=row[home] % 3 == 0,
            )
            for t in range(72, 90)
        ]
        return [plan, FlexOffer(round=prices.round, id=f"{home}.o", day=prices.day, blocks=blocks)]

    aggs = {
        agr: AggregatorBrain(agr, frozenset(homes[agr]), "dso", "trafo", RoundStore(
            tmp_path / f"{agr}.db"), lambda d: DayPrices([0.25] * 96, [0.05] * 96))
        for agr in AGGREGATORS
    }  # fmt: skip
    dso = DsoBrain("dso", [CongestionPoint("trafo", LIMIT_KW, frozenset(AGGREGATORS))], 0.25)
    to_dso: list[Payload] = []
    home_orders: list[Outgoing] = []

    def route(sender: str, out: list[Outgoing]) -> None:
        queue = [(sender, o) for o in out]
        while queue:
            frm, o = queue.pop(0)
            if o.to == "dso":
                to_dso.append(o.message)
                ack, more = dso.on_message(frm, o.message, T0)
                queue += [("dso", m) for m in more]
            elif o.to in aggs:
                ack, more = aggs[o.to].on_message(frm, o.message, T0)
                queue += [(o.to, m) for m in more]
            elif isinstance(o.message, Prices):
                for m in answer(o.to, o.message):
                    ack, more = aggs[frm].on_message(o.to, m, T0)
                    assert ack.status == "ok" and more == []
                continue
            else:
                home_orders.append(o)
                continue
            assert ack.status == "ok", ack.detail

    for agr, brain in aggs.items():
        route(agr, brain.open_round(DAY, T0))
    for agr, brain in aggs.items():
        route(agr, brain.on_tick(T0 + 1))  # every home answered: the rounds close

    check = dso.check("trafo", DAY)

    assert check is not None
    assert max(check.prognosis_kw()) == pytest.approx(300.0)  # the three sums: the 300 kW peak
    assert list(check.procurements) == [Direction.UP] and check.safe
    procurement = check.procurements[Direction.UP]
    assert max(check.after_kw()) <= LIMIT_KW + 1e-6
    # the cheapest purchase of the tiers the aggregators offered
    offers = [m for m in to_dso if isinstance(m, FlexOffer)]
    assert sorted(o.id.split(".")[0] for o in offers) == sorted(AGGREGATORS)
    tiers = [t for o in offers for t in _tiers(o.id.split(".")[0], o, Direction.UP)]
    direct = procure(check.requests[Direction.UP], tiers)
    assert procurement.total_cost_eur == pytest.approx(direct.total_cost_eur)
    # each aggregator's home orders add up to what the DSO bought from it, PTU by PTU
    bought: dict[tuple[str, int], float] = {}
    for oid, profile in procurement.accepted.items():
        for t, kw in profile.items():
            key = (procurement.offers[oid].participant, t)
            bought[key] = bought.get(key, 0.0) + kw
    split: dict[tuple[str, int], float] = {}
    for o in home_orders:
        assert isinstance(o.message, FlexOrder)
        for t, kw in o.message.profile_kw.items():
            key = (o.to[:5], t)
            split[key] = split.get(key, 0.0) + kw
    assert split == pytest.approx(bought)
    # the next round: the homes plan again holding their orders; the aggregators' new sums
    # show the sold flexibility, the DSO validates again and needs nothing more
    for o in home_orders:
        assert isinstance(o.message, FlexOrder)
        for t, kw in o.message.profile_kw.items():
            held.setdefault(o.to, {})[t] = held.get(o.to, {}).get(t, 0.0) + kw
    for agr, brain in aggs.items():
        route(agr, brain.open_round(DAY, T0 + 10, seq=1))
    for agr, brain in aggs.items():
        route(agr, brain.on_tick(T0 + 11))
    again = dso.check("trafo", DAY)
    assert again is not None
    assert again is not None and again is not check and again.generation == 1
    assert again.prognosis_kw() == pytest.approx(check.after_kw())
    assert again.safe is True and again.requests == {}  # honoured: nothing asked twice
    assert procurement.total_cost_eur == pytest.approx(direct.total_cost_eur)
    # no home got an order above its own block, and none at a price below its own ask
    for o in home_orders:
        assert isinstance(o.message, FlexOrder)
        assert o.message.price >= price[o.to] - 1e-9
        for t, kw in o.message.profile_kw.items():
            assert kw <= share[o.to] * load[row[o.to]][t] + 1e-9
