"""Seed 002 local flexibility market: the impact-based LP against a merit-order crossing worked by
hand and on random instances, its price as the balance dual; the probability-based MILP against a
brute-force oracle, its granularity blocks filling in order where the LP's do not (Table 3-4)."""

from __future__ import annotations

import gc
import math
import random
from typing import Any

import numpy as np
import ortools.linear_solver.pywraplp as pywraplp
import pytest

from homeflex.cloud.market import lfm, registry
from homeflex.cloud.market.objects import Bid, Block, ClearingResult, Side, parse_bids

TOL = 1e-6


def bid(
    id: str, who: str, side: str, blocks: list[tuple[float, float]], period: int = 0, **kw: Any
) -> Bid:
    """blocks as (kW, €/kWh)"""
    return Bid(
        id=id,
        participant=who,
        period=period,
        side=Side(side),
        blocks=[Block(quantity=q, price=u) for q, u in blocks],
        **kw,
    )


def random_instance(rng: random.Random, fsps: int | None = None, periods: int | None = None):
    """One DSO buying with a hump-shaped granularity bid per period (its blocks in the seed's
    g0..g3 order: unlikely and cheap, likely, likely and harmful, near-certain and harmless),
    3-6 FSPs selling ascending curves, half of them starting with a free block (unused fuse
    headroom), over 2-3 periods."""
    fsps = fsps or rng.randint(3, 6)
    periods = periods or rng.randint(2, 3)
    bids = []
    for t in range(periods):
        dso = [
            (rng.uniform(20, 80), rng.uniform(0.05, 0.5)),
            (rng.uniform(5, 30), rng.uniform(0.5, 2.0)),
            (rng.uniform(2, 30), rng.uniform(2.0, 9.0)),
            (rng.uniform(2, 10), rng.uniform(0.2, 1.5)),
        ]
        curve = [(round(q, 2), round(u, 2)) for q, u in dso]
        bids.append(bid(f"dso-{t}", "dso", "buy", curve, t, monotone=False))
        for f in range(1, fsps + 1):
            price = 0.0 if rng.random() < 0.5 else rng.uniform(0.0, 0.5)
            blocks = []
            for _ in range(rng.randint(2, 4)):
                blocks.append((round(rng.uniform(2, 40), 2), round(price, 2)))
                price += rng.uniform(0.05, 1.5)
            bids.append(bid(f"fsp{f}-{t}", f"fsp{f}", "sell", blocks, t))
    return bids


def blocks_of(b: Bid) -> list[tuple[float, float]]:
    return [(k.quantity, k.price) for k in b.blocks]


def merit_order_welfare(bids: list[Bid], period_h: float = 1.0) -> float:
    """Oracle for the impact-based LP: every block on its own; match the dearest demand with the
    cheapest supply while the buyer values a kW more than the seller asks."""
    total = 0.0
    for t in {b.period for b in bids}:
        demand = sorted(
            ([u, q] for b in bids if b.period == t and b.side == Side.BUY for q, u in blocks_of(b)),
            reverse=True,
        )
        supply = sorted(
            [u, q] for b in bids if b.period == t and b.side == Side.SELL for q, u in blocks_of(b)
        )
        i = j = 0
        while i < len(demand) and j < len(supply) and demand[i][0] > supply[j][0]:
            m = min(demand[i][1], supply[j][1])
            total += m * (demand[i][0] - supply[j][0]) * period_h
            demand[i][1] -= m
            supply[j][1] -= m
            i += demand[i][1] <= 0
            j += supply[j][1] <= 0
    return total


def in_order_fill(blocks: list[tuple[float, float]], x: float) -> float:
    """Value of x kW filled into blocks in their order."""
    value = 0.0
    for q, u in blocks:
        take = min(q, max(x, 0.0))
        value += take * u
        x -= take
    return value


def ordered_welfare(bids: list[Bid]) -> float:
    """Oracle for the probability-based MILP with one buyer's bid per period and sellers whose
    curves ascend: the buyer's in-order utility U(X) minus the merit-order supply cost C(X),
    both piecewise linear in the cleared total X, so the best X is one of their breakpoints."""
    total = 0.0
    for t in {b.period for b in bids}:
        (buyer,) = [blocks_of(b) for b in bids if b.period == t and b.side == Side.BUY]
        supply = sorted(
            (u, q) for b in bids if b.period == t and b.side == Side.SELL for q, u in blocks_of(b)
        )
        supply_blocks = [(q, u) for u, q in supply]
        top = min(sum(q for q, _ in buyer), sum(q for q, _ in supply_blocks))
        points = {0.0, top}
        for blocks in (buyer, supply_blocks):
            cum = 0.0
            for q, _ in blocks:
                cum += q
                points.add(min(cum, top))
        total += max(in_order_fill(buyer, x) - in_order_fill(supply_blocks, x) for x in points)
    return total


def block_rows(result: ClearingResult, bids: list[Bid]):
    """(side, period, kW cleared, kW bid, price) for every block of every bid."""
    by_id = {b.id: b for b in bids}
    for a in result.awards:
        for x, k in zip(a.blocks, by_id[a.bid].blocks, strict=True):
            yield a.side, a.period, x, k.quantity, k.price


def fills_in_order(result: ClearingResult, bids: list[Bid]) -> bool:
    by_id = {b.id: b for b in bids}
    for a in result.awards:
        q = [k.quantity for k in by_id[a.bid].blocks]
        for g, x in enumerate(a.blocks):
            if x > TOL and any(a.blocks[k] < q[k] - TOL for k in range(g)):
                return False
    return True


# --- a two-period instance worked by hand -------------------------------------------------------
#
# Period 0. Demand: 10 kW at 0.50, then 10 kW at 0.20. Supply: s1 5 kW at 0.10 then 10 kW at 0.30,
# s2 8 kW at 0.15. Merit order: 5 @0.10 and 5 @0.15 meet the first 10 kW (0.50); the remaining
# 3 kW @0.15 meet 3 kW of the 0.20 block; the next supply (0.30) is dearer than 0.20. Cleared
# 13 kW; the buyer's second block is partial, so the price is its 0.20 €/kWh.
# Welfare = 10·0.5 + 3·0.2 − 5·0.1 − 8·0.15 = 5.6 − 0.5 − 1.2 = 3.9 €.
#
# Period 1. Demand: 10 kW at 0.50. Supply: s1 4 kW at 0.10, then 10 kW at 0.30. Cleared 10 kW:
# 4 @0.10 + 6 @0.30 with s1's second block partial, so the price is its 0.30 €/kWh.
# Welfare = 10·0.5 − 4·0.1 − 6·0.3 = 5 − 0.4 − 1.8 = 2.8 €.   Total 6.7 €.
HAND = [
    bid("b0", "dso", "buy", [(10, 0.5), (10, 0.2)], 0),
    bid("s1-0", "s1", "sell", [(5, 0.1), (10, 0.3)], 0),
    bid("s2-0", "s2", "sell", [(8, 0.15)], 0),
    bid("b1", "dso", "buy", [(10, 0.5)], 1),
    bid("s1-1", "s1", "sell", [(4, 0.1), (10, 0.3)], 1),
]


def test_hand_instance_quantities_prices_and_values() -> None:
    r = lfm.IMPACT.clear(HAND)
    got = {a.bid: (a.quantity, a.value, a.blocks) for a in r.awards}
    want = {
        "b0": (13, 5.6, [10, 3]),
        "s1-0": (5, -0.5, [5, 0]),
        "s2-0": (8, -1.2, [8]),
        "b1": (10, 5.0, [10]),
        "s1-1": (10, -2.2, [4, 6]),
    }
    assert got.keys() == want.keys()
    for k, (q, v, blocks) in want.items():
        assert got[k][0] == pytest.approx(q, abs=TOL)
        assert got[k][1] == pytest.approx(v, abs=TOL)
        assert got[k][2] == pytest.approx(blocks, abs=TOL)
    # positive: the buyer values flexibility, and the dual is exactly the crossing
    assert r.prices == pytest.approx({0: 0.2, 1: 0.3}, abs=TOL)
    assert r.welfare == pytest.approx(6.7, abs=TOL)
    assert r.omega() == pytest.approx({"dso": 10.6, "s1": -2.7, "s2": -1.2}, abs=TOL)
    # the MILP clears the same (every curve here is monotone) but defines no price
    p = lfm.PROBABILITY.clear(HAND)
    assert p.welfare == pytest.approx(6.7, abs=TOL)
    assert p.prices == {0: None, 1: None}


def test_period_length_scales_the_money_not_the_kw() -> None:
    quarter = lfm.LfmClearing("lfm-impact-ptu", ordered=False, period_h=0.25).clear(HAND)
    assert quarter.welfare == pytest.approx(6.7 * 0.25, abs=TOL)
    assert quarter.quantity("dso") == pytest.approx(23, abs=TOL)
    assert quarter.metadata["period_h"] == 0.25
    with pytest.raises(ValueError, match="period_h"):
        lfm.LfmClearing("bad", ordered=False, period_h=0)


def test_a_period_with_one_side_clears_nothing_and_has_no_price() -> None:
    r = lfm.IMPACT.clear([bid("b", "dso", "buy", [(10, 0.5)], 4)])
    assert r.prices == {4: None}
    assert r.welfare == 0
    assert [a.quantity for a in r.awards] == [0]


def test_registered_by_name_and_restricted_to_the_given_participants() -> None:
    assert registry.method("lfm-impact") is lfm.IMPACT
    assert registry.method("lfm-probability") is lfm.PROBABILITY
    r = lfm.IMPACT.clear(HAND, participants={"dso", "s2"})
    assert {a.participant for a in r.awards} == {"dso", "s2"}
    # without s1 only s2's 8 kW at 0.15 remain in period 0: 8·(0.5 − 0.15) = 2.8 €
    assert r.welfare == pytest.approx(2.8, abs=TOL)
    assert r.prices[0] == pytest.approx(0.5, abs=TOL)  # the 0.5 block is partial (8 of 10 kW)
    assert r.prices[1] is None  # only the buyer is left in period 1


def test_a_duplicate_bid_id_reaching_clear_is_named() -> None:
    with pytest.raises(ValueError, match="'s2-0' appears twice"):
        lfm.IMPACT.clear([*HAND, HAND[2]])


@pytest.mark.parametrize("seed", range(30))
def test_impact_lp_is_the_merit_order_and_its_price_supports_it(seed: int) -> None:
    bids = random_instance(random.Random(seed))
    r = lfm.IMPACT.clear(bids)
    assert r.welfare == pytest.approx(merit_order_welfare(bids), abs=1e-6)
    assert r.welfare == pytest.approx(sum(a.value for a in r.awards), abs=1e-9)
    for t, price in r.prices.items():
        assert price is not None
        bought = sum(a.quantity for a in r.awards if a.period == t and a.side == Side.BUY)
        sold = sum(a.quantity for a in r.awards if a.period == t and a.side == Side.SELL)
        assert bought == pytest.approx(sold, abs=1e-6)
    # complementary slackness over every block, the definition of a uniform price that clears:
    # a block that cleared is worth it at this price, a block with room left is not
    for side, t, x, q, u in block_rows(r, bids):
        price = r.prices[t]
        assert price is not None
        lo, hi = r.metadata["price_interval"][t]
        assert lo - 1e-12 <= price <= hi + 1e-12
        better = u - price if side == Side.BUY else price - u
        if x > TOL:
            assert better >= -1e-9
        if x < q - TOL:
            assert better <= 1e-9


@pytest.mark.parametrize("seed", range(30))
def test_probability_milp_is_optimal_and_fills_granularity_bids_in_order(seed: int) -> None:
    bids = random_instance(random.Random(seed))
    r = lfm.PROBABILITY.clear(bids)
    assert r.welfare == pytest.approx(ordered_welfare(bids), abs=1e-6)
    assert fills_in_order(r, bids)
    assert set(r.prices.values()) == {None}
    # the order constraint only takes options away
    assert r.welfare <= lfm.IMPACT.clear(bids).welfare + 1e-9


@pytest.mark.parametrize("seed", range(30))
def test_the_milp_by_scip_agrees_with_its_enumerated_fill_states(seed: int) -> None:
    bids = random_instance(random.Random(seed))
    by_states = lfm.PROBABILITY.clear(bids)
    by_scip = lfm.LfmClearing("scip", ordered=True, enumerate_limit=0).clear(bids)
    assert by_scip.welfare == pytest.approx(by_states.welfare, abs=1e-6)
    assert fills_in_order(by_scip, bids)
    used = by_scip.metadata["ordered_by"]
    assert used["enumeration"] == 0
    assert used["scip"] == by_states.metadata["ordered_by"]["enumeration"]


@pytest.mark.parametrize("seed", range(10))
def test_trimming_blocks_that_cannot_clear_changes_nothing(seed: int) -> None:
    rng = random.Random(100 + seed)
    bids = random_instance(rng, fsps=rng.randint(12, 20))  # supply well beyond the DSO's need
    for ordered in (False, True):
        trimmed = lfm.LfmClearing("t", ordered).clear(bids)
        full = lfm.LfmClearing("f", ordered, trim=False).clear(bids)
        assert trimmed.metadata["blocks_solved"] < full.metadata["blocks_solved"]
        assert trimmed.welfare == pytest.approx(full.welfare, abs=1e-6)


# Seed 002 Table 3-4: the DSO's probability-based request d0 (kW, SEK/kW) for 17:00-19:00, blocks
# g0..g3 in fill order, with six synthetic FSPs as the seed's benchmark B2 asks: ascending curves
# starting with a free block, each 10 kW free, 30 kW at 0.2 and 30 kW at 1.2.
TABLE_3_4 = {
    17: [(281.11, 0.3), (70.28, 2), (24.70, 9), (7.52, 1)],
    18: [(295.89, 0.3), (73.97, 2), (6.22, 9), (7.52, 1)],
    19: [(276.50, 0.3), (69.13, 2), (30.46, 9), (7.52, 1)],
}
FSP_CURVE = [(10.0, 0.0), (30.0, 0.2), (30.0, 1.2)]


def table_3_4() -> list[Bid]:
    bids = [bid(f"d0-{t}", "dso", "buy", c, t, monotone=False) for t, c in TABLE_3_4.items()]
    bids += [
        bid(f"fsp{f}-{t}", f"fsp{f}", "sell", FSP_CURVE, t) for f in range(1, 7) for t in TABLE_3_4
    ]
    return bids


def test_table_3_4_lp_clears_the_valuable_block_first_the_milp_fills_in_order() -> None:
    bids = table_3_4()
    lp, milp = lfm.IMPACT.clear(bids), lfm.PROBABILITY.clear(bids)
    dso_lp = {a.period: a.blocks for a in lp.awards if a.participant == "dso"}
    dso_milp = {a.period: a.blocks for a in milp.awards if a.participant == "dso"}
    for t, curve in TABLE_3_4.items():
        g0 = curve[0][0]
        # LP: g1..g3 (2, 9, 1 SEK/kW) clear in full, g0 (0.3) only partly: out of order
        assert dso_lp[t][1:] == pytest.approx([q for q, _ in curve[1:]], abs=TOL)
        assert dso_lp[t][0] < g0 - 1
        # its price is g0's 0.3: the partial block sets it (supply at 0.2 is all used, 1.2 idle)
        assert lp.prices[t] == pytest.approx(0.3, abs=TOL)
        # MILP: g2 (9) clears only with g0 and g1 full
        assert dso_milp[t][2] > 0
        assert dso_milp[t][:2] == pytest.approx([q for q, _ in curve[:2]], abs=TOL)
        assert milp.prices[t] is None
    assert fills_in_order(milp, bids) and not fills_in_order(lp, bids)
    # every hour the LP relaxation breaks the order: each is settled by its four fill states
    assert milp.metadata["ordered_by"] == {"relaxation": 0, "enumeration": 3, "scip": 0}
    scip = lfm.LfmClearing("scip", ordered=True, enumerate_limit=0).clear(bids)
    assert scip.metadata["ordered_by"] == {"relaxation": 0, "enumeration": 0, "scip": 3}
    assert scip.metadata["binaries"] == 3 * 3  # y for g1..g3 of the DSO's bid in each hour
    assert scip.welfare == pytest.approx(milp.welfare, abs=1e-6)
    # the six FSPs bid alike, so only the DSO's fill is unique
    for a in scip.awards:
        if a.participant == "dso":
            assert a.blocks == pytest.approx(dso_milp[a.period], abs=1e-6)
    # 17:00 by hand. LP: demand by value 24.70 @9, 70.28 @2, 7.52 @1, 281.11 @0.3 against 60 kW
    # free and 180 kW at 0.2; 102.5 kW use the 60 free and 42.5 at 0.2, 137.5 more at 0.2 go to g0.
    # 222.3 + 140.56 + 7.52 + 0.3·137.5 − 0.2·180 = 375.63. MILP: g0..g2 full = 376.09 kW from
    # 60 free, 180 at 0.2 and 136.09 at 1.2: 84.333 + 140.56 + 222.3 − 36 − 163.308 = 247.885.
    # g3 (1 < 1.2) stays out.
    assert sum(a.value for a in lp.awards if a.period == 17) == pytest.approx(375.63, abs=1e-6)
    assert sum(a.value for a in milp.awards if a.period == 17) == pytest.approx(247.885, abs=1e-6)
    assert lp.welfare == pytest.approx(merit_order_welfare(bids), abs=1e-6)
    assert milp.welfare == pytest.approx(ordered_welfare(bids), abs=1e-6)
    assert milp.welfare < lp.welfare


def test_bad_bids_are_refused_by_name_and_field_and_the_rest_clears() -> None:
    good = [b.model_dump(mode="json") for b in HAND]
    raw: list[Any] = [
        *good[:3],
        {"id": "neg", "participant": "s1", "period": 0, "side": "sell",
         "blocks": [{"quantity": -5, "price": 0.1}]},
        {"id": "nan", "participant": "s2", "period": 0, "side": "sell",
         "blocks": [{"quantity": 5, "price": 0.1}, {"quantity": 5, "price": math.nan}]},
        {"id": "dear", "participant": "s2", "period": 1, "side": "sell",
         "blocks": [{"quantity": 5, "price": 12.0}]},
        {"id": "who", "participant": "mallory", "period": 0, "side": "sell",
         "blocks": [{"quantity": 50, "price": 0.0}]},
        {**good[1], "blocks": [{"quantity": 50, "price": 0.0}]},  # s1-0 again
        {"id": "down", "participant": "s2", "period": 1, "side": "sell",
         "blocks": [{"quantity": 5, "price": 0.3}, {"quantity": 5, "price": 0.1}]},
        "not a bid",
        *good[3:],
    ]  # fmt: skip
    bids, refused = parse_bids(raw, participants={"dso", "s1", "s2"})
    got = {(r.bid, r.field) for r in refused}
    assert got == {
        ("neg", "blocks.0.quantity"),
        ("nan", "blocks.1.price"),
        ("dear", "blocks.0.price"),
        ("who", "participant"),
        ("s1-0", "id"),
        ("down", "blocks.1.price"),
        ("#9", "bid"),
    }
    messages = {r.bid: r.message for r in refused}
    assert "finite" in messages["nan"]
    assert "10" in messages["dear"]
    assert "mallory" in messages["who"]
    assert "non-decreasing" in messages["down"]
    # the accepted bids are exactly the hand instance's and clear as worked out above
    assert [b.id for b in bids] == [b.id for b in HAND]
    r = lfm.IMPACT.clear(bids)
    assert r.welfare == pytest.approx(6.7, abs=TOL)
    assert r.prices == pytest.approx({0: 0.2, 1: 0.3}, abs=TOL)


def test_clearing_leaves_the_garbage_collector_as_it_found_it() -> None:
    assert gc.isenabled()
    lfm.IMPACT.clear(HAND)
    assert gc.isenabled()
    with pytest.raises(ValueError):
        lfm.IMPACT.clear([*HAND, HAND[0]])
    assert gc.isenabled()
    gc.disable()
    try:
        lfm.IMPACT.clear(HAND)
        assert not gc.isenabled()
    finally:
        gc.enable()


@pytest.mark.parametrize("seed", range(40))
def test_the_merit_order_solves_the_fixed_bound_lp_as_glop_does(seed: int) -> None:
    """`_merit_order`, which solves each fill state of the probability-based clearing, against
    GLOP on the same LP: same optimum, a balanced x within its bounds, None when infeasible."""
    rng = random.Random(seed)
    n = rng.randint(2, 14)
    sign = np.array([rng.choice((1.0, -1.0)) for _ in range(n)])
    price = np.array([round(rng.uniform(0.0, 1.0), 2) for _ in range(n)])  # ties happen
    q = np.array([round(rng.uniform(0.5, 10.0), 1) for _ in range(n)])
    fixed = [rng.random() < 0.3 for _ in range(n)]
    lo = np.where(fixed, q, 0.0)
    hi = np.where([f or rng.random() < 0.8 for f in fixed], q, 0.0)

    lp = pywraplp.Solver.CreateSolver("GLOP")
    x = [lp.NumVar(float(lo[i]), float(hi[i]), f"x{i}") for i in range(n)]
    lp.Add(sum(float(sign[i]) * x[i] for i in range(n)) == 0)
    lp.Maximize(sum(float(sign[i] * price[i]) * x[i] for i in range(n)))
    status = lp.Solve()

    solved = lfm._merit_order(price, sign, lo, hi)
    if status == pywraplp.Solver.INFEASIBLE:
        assert solved is None
        return
    assert status == pywraplp.Solver.OPTIMAL and solved is not None
    got, value = solved
    assert value == pytest.approx(lp.Objective().Value(), abs=1e-7)
    assert value == pytest.approx(float(np.dot(sign * price, got)))
    assert float(np.dot(sign, got)) == pytest.approx(0.0, abs=1e-9)
    assert (got >= lo - 1e-12).all() and (got <= hi + 1e-12).all()
