"""Seed 001's comparison on our machine: co-optimization, price-response and the market auction
on the same synthetic multi-carrier systems (16 generators and 14 prosumers, growing by 6 and 4
a step to 90 agents; 24 h to 168 h) and on a neighbourhood of our own homes. Prints the cost gap
to co-optimization, price differences, iterations, run time and messages per method, with the
machine. Price-response is the slow one (sequential agents, hundreds of iterations): by default
it runs on part of the grid only (--pr-granularities, --pr-hours; --full for all of it).
Usage: python -m bench.market_coordination [--granularities 1 2 ... 7] [--hours 24 48 ... 168]
       [--pr-granularities 1 4 7] [--pr-hours 24 48 72] [--full] [--homes 10] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import dataclass

import numpy as np

from bench.machine import machine
from bench.planner_solve import home
from homeflex.cloud.market import coordination as co
from homeflex.cloud.market import mies

PAPER = (
    "paper (DE 2013, one day): co-optimization €314.2 M; price-response +0.03 %; "
    "market auction +9.74 %"
)


def price_grid(inst: mies.Instance) -> list[float]:
    """The auction variant with a finer bid curve: 30 more candidate prices, evenly from 0 to
    1.5 × the highest forecast price."""
    top = 1.5 * float(co.merit_order_forecast(inst).max())
    return [float(p) for p in np.linspace(0, min(top, inst.price_cap), 31)[1:]]


_DONE: dict[tuple[str, str], mies.CoordinationResult] = {}


def solve(method: str, inst: mies.Instance, cap: int) -> mies.CoordinationResult:
    """Each method once per instance (the sweeps share the 30-agent, 24-h system)."""
    key = (method, inst.name)
    if key not in _DONE:
        options = {"max_iterations": cap} if method == "price-response" else {}
        _DONE[key] = co.run(method, inst, **options)
    return _DONE[key]


@dataclass
class Row:
    label: str
    result: mies.CoordinationResult


def gap(r: mies.CoordinationResult, ref: mies.CoordinationResult) -> str:
    return f"{100 * (r.cost / ref.cost - 1):+8.3f} %"


def dprice(r: mies.CoordinationResult, ref: mies.CoordinationResult) -> float:
    return float(np.mean(np.abs(r.prices - ref.prices)))


def headline(inst: mies.Instance, cap: int) -> None:
    """The paper's Fig. 7 comparison on one day of our smallest system, with the auction's
    variants: a perfect forecast (the co-optimization's prices) and a finer bid curve."""
    unit = f"€/{inst.unit}h"
    grid = price_grid(inst)
    best = solve("co-optimization", inst, cap)
    rows = [
        Row("co-optimization", best),
        Row("price-response", solve("price-response", inst, cap)),
        Row("market auction (Algorithm 1)", solve("market-auction", inst, cap)),
        Row("  … with a perfect forecast", co.market_auction(inst, forecast="perfect")),
        Row("  … with 30 more bid prices", co.market_auction(inst, extra_candidates=grid)),
    ]
    print(
        f"\n{inst.name}: {len(inst.generators)} generators, {len(inst.prosumers)} prosumers, "
        f"{inst.hours} h"
    )
    print(f"  {PAPER}")
    print(
        f"  {'method':30} {'cost €':>14} {'gap':>10}  {'mean |Δλ|':>9} {'max |Δλ|':>9} "
        f"{'peak':>7} @h {'iter':>5} {'messages':>9} {'s':>7}  status"
    )
    for row in rows:
        r = row.result
        diff = np.abs(r.prices - best.prices)
        short = r.details.get("shortfall")
        print(
            f"  {row.label:30} {r.cost:14,.0f} {gap(r, best):>10}  {diff.mean():9.3f} "
            f"{diff.max():9.3f} {r.prices.max():7.2f} {int(r.prices.argmax()):2d} "
            f"{r.iterations:5d} {r.messages:9,d} {r.seconds:7.2f}  {r.status}"
            + (f" (shortfall {short:.2f} {inst.unit}h)" if short else "")
        )
    pr = rows[1].result
    print(
        f"  prices in {unit}; price-response: ‖r‖ {pr.primal_residual:.3f}, s "
        f"{pr.dual_residual:.3f}, final ρ {pr.details['rho']:.3g}"
    )


def sweep(title: str, cases: list[tuple[mies.Instance, bool]], cap: int) -> None:
    """Run time (absolute, and relative to the method's smallest instance as in the paper's
    Fig. 8), cost gap and price difference to co-optimization, iterations, messages."""
    print(f"\n{title}")
    print(
        f"  {'agents':>6} {'hours':>5} | {'CO s':>6} {'×':>5} | {'PR s':>7} {'×':>5} {'iter':>5} "
        f"{'gap':>10} {'|Δλ|':>6} | {'MA s':>6} {'×':>5} {'gap':>10} {'|Δλ|':>6} "
        f"{'MA+ gap':>10} | {'messages CO / PR / MA':>25}"
    )
    first: dict[str, float] = {}
    for inst, with_pr in cases:
        best = solve("co-optimization", inst, cap)
        ma = solve("market-auction", inst, cap)
        finer = co.market_auction(inst, extra_candidates=price_grid(inst))
        pr = solve("price-response", inst, cap) if with_pr else None
        for key, r in (("co", best), ("ma", ma), ("pr", pr)):
            if r is not None:
                first.setdefault(key, r.seconds)
        pr_cols = (
            f"{pr.seconds:7.1f} {pr.seconds / first['pr']:5.1f} {pr.iterations:5d}"
            f"{' ' if pr.status == 'converged' else '*'}{gap(pr, best):>10} "
            f"{dprice(pr, best):6.3f} "
            if pr
            else f"{'—':>7} {'':5} {'':5}  {'':>10} {'':6} "
        )
        print(
            f"  {inst.agents:6d} {inst.hours:5d} | {best.seconds:6.2f} "
            f"{best.seconds / first['co']:5.1f} | {pr_cols}| {ma.seconds:6.2f} "
            f"{ma.seconds / first['ma']:5.1f} {gap(ma, best):>10} {dprice(ma, best):6.2f} "
            f"{gap(finer, best):>10} | "
            f"{best.messages:7,d} / {f'{pr.messages:,d}' if pr else '—':>7} / {ma.messages:7,d}"
        )
    print(
        "  (× is the run time over the method's first row; * price-response hit its cap; "
        "MA+ is the auction with 30 more bid prices)"
    )


def neighbourhood(homes: int, seed: int, cap: int) -> None:
    rng = random.Random(seed)
    inst = mies.neighbourhood([home(rng, 96, 0.005) for _ in range(homes)], hours=24)
    grid = price_grid(inst)
    best = co.co_optimization(inst)
    print(
        f"\nneighbourhood of {homes} of our homes (bench.planner_solve's typical home: PV, "
        f"battery, EV, heat pump, appliances) behind a {inst.generators[0].p_max[0]:.0f} kW "
        "transformer, 24 h"
    )
    rows = [
        Row("co-optimization", best),
        Row("price-response", co.price_response(inst, max_iterations=cap)),
        Row("market auction (Algorithm 1)", co.market_auction(inst)),
        Row("  … with a perfect forecast", co.market_auction(inst, forecast="perfect")),
        Row("  … with 30 more bid prices", co.market_auction(inst, extra_candidates=grid)),
    ]
    for row in rows:
        r = row.result
        short = r.details.get("shortfall")
        print(
            f"  {row.label:30} {r.cost:8.2f} € {gap(r, best):>10}  mean |Δλ| "
            f"{dprice(r, best):.4f} €/kWh  {r.iterations:4d} iterations  {r.messages:6,d} "
            f"messages  {r.seconds:6.2f} s  {r.status}"
            + (f", shortfall {short:.1f} kWh" if short else "")
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--granularities", type=int, nargs="+", default=list(range(1, 8)))
    parser.add_argument("--hours", type=int, nargs="+", default=list(range(24, 169, 24)))
    parser.add_argument("--pr-granularities", type=int, nargs="+", default=[1, 4, 7])
    parser.add_argument("--pr-hours", type=int, nargs="+", default=[24, 48, 72])
    parser.add_argument("--full", action="store_true", help="price-response on the whole grid")
    parser.add_argument("--pr-cap", type=int, default=2000, help="price-response iteration cap")
    parser.add_argument(
        "--homes", type=int, default=10, help="homes in the neighbourhood (0: skip)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    began = time.perf_counter()
    print(machine())
    headline(mies.synthetic(1, 24, args.seed), args.pr_cap)
    by_agents = [
        (mies.synthetic(g, 24, args.seed), args.full or g in args.pr_granularities)
        for g in args.granularities
    ]
    by_hours = [
        (mies.synthetic(1, h, args.seed), args.full or h in args.pr_hours) for h in args.hours
    ]
    sweep("run time against the number of agents (24 h)", by_agents, args.pr_cap)
    sweep("run time against the horizon (30 agents)", by_hours, args.pr_cap)
    if args.homes:
        neighbourhood(args.homes, args.seed, args.pr_cap)
    print(f"\ntotal {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
