"""Local flexibility market (seed 002 §2.3): the capacity-limit product cleared period by period,
impact-based (an LP whose balance dual is the uniform price) or probability-based (a MILP in which
a granularity bid's blocks fill in order)."""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import product
from typing import Any

import numpy as np
from numpy.typing import NDArray
from ortools.linear_solver.python import model_builder_helper as mbh

from homeflex.cloud.market.objects import Award, Bid, ClearingResult, Side
from homeflex.cloud.market.registry import register

PERIOD_H = 1.0  # h: the seed's LFM clears hourly
EPS = 1e-7  # kW: a block within this of empty or full counts as empty or full
TIME_LIMIT_S = 120.0  # per model; a MILP that needs longer is refused, not half-solved
CHUNK_BLOCKS = 2000  # blocks per LP model: one solver start for a small round, bounded models
ENUMERATE = 64  # fill states of a period's granularity bids worth trying one LP each before SCIP

Floats = NDArray[np.float64]
Ints = NDArray[np.int64]
Bools = NDArray[np.bool_]


class ClearingError(RuntimeError):
    """A round the solver could not clear to optimality."""


@dataclass
class _Period:
    """One period's bids as flat arrays of blocks, bids in input order, blocks in bid order."""

    bids: list[Bid]
    first: Ints  # index of each bid's first block
    end: Ints  # index after each bid's last block
    bid_of: Ints  # bid index of each block
    price: Floats  # €/kWh
    quantity: Floats  # kW
    sign: Floats  # +1 for a buyer's block, -1 for a seller's
    in_order: Bools  # per bid: filling its blocks in order is optimal (see _granular)

    @classmethod
    def of(cls, bids: list[Bid]) -> _Period:
        sizes = np.fromiter((len(b.blocks) for b in bids), np.int64, len(bids))
        end = np.cumsum(sizes)
        first = end - sizes
        price = np.fromiter((k.price for b in bids for k in b.blocks), np.float64)
        quantity = np.fromiter((k.quantity for b in bids for k in b.blocks), np.float64)
        bid_sign = np.fromiter((1.0 if b.side == Side.BUY else -1.0 for b in bids), np.float64)
        bid_of = np.repeat(np.arange(len(bids), dtype=np.int64), sizes)
        sign = bid_sign[bid_of]
        # a buyer's curve whose prices never rise, a seller's whose prices never fall
        worse = np.zeros(len(price), np.bool_)
        worse[1:] = (sign[1:] * (price[1:] - price[:-1]) > 0) & (bid_of[1:] == bid_of[:-1])
        in_order = ~np.logical_or.reduceat(worse, first) if len(bids) else np.zeros(0, np.bool_)
        return cls(bids, first, end, bid_of, price, quantity, sign, in_order)

    def totals(self, x: Floats) -> Floats:
        return np.add.reduceat(x, self.first) if len(self.bids) else np.zeros(0)

    def granular(self) -> list[int]:
        """Bids whose blocks may need the order enforced: those whose curve is not monotone.
        On a buyer's curve whose prices never rise (a seller's never fall), filling in order is
        the best use of any cleared total, so `_refill` puts those in order at no loss."""
        return [int(i) for i in np.flatnonzero(~self.in_order)]

    def fills_in_order(self, x: Floats) -> bool:
        """No block of a granular bid holds kW while an earlier block of it has room."""
        for b in self.granular():
            lo, hi = int(self.first[b]), int(self.end[b])
            room = self.quantity[lo:hi] - x[lo:hi] > EPS
            used = x[lo:hi] > EPS
            if used.any() and room[: int(np.flatnonzero(used)[-1])].any():
                return False
        return True


class LfmClearing:
    """Clears capacity-limit bids period by period: maximise Σ_buyers u·x − Σ_sellers u·x with
    0 ≤ x ≤ q per block and Σ_buy x = Σ_sell x per period (seed 002 eq. 3-4 to 3-6).

    Impact-based (`ordered` False) the price of each period is the dual of its balance
    constraint: positive where buyers value flexibility; where the curves cross on a flat or
    vertical step any price in an interval supports the clearing (metadata `price_interval`) and
    the dual is one of them.

    Probability-based (`ordered`, eq. 3-7 to 3-10) binaries y_g make block g of a bid clear only
    once every earlier block of that bid is full (y_g·Σ_{g'<g} q_g' ≤ Σ_{g'<g} x_g',
    x_g ≤ y_g·q_g), and there is no uniform price (None). The MILP is solved exactly in up to
    three steps per period, each only where the one before does not settle it: its LP relaxation
    without the order (optimal when it fills every bid in order anyway); one LP per fill state of
    the period's granular bids, the binaries' only feasible values, when there are at most
    `enumerate_limit` of them; otherwise the MILP itself with SCIP (metadata `ordered_by`).

    Awards: one per bid, its cleared kW (in total and per block) and value ω = ±Σ u·x·period_h
    (buyer utility +, seller cost −), with `period_h` hours per period (1 h by default, as in the
    seed)."""

    def __init__(
        self,
        name: str,
        ordered: bool,
        period_h: float = PERIOD_H,
        trim: bool = True,
        enumerate_limit: int = ENUMERATE,
    ) -> None:
        if not period_h > 0:
            raise ValueError(f"period_h {period_h}: the length of a period must be > 0 h")
        self.name = name
        self.ordered = ordered
        self.period_h = period_h
        self.trim = trim  # drop blocks that cannot clear before solving (see _trim); exact
        self.enumerate_limit = enumerate_limit

    def clear(self, bids: list[Bid], participants: set[str] | None = None) -> ClearingResult:
        with _no_cyclic_gc():
            return self._clear(bids, participants)

    def _clear(self, bids: list[Bid], participants: set[str] | None) -> ClearingResult:
        chosen = [b for b in bids if participants is None or b.participant in participants]
        seen: set[str] = set()
        for b in chosen:
            if b.id in seen:
                raise ValueError(f"bid {b.id!r} appears twice; parse_bids refuses duplicates")
            seen.add(b.id)
        by_period: dict[int, list[Bid]] = {}
        for b in chosen:
            by_period.setdefault(b.period, []).append(b)

        periods = [(t, _Period.of(by_period[t])) for t in sorted(by_period)]
        keeps = [self._keep(p) for _, p in periods]
        cleared, duals, stats = self._solve([p for _, p in periods], keeps)

        awards: list[Award] = []
        prices: dict[int, float | None] = {}
        intervals: dict[int, list[float]] = {}
        welfare = 0.0
        for (period, p), x, dual in zip(periods, cleared, duals, strict=True):
            price: float | None = None
            if dual is not None:
                lo, hi = _price_interval(p, x)
                intervals[period] = [lo, hi]
                # the dual of the trimmed LP may lie beyond a block it never saw; any price in
                # [lo, hi] supports this clearing, so bring it back inside
                price = min(max(dual, lo), hi) if lo <= hi else dual
            prices[period] = price
            quantity = p.totals(x).tolist()
            value = (p.totals(x * p.price * p.sign) * self.period_h).tolist()
            welfare += math.fsum(value)
            xs = x.tolist()
            awards.extend(
                # validated, and faster so than model_construct's bookkeeping in Python
                Award(
                    bid=b.id,
                    participant=b.participant,
                    period=period,
                    side=b.side,
                    quantity=quantity[n],
                    value=value[n],
                    blocks=xs[start:stop],
                )
                for n, (b, start, stop) in enumerate(
                    zip(p.bids, p.first.tolist(), p.end.tolist(), strict=True)
                )
            )
        return ClearingResult(
            method=self.name,
            awards=awards,
            prices=prices,
            welfare=welfare,
            metadata={
                "period_h": self.period_h,
                "trim": self.trim,
                "blocks": sum(len(p.price) for _, p in periods),
                "blocks_solved": sum(0 if k is None else len(k) for k in keeps),
                **stats,
                **({} if self.ordered else {"price_interval": intervals}),
            },
        )

    def _solve(
        self, periods: list[_Period], keeps: list[Ints | None]
    ) -> tuple[list[Floats], list[float | None], dict[str, Any]]:
        """Cleared kW per block and the balance dual (impact-based only) of each period."""
        cleared: list[Floats] = []
        duals: list[float | None] = []
        calls, solver_s = 0, 0.0
        for chunk in _chunks([0 if k is None else len(k) for k in keeps]):
            part, part_duals, took = _lp([periods[n] for n in chunk], [keeps[n] for n in chunk])
            solver_s += took
            cleared += part
            duals += part_duals
            calls += any(keeps[n] is not None for n in chunk)
        stats: dict[str, Any] = {}
        if self.ordered:
            duals = [None] * len(periods)
            ordered_by = {"relaxation": 0, "enumeration": 0, "scip": 0}
            binaries = 0
            for n, (p, col) in enumerate(zip(periods, keeps, strict=True)):
                if col is None or p.fills_in_order(cleared[n]):
                    ordered_by["relaxation"] += col is not None
                    continue
                states = math.prod(len(p.bids[b].blocks) for b in p.granular())
                if states <= self.enumerate_limit:
                    cleared[n], took = _enumerate(p, col)
                    ordered_by["enumeration"] += 1
                    calls += states
                else:
                    cleared[n], added, took = _milp(p, col)
                    ordered_by["scip"] += 1
                    binaries += added
                    calls += 1
                solver_s += took
            stats = {"ordered_by": ordered_by, "binaries": binaries}
        return cleared, duals, {"solver_calls": calls, "solver_s": solver_s, **stats}

    def _keep(self, p: _Period) -> Ints | None:
        """The blocks to solve for, None where the period has bids on one side only: nothing can
        clear there and no price crosses."""
        buy, sell = p.sign > 0, p.sign < 0
        if not (p.quantity[buy] > 0).any() or not (p.quantity[sell] > 0).any():
            return None
        return np.flatnonzero(_trim(p, self.ordered) if self.trim else p.quantity >= 0)


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Python's cyclic collector paused while a round clears: the arrays and awards it builds
    hold no cycles, yet every few thousand new objects the collector would walk the caller's
    whole heap of bids, which took more than half the time of a 10,000-seller round."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _Model:
    """One LP or MILP over some periods' blocks: the objective and a balance row per period."""

    def __init__(self) -> None:
        self.h = mbh.ModelBuilderHelper()
        self.h.set_maximize(True)
        self.seconds = 0.0  # inside the solver

    def period(self, p: _Period, col: Ints) -> tuple[list[int], int]:
        """Variables x (0 ≤ x ≤ q) for the blocks `col` of p, and its balance row."""
        add_vars: Any = self.h.add_var_array_with_bounds  # its stub spells ndarray wrongly
        var: list[int] = add_vars(
            np.zeros(len(col)), p.quantity[col], np.zeros(len(col), np.bool_), "x"
        ).tolist()
        self.h.set_objective_coefficients(var, (p.sign[col] * p.price[col]).tolist())
        balance = self.h.add_linear_constraint()  # Σ buy x − Σ sell x = 0, dual = the price
        self.h.set_constraint_lower_bound(balance, 0.0)
        self.h.set_constraint_upper_bound(balance, 0.0)
        for v, sign in zip(var, p.sign[col].tolist(), strict=True):
            self.h.add_term_to_constraint(balance, v, sign)
        return var, balance

    def solve(self, solver_name: str, what: str) -> mbh.ModelSolverHelper:
        solver = mbh.ModelSolverHelper(solver_name)
        solver.set_time_limit_in_seconds(TIME_LIMIT_S)
        if solver_name == "scip":
            solver.set_solver_specific_parameters("limits/gap = 0")  # VCG/Shapley need v exact
        began = time.perf_counter()
        solver.solve(self.h)
        self.seconds += time.perf_counter() - began
        if solver.status() != mbh.SolveStatus.OPTIMAL:
            raise ClearingError(
                f"{what}: {solver_name} stopped with {solver.status().name} "
                f"({solver.status_string() or 'no detail'})"
            )
        return solver


def _cleared(p: _Period, col: Ints, values: Floats) -> Floats:
    """Solver values placed in p's blocks, snapped to empty and full, in-order bids refilled."""
    x = np.zeros(len(p.price))
    x[col] = np.clip(values, 0.0, p.quantity[col])
    x = np.where(x < EPS, 0.0, np.where(p.quantity - x < EPS, p.quantity, x))
    return _refill(p, x)


def _lp(
    periods: list[_Period], keeps: list[Ints | None]
) -> tuple[list[Floats], list[float | None], float]:
    """The LP without any order over some periods in one GLOP model: cleared kW per block and
    the balance dual of each period, and the seconds GLOP took."""
    cleared = [np.zeros(len(p.price)) for p in periods]
    duals: list[float | None] = [None] * len(periods)
    if all(k is None for k in keeps):
        return cleared, duals, 0.0
    model = _Model()
    rows = [
        None if col is None else model.period(p, col) for p, col in zip(periods, keeps, strict=True)
    ]
    solver = model.solve("glop", f"the LP of {len(periods)} periods")
    values = np.asarray(solver.variable_values())
    dual_values = np.asarray(solver.dual_values())
    for n, (p, col, row) in enumerate(zip(periods, keeps, rows, strict=True)):
        if col is not None and row is not None:
            cleared[n] = _cleared(p, col, values[row[0]])
            duals[n] = float(dual_values[row[1]])
    return cleared, duals, model.seconds


def _enumerate(p: _Period, col: Ints) -> tuple[Floats, float]:
    """The MILP of one period by its binaries' feasible values: a granular bid with G blocks
    has G fill states (blocks before k full, block k in [0, q_k], later ones empty); one LP per
    combination of states, solved by `_merit_order`, the best one wins (the earliest on a tie).
    Returns the cleared kW per block and the seconds the LPs took."""
    price, sign = p.price[col], p.sign[col]
    position = np.full(len(p.price), -1, np.int64)
    position[col] = np.arange(len(col))
    granular = p.granular()
    lo, hi = np.zeros(len(col)), p.quantity[col].copy()
    best: tuple[float, Floats] | None = None
    began = time.perf_counter()
    for states in product(*(range(len(p.bids[b].blocks)) for b in granular)):
        for b, k in zip(granular, states, strict=True):
            first = int(p.first[b])
            for g in range(first, int(p.end[b])):
                n, q = int(position[g]), float(p.quantity[g])
                lo[n] = q if g - first < k else 0.0
                hi[n] = q if g - first <= k else 0.0
        solved = _merit_order(price, sign, lo, hi)
        if solved is None:
            continue  # the full blocks ask for more than the other side offers
        x, value = solved
        if best is None or value > best[0] + 1e-9 * max(1.0, abs(value)):
            best = (value, x)
    assert best is not None  # every bid at its first block, nothing full, is always feasible
    return _cleared(p, col, best[1]), time.perf_counter() - began


def _merit_order(
    price: Floats, sign: Floats, lo: Floats, hi: Floats
) -> tuple[Floats, float] | None:
    """max Σ sign·price·x subject to Σ sign·x = 0 and lo ≤ x ≤ hi (one period's LP with some
    blocks fixed), or None when no x balances. With one balance row the LP is a merit order,
    solved exactly without a solver: beyond the `net` kW the fixed parts leave unbalanced, the
    buyers take t kW more, dearest blocks first, and the sellers give t + net, cheapest first.
    The welfare is concave and piecewise linear in t, so its maximum is at one of the two
    curves' breakpoints (the smallest such t on a tie: the least trade)."""
    x = lo.copy()
    net = float(np.dot(sign, lo))  # buyers' kW − sellers' kW already fixed
    room = hi - lo
    curves = []
    for side, order in ((1.0, -price), (-1.0, price)):
        mine = np.flatnonzero((sign == side) & (room > 0))
        mine = mine[np.argsort(order[mine], kind="stable")]
        kw = np.concatenate([[0.0], np.cumsum(room[mine])])
        eur = np.concatenate([[0.0], np.cumsum(room[mine] * price[mine])])
        curves.append((mine, kw, eur))
    (buy, buy_kw, buy_eur), (sell, sell_kw, sell_eur) = curves
    t_lo, t_hi = max(0.0, -net), min(float(buy_kw[-1]), float(sell_kw[-1]) - net)
    if t_lo > t_hi + EPS:
        return None
    t_hi = max(t_lo, t_hi)
    ts = np.unique(np.clip(np.concatenate([buy_kw, sell_kw - net, [t_lo, t_hi]]), t_lo, t_hi))
    welfare = np.interp(ts, buy_kw, buy_eur) - np.interp(ts + net, sell_kw, sell_eur)
    t = float(ts[int(np.argmax(welfare))])
    x[buy] += np.clip(t - buy_kw[:-1], 0.0, room[buy])
    x[sell] += np.clip(t + net - sell_kw[:-1], 0.0, room[sell])
    return x, float(np.dot(sign * price, x))


def _milp(p: _Period, col: Ints) -> tuple[Floats, int, float]:
    """The MILP of one period with SCIP (seed 002 eq. 3-8/3-9 for each granular bid)."""
    model = _Model()
    var, _ = model.period(p, col)
    position = np.full(len(p.price), -1, np.int64)
    position[col] = np.arange(len(col))
    h, added = model.h, 0
    for b in p.granular():
        start, end = int(p.first[b]), int(p.end[b])
        for g in range(start + 1, end):
            before = float(p.quantity[start:g].sum())
            if p.quantity[g] <= 0 or before <= 0:
                continue
            y = h.add_var()
            h.set_var_lower_bound(y, 0.0)
            h.set_var_upper_bound(y, 1.0)
            h.set_var_integrality(y, True)
            cap = h.add_linear_constraint()  # x_g − q_g·y ≤ 0
            h.set_constraint_upper_bound(cap, 0.0)
            h.add_term_to_constraint(cap, var[int(position[g])], 1.0)
            h.add_term_to_constraint(cap, y, -float(p.quantity[g]))
            full = h.add_linear_constraint()  # Σ_{g'<g} q_g'·y − Σ_{g'<g} x_g' ≤ 0
            h.set_constraint_upper_bound(full, 0.0)
            h.add_term_to_constraint(full, y, before)
            for k in range(start, g):
                h.add_term_to_constraint(full, var[int(position[k])], -1.0)
            added += 1
    solver = model.solve("scip", f"the MILP of a period with {len(col)} blocks, {added} binaries")
    return _cleared(p, col, np.asarray(solver.variable_values())[var]), added, model.seconds


def _chunks(sizes: list[int]) -> Iterable[list[int]]:
    """Consecutive periods grouped into models of about CHUNK_BLOCKS blocks each."""
    chunk: list[int] = []
    total = 0
    for n, size in enumerate(sizes):
        if chunk and total + size > CHUNK_BLOCKS:
            yield chunk
            chunk, total = [], 0
        chunk.append(n)
        total += size
    if chunk:
        yield chunk


def _trim(p: _Period, ordered: bool) -> Bools:
    """Blocks that can clear in an optimum. No more than the other side's total quantity Q can
    clear, so a seller's block dearer than the price at which cheaper supply reaches Q never
    clears (moving its kW to a cheaper block that still has room gains), and a buyer's block
    below the price at which dearer demand reaches Q likewise. Under `ordered` only blocks of
    in-order bids may be dropped or counted: another bid's cheap block may need its dear ones
    full first."""
    keep = np.ones(len(p.price), np.bool_)
    free = np.ones(len(p.price), np.bool_) if not ordered else p.in_order[p.bid_of]
    for side in (1.0, -1.0):
        mine = free & (p.sign == side)
        other = float(p.quantity[p.sign == -side].sum())
        order = np.flatnonzero(mine)[np.argsort(side * -p.price[mine], kind="stable")]
        reach = np.cumsum(p.quantity[order])
        n = int(np.searchsorted(reach, other - EPS))  # first block at which supply reaches Q
        if n >= len(order):
            continue
        limit = p.price[order[n]]
        keep &= ~(mine & (side * (p.price - limit) < 0))
    return keep


def _refill(p: _Period, x: Floats) -> Floats:
    """Each in-order bid's cleared total put back into its blocks from the first one."""
    total = p.totals(x)[p.bid_of]
    cum = np.cumsum(p.quantity)
    before = cum - p.quantity - (cum - p.quantity)[p.first][p.bid_of]
    filled = np.clip(total - before, 0.0, p.quantity)
    return np.where(p.in_order[p.bid_of], filled, x)


def _price_interval(p: _Period, x: Floats) -> tuple[float, float]:
    """The prices that support clearing x (complementary slackness): at or below every buyer's
    block that cleared and every seller's that has room left, at or above every buyer's block
    with room left and every seller's that cleared."""
    cleared, room = x > EPS, p.quantity - x > EPS
    buy = p.sign > 0
    below = p.price[(buy & cleared) | (~buy & room)]
    above = p.price[(buy & room) | (~buy & cleared)]
    lo = float(above.max()) if len(above) else -np.inf
    hi = float(below.min()) if len(below) else np.inf
    return lo, hi


IMPACT = register(LfmClearing("lfm-impact", ordered=False))
PROBABILITY = register(LfmClearing("lfm-probability", ordered=True))
