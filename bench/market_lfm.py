"""LFM benchmark (seed 002): clearing time of lfm-impact and lfm-probability for 1,000 and
10,000 seller bids per period × 96 periods with one DSO buyer per period, with and without the
exact trim of blocks that cannot clear; then VCG and Shapley solve counts and times for seven
players (the seed's DSO and six FSPs) over a day of 24 hourly periods.

The DSO's curve each period is Table 3-4's 17:00 request (hump-shaped, g0..g3), jittered (kW
±20 %, prices ±10 %) and scaled with the fleet. Each seller bids three ascending blocks of 0.5-3
kW (5.25 kW on average), one in ten starting free. Two demands: "light", the DSO asks about 30 %
of what is on offer and the LP relaxation already fills g0 first (the order does not bind);
"heavy", about 60 %, g0 cannot be filled at its 0.3 while g1-g3 can, so in every period the
order binds and the MILP needs its fill states.
Usage: python -m bench.market_lfm [--sellers 1000 10000] [--periods 96] [--trim both|on|off]
"""

from __future__ import annotations

import argparse
import random
import time

from bench.machine import machine
from homeflex.cloud.market import lfm
from homeflex.cloud.market.objects import Bid, Block, Side
from homeflex.cloud.market.payments import Welfare, shapley, vcg

TABLE_3_4_17H = [(281.11, 0.3), (70.28, 2.0), (24.70, 9.0), (7.52, 1.0)]  # kW, SEK/kW


def dso_bid(rng: random.Random, period: int, scale: float) -> Bid:
    return Bid(
        id=f"d0-{period}",
        participant="dso",
        period=period,
        side=Side.BUY,
        blocks=[
            Block(quantity=q * scale * rng.uniform(0.8, 1.2), price=u * rng.uniform(0.9, 1.1))
            for q, u in TABLE_3_4_17H
        ],
        monotone=False,
    )


def seller_bid(rng: random.Random, who: str, period: int, kw: tuple[float, float]) -> Bid:
    price = 0.0 if rng.random() < 0.1 else rng.uniform(0.0, 0.3)
    blocks = []
    for _ in range(3):
        blocks.append(Block(quantity=rng.uniform(*kw), price=price))
        price += rng.uniform(0.05, 1.0)
    return Bid(id=f"{who}-{period}", participant=who, period=period, side=Side.SELL, blocks=blocks)


DEMAND = {"light": 4.0, "heavy": 8.0}  # the DSO's Table 3-4 kW × this × sellers / 1,000


def fleet(sellers: int, periods: int, demand: str) -> list[Bid]:
    rng = random.Random(sellers)
    bids = []
    for t in range(periods):
        bids.append(dso_bid(rng, t, DEMAND[demand] * sellers / 1000))
        bids.extend(seller_bid(rng, f"h{i}", t, (0.5, 3.0)) for i in range(sellers))
    return bids


def run_clearing(sellers: int, periods: int, demand: str, trims: list[bool]) -> None:
    began = time.perf_counter()
    bids = fleet(sellers, periods, demand)
    built = time.perf_counter() - began
    print(
        f"{sellers:,} sellers × {periods} periods, {demand} demand: {len(bids):,} bids, "
        f"{sum(len(b.blocks) for b in bids):,} blocks (built as Bid objects in {built:.1f} s, "
        "not counted below)"
    )
    welfare: dict[str, float] = {}
    for trim in trims:
        for ordered in (False, True):
            method = lfm.LfmClearing(
                "lfm-probability" if ordered else "lfm-impact", ordered, trim=trim
            )
            began = time.perf_counter()
            result = method.clear(bids)
            took = time.perf_counter() - began
            m = result.metadata
            same = ""
            if method.name in welfare:
                agree = abs(result.welfare - welfare[method.name]) < 1e-6
                same = f", same welfare as trimmed: {agree}"
            welfare.setdefault(method.name, result.welfare)
            priced = [p for p in result.prices.values() if p is not None]
            how = (
                ", ".join(f"{k} {v}" for k, v in m["ordered_by"].items() if v)
                if ordered
                else f"mean price {sum(priced) / len(priced):.3f} €/kWh"
            )
            print(
                f"  {method.name:16s} trim {'on ' if trim else 'off'}: {took:6.2f} s; "
                f"{m['blocks_solved']:,} blocks solved, {m['solver_calls']} solver calls taking "
                f"{m['solver_s']:.2f} s; "
                f"welfare {result.welfare:,.1f} €; {how}{same}"
            )


def run_payments(players: int, periods: int) -> None:
    rng = random.Random(7)
    bids = [dso_bid(rng, t, 0.25) for t in range(periods)]
    for f in range(1, players):
        bids.extend(seller_bid(rng, f"fsp{f}", t, (5.0, 25.0)) for t in range(periods))
    print(f"{players} players (a DSO and {players - 1} FSPs), {periods} hourly periods:")
    for method in (lfm.IMPACT, lfm.PROBABILITY):
        result = method.clear(bids)
        for rule in (vcg, shapley):
            v = Welfare(method, bids)  # a fresh cache: each rule's own count
            began = time.perf_counter()
            report = rule(result, v)
            took = time.perf_counter() - began
            extra = (
                f"deficit {report.budget_balance:,.1f}"
                if rule is vcg
                else f"Σ {report.budget_balance:,.2g}, stable {report.stable} "
                f"({len(report.excess or [])} coalitions with a positive excess)"
            )
            print(
                f"  {method.name:16s} {report.rule:8s}: {v.solves:3d} clearings "
                f"({2**players:,} coalitions, those without both sides cost none) in "
                f"{took:.2f} s, {took / max(v.solves, 1) * 1000:.1f} ms each; "
                f"welfare {result.welfare:,.1f}, {extra}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sellers", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--periods", type=int, default=96)
    parser.add_argument("--trim", choices=["both", "on", "off"], default="both")
    parser.add_argument("--players", type=int, default=7)
    args = parser.parse_args()
    trims = {"both": [True, False], "on": [True], "off": [False]}[args.trim]
    print(machine())
    for sellers in args.sellers:
        for demand in DEMAND:
            run_clearing(sellers, args.periods, demand, trims)
    run_payments(args.players, 24)


if __name__ == "__main__":
    main()
