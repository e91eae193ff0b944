"""Seed 002 payment rules: the identities the published Tables 3-6, 3-7 and 3-9 obey, the same
identities on random games cleared by our LFM methods, and a three-player game worked by hand."""

from __future__ import annotations

import math
import random
from itertools import permutations

import pytest

from homeflex.cloud.market import lfm
from homeflex.cloud.market.payments import (
    PaymentError,
    Welfare,
    pay,
    pay_as_bid,
    shapley,
    uniform,
    vcg,
    vcg_uni_sided,
)
from tests.unit.market.test_lfm import bid, random_instance, table_3_4

# --- the seed's tables as published (currency unstated, presumably SEK; daily totals) -----------
# Columns: φ, −ω ("cost/utility": the DSO's utility negated, an FSP's cost), Shapley payment,
# VCG payment and, impact-based only, uniform payment. Printed sums below each day.
FSPS = ["FSP1", "FSP2", "FSP3", "FSP4", "FSP5", "FSP6"]
TABLE_3_6 = {  # impact-based
    "2012-01-01": {
        "DSO": (8072.0, -14282.8, -6210.8, -215.4, -7079.9),
        "FSP1": (150.1, 0.0, 150.1, 183.4, 183.4),
        "FSP2": (216.3, 0.0, 216.3, 264.5, 264.5),
        "FSP3": (593.4, 32.6, 626.0, 738.3, 738.3),
        "FSP4": (3177.5, 0.0, 3177.5, 4806.5, 3542.2),
        "FSP5": (1300.4, 182.8, 1483.2, 1674.5, 1674.5),
        "FSP6": (557.8, 0.0, 557.8, 677.0, 677.0),
    },
    "2012-01-05": {
        "DSO": (20297.7, -36014.6, -15717.0, -1008.1, -15649.8),
        "FSP1": (295.4, 0.0, 295.4, 337.2, 337.2),
        "FSP2": (447.5, 0.0, 447.5, 510.8, 510.8),
        "FSP3": (1368.2, 142.9, 1511.1, 1682.1, 1604.1),
        "FSP4": (8746.7, 0.0, 8746.7, 13246.8, 8978.9),
        "FSP5": (2356.9, 865.2, 3222.1, 2936.1, 2551.7),
        "FSP6": (1494.0, 0.0, 1494.0, 1754.6, 1667.1),
    },
}
TABLE_3_6_SUMS = {"2012-01-01": (0.0, 8128.8, 0.0), "2012-01-05": (0.0, 19459.5, 0.0)}
TABLE_3_7 = {  # positive excesses, 2012-01-05, impact-based
    ("DSO", "FSP1", "FSP2", "FSP3", "FSP4", "FSP6"): 285.97,
    ("DSO", "FSP2", "FSP3", "FSP4", "FSP6"): 193.45,
    ("DSO", "FSP1", "FSP3", "FSP4", "FSP6"): 145.81,
    ("DSO", "FSP3", "FSP4", "FSP6"): 53.29,
}
TABLE_3_9 = {  # probability-based
    "2012-01-01": {
        "DSO": (170.0, -834.9, -664.8, -215.4),
        "FSP1": (29.6, 0.0, 29.6, 165.1),
        "FSP2": (42.9, 0.0, 42.9, 237.0),
        "FSP3": (77.1, 32.6, 109.8, 434.2),
        "FSP4": (130.6, 0.0, 130.6, 540.6),
        "FSP5": (89.3, 182.8, 272.1, 635.3),
        "FSP6": (79.9, 0.0, 79.9, 412.7),
    },
    "2012-01-05": {
        "DSO": (338.0, -916.3, -578.3, 0.0),
        "FSP1": (22.0, 0.0, 22.0, 77.6),
        "FSP2": (33.1, 0.0, 33.1, 117.5),
        "FSP3": (86.7, 0.0, 86.7, 330.3),
        "FSP4": (243.4, 0.0, 243.4, 727.1),
        "FSP5": (92.6, 0.0, 92.6, 352.5),
        "FSP6": (100.5, 0.0, 100.5, 383.6),
    },
}
TABLE_3_9_SUMS = {"2012-01-01": (0.0, 2209.5), "2012-01-05": (0.0, 1988.7)}
ROUNDING = 0.35  # one decimal printed per entry; a sum of seven carries up to 7 × 0.05

SEED_DAYS = [("3-6", day, rows) for day, rows in TABLE_3_6.items()] + [
    ("3-9", day, rows) for day, rows in TABLE_3_9.items()
]


@pytest.mark.parametrize(("table", "day", "rows"), SEED_DAYS)
def test_seed_tables_obey_the_payment_identities(table: str, day: str, rows: dict) -> None:
    phi = {p: r[0] for p, r in rows.items()}
    omega = {p: -r[1] for p, r in rows.items()}  # the column is −ω
    shap = {p: r[2] for p, r in rows.items()}
    vcg_pay = {p: r[3] for p, r in rows.items()}
    welfare = sum(omega.values())
    sums = TABLE_3_6_SUMS[day] if table == "3-6" else TABLE_3_9_SUMS[day]

    # Shapley: pay_i = −ω_i + φ_i row by row, the payments sum to zero, Σφ = the welfare
    for p in rows:
        assert shap[p] == pytest.approx(phi[p] - omega[p], abs=0.15)
    assert sum(shap.values()) == pytest.approx(0.0, abs=ROUNDING)
    assert sums[0] == 0.0
    assert sum(phi.values()) == pytest.approx(welfare, abs=ROUNDING)
    # VCG: the DSO's payment is minus the cost of the cleared offers, since v(N∖{DSO}) = 0
    assert vcg_pay["DSO"] == pytest.approx(sum(omega[f] for f in FSPS), abs=0.15)
    # the deficit is the providers' summed marginal contributions MC_i = pay_i + ω_i
    marginal = {f: vcg_pay[f] + omega[f] for f in FSPS}
    assert sum(vcg_pay.values()) == pytest.approx(sums[1], abs=ROUNDING)
    assert sums[1] == pytest.approx(sum(marginal.values()), abs=ROUNDING)
    assert sums[1] > 0  # a deficit the operator funds
    # individual rationality: nobody ends below zero (ω + pay: φ for Shapley, MC for VCG)
    assert min(phi.values()) >= 0 and min(marginal.values()) >= 0
    if table == "3-6":
        uni = {p: r[4] for p, r in rows.items()}
        assert sum(uni.values()) == pytest.approx(0.0, abs=ROUNDING)
        assert sums[2] == 0.0
        assert all(omega[p] + uni[p] >= 0 for p in rows)


def test_seed_table_3_7_excess_of_the_coalition_without_fsp5() -> None:
    # e(N∖{i}) = v(N) − MC_i − (v(N) − φ_i) = φ_i − MC_i; for FSP5 on 2012-01-05 (impact-based)
    # φ = 2356.9, MC = 2936.1 − 865.2: 285.99 against the 285.97 Table 3-7 prints
    rows = TABLE_3_6["2012-01-05"]
    phi, minus_omega, _, vcg5, _ = rows["FSP5"]
    excess = phi - (vcg5 - minus_omega)
    without_fsp5 = tuple(p for p in rows if p != "FSP5")
    assert excess == pytest.approx(TABLE_3_7[without_fsp5], abs=0.1)
    assert all("FSP5" not in m for m in TABLE_3_7)  # the instability is FSP5's φ above its MC


# --- a three-player game worked by hand --------------------------------------------------------
#
# The DSO buys 10 kW at 1.00 €/kWh, then 5 kW at 0.22; FSP A sells 12 kW at 0.20, FSP B 10 kW at
# 0.25 (one period of one hour). Cleared: A's 12 kW against the 10 kW block and 2 kW of the 0.22
# block; B (0.25) is dearer than the 3 kW left at 0.22. The 0.22 block is partial: price 0.22.
#   ω: DSO 10·1 + 2·0.22 = 10.44, A −12·0.2 = −2.4, B 0.   v(N) = 8.04
#   v({DSO,A}) = 8.04, v({DSO,B}) = 10·(1 − 0.25) = 7.5, every other coalition 0.
# Uniform (0.22): DSO −12·0.22 = −2.64, A +2.64, B 0; Σ = 0.
# VCG: MC_DSO = 8.04, MC_A = 8.04 − 7.5 = 0.54, MC_B = 8.04 − 8.04 = 0;
#   pay = MC − ω: DSO 8.04 − 10.44 = −2.4 (minus A's cost), A 0.54 + 2.4 = 2.94, B 0; Σ = 0.54.
# Shapley with weights 1/3 (|S| = 0 or 2) and 1/6 (|S| = 1):
#   φ_A = 8.04/6 + (8.04 − 7.5)/3 = 1.34 + 0.18 = 1.52;  φ_B = 7.5/6 + 0 = 1.25;
#   φ_DSO = 8.04/6 + 7.5/6 + 8.04/3 = 5.27;  Σφ = 8.04.
#   pay = φ − ω: DSO 5.27 − 10.44 = −5.17, A 1.52 + 2.4 = 3.92, B 1.25; Σ = 0.
# Excess e(M) = v(M) − Σ_M φ: {DSO,A} 8.04 − 6.79 = 1.25 (= φ_B − MC_B), {DSO,B} 7.5 − 6.52 =
#   0.98 (= φ_A − MC_A); {A,B} −2.77 and single players ≤ 0. Not in the core: B is paid for
#   being the backup it never is, which {DSO,A} would rather not pay.
HAND = [
    bid("d", "dso", "buy", [(10, 1.0), (5, 0.22)]),
    bid("a", "fsp-a", "sell", [(12, 0.2)]),
    bid("b", "fsp-b", "sell", [(10, 0.25)]),
]


def test_hand_game_every_rule() -> None:
    r = lfm.IMPACT.clear(HAND)
    assert {a.bid: a.quantity for a in r.awards} == pytest.approx({"d": 12, "a": 12, "b": 0})
    assert r.prices == pytest.approx({0: 0.22})
    assert r.welfare == pytest.approx(8.04)
    v = Welfare(lfm.IMPACT, HAND)

    u = uniform(r, v)
    assert u.payments == pytest.approx({"dso": -2.64, "fsp-a": 2.64, "fsp-b": 0.0})
    assert u.budget_balance == pytest.approx(0.0, abs=1e-9)

    g = vcg(r, v)
    assert g.marginal == pytest.approx({"dso": 8.04, "fsp-a": 0.54, "fsp-b": 0.0})
    assert g.payments == pytest.approx({"dso": -2.4, "fsp-a": 2.94, "fsp-b": 0.0})
    assert g.budget_balance == pytest.approx(0.54)
    # v(N), then v without A and without B; v without the DSO needs no solve (sellers only)
    assert g.solves == 3

    s = shapley(r, v)
    assert s.shapley == pytest.approx({"dso": 5.27, "fsp-a": 1.52, "fsp-b": 1.25})
    assert s.payments == pytest.approx({"dso": -5.17, "fsp-a": 3.92, "fsp-b": 1.25})
    assert s.budget_balance == pytest.approx(0.0, abs=1e-9)
    assert [(e.coalition, e.excess) for e in s.excess or []] == [
        (["dso", "fsp-a"], pytest.approx(1.25)),
        (["dso", "fsp-b"], pytest.approx(0.98)),
    ]
    assert s.stable is False
    assert s.solves == 0  # every coalition with both sides was cleared for VCG already

    one = vcg_uni_sided(r, v)  # A gets its VCG payment; the DSO pays it, nothing more
    assert one.payments == pytest.approx({"dso": -2.94, "fsp-a": 2.94, "fsp-b": 0.0})
    assert one.budget_balance == pytest.approx(0.0, abs=1e-9)

    b = pay_as_bid(r, v)
    assert b.payments == pytest.approx({"dso": -10.44, "fsp-a": 2.4, "fsp-b": 0.0})
    assert b.budget_balance == pytest.approx(-8.04)  # the operator keeps the whole welfare
    for report in (u, g, one, s, b):
        assert report.omega == pytest.approx({"dso": 10.44, "fsp-a": -2.4, "fsp-b": 0.0})
        assert report.ir_violations == {} and report.individually_rational
        assert report.method == "lfm-impact"
    assert pay("vcg", r, v).payments == g.payments
    # the one-sided coalitions skipped above do clear to nothing when actually cleared
    every = Welfare(lfm.IMPACT, HAND, balanced=False)
    assert shapley(r, every).shapley == pytest.approx(s.shapley)
    assert every.solves == 2**3 - 1


def test_uniform_refuses_a_method_without_prices() -> None:
    bids = table_3_4()
    r = lfm.PROBABILITY.clear(bids)
    with pytest.raises(
        PaymentError, match=r"lfm-probability sets no uniform price.*VCG or Shapley"
    ):
        uniform(r, Welfare(lfm.PROBABILITY, bids))


def test_shapley_refuses_a_game_too_large_to_enumerate() -> None:
    bids = [bid("d", "dso", "buy", [(100, 1.0)])]
    bids += [bid(f"s{i}", f"fsp{i}", "sell", [(1, 0.1)]) for i in range(16)]
    v = Welfare(lfm.IMPACT, bids)
    r = lfm.IMPACT.clear(bids)
    with pytest.raises(PaymentError, match=r"17 participants needs up to 2\^17 = 131,072"):
        shapley(r, v)
    assert v.solves == 0  # refused before clearing anything
    # VCG needs n clearings: v(N) and one without each FSP. The DSO wants more than all 16 kW
    # on offer, so each FSP's marginal contribution is its 1 kW × (1.0 − 0.1) = 0.9 €
    g = vcg(r, v)
    assert v.solves == 17
    assert g.marginal == pytest.approx({"dso": 14.4, **{f"fsp{i}": 0.9 for i in range(16)}})
    assert g.budget_balance == pytest.approx(16 * 0.9)


def test_mismatched_result_and_welfare_and_unknown_rule_are_refused() -> None:
    bids = table_3_4()
    lp = lfm.IMPACT.clear(bids)
    with pytest.raises(PaymentError, match="is not v\\(N\\)"):
        vcg(lp, Welfare(lfm.PROBABILITY, bids))
    with pytest.raises(PaymentError, match="no payment rule 'gift'"):
        pay("gift", lp, Welfare(lfm.IMPACT, bids))
    with pytest.raises(PaymentError, match="no bids in this game"):
        Welfare(lfm.IMPACT, bids)({"dso", "eve"})


# --- random games from random LFM instances ------------------------------------------------------


def exact_shapley_by_orderings(v: Welfare) -> dict[str, float]:
    """φ_i as the mean marginal contribution over every order of arrival: an independent route
    to the same number as the coalition-weight formula the payments module uses."""
    players = sorted(v.participants)
    total = {p: 0.0 for p in players}
    count = 0
    for order in permutations(players):
        count += 1
        before: frozenset[str] = frozenset()
        for p in order:
            total[p] += v(before | {p}) - v(before)
            before = before | {p}
    return {p: t / count for p, t in total.items()}


@pytest.mark.parametrize("method", [lfm.IMPACT, lfm.PROBABILITY], ids=lambda m: m.name)
@pytest.mark.parametrize("seed", range(30))
def test_random_games_obey_the_seed_identities(seed: int, method: lfm.LfmClearing) -> None:
    rng = random.Random(seed)
    bids = random_instance(rng, fsps=rng.randint(3, 6) if seed % 3 else 6)  # every third: 7 players
    result = method.clear(bids)
    v = Welfare(method, bids)
    everyone = v.participants
    fsps = sorted(everyone - {"dso"})
    omega = {p: result.omega().get(p, 0.0) for p in everyone}
    tol = 1e-6 * max(1.0, result.welfare)

    g = vcg(result, v)
    s = shapley(result, v)
    assert g.solves == 1 + len(fsps)  # v(N), and v(N∖{i}) for each FSP; v(N∖{DSO}) = 0 free
    # Shapley: the DSO with any 1..k FSPs, less v(N) and the k cleared for VCG
    assert s.solves == 2 ** len(fsps) - 1 - 1 - len(fsps)

    # Shapley: budget-balanced, Σφ = v(N), φ as the orderings give it
    assert s.budget_balance == pytest.approx(0.0, abs=tol)
    assert s.shapley is not None
    assert math.fsum(s.shapley.values()) == pytest.approx(result.welfare, abs=tol)
    assert s.shapley == pytest.approx(exact_shapley_by_orderings(v), abs=tol)
    # VCG: the DSO pays the cost of the cleared offers; the deficit is the FSPs' summed MCs,
    # each an independent re-clearing without that FSP
    assert g.payments["dso"] == pytest.approx(sum(omega[f] for f in fsps), abs=tol)
    assert g.marginal is not None
    for f in fsps:
        alone = method.clear(bids, participants=set(everyone - {f})).welfare
        assert g.marginal[f] == pytest.approx(result.welfare - alone, abs=tol)
    assert g.budget_balance == pytest.approx(sum(g.marginal[f] for f in fsps), abs=tol)
    assert g.budget_balance >= -tol
    # uni-sided VCG: the FSPs paid as by VCG, the DSO pays exactly their total
    one = vcg_uni_sided(result, v)
    assert one.budget_balance == pytest.approx(0.0, abs=tol)
    for f in fsps:
        assert one.payments[f] == pytest.approx(g.payments[f], abs=tol)
    assert one.payments["dso"] == pytest.approx(-sum(g.payments[f] for f in fsps), abs=tol)
    # excess: e(N∖{i}) = φ_i − MC_i, and the report lists exactly the positive ones among them
    listed = {tuple(e.coalition): e.excess for e in s.excess or []}
    for i in sorted(everyone):
        rest = tuple(sorted(everyone - {i}))
        e = v(rest) - math.fsum(s.shapley[j] for j in rest)
        assert e == pytest.approx(s.shapley[i] - g.marginal[i], abs=tol)
        assert (rest in listed) == (e > 1e-6 * max(1.0, result.welfare))
        if rest in listed:
            assert listed[rest] == pytest.approx(e, abs=tol)
    for m, e in listed.items():
        assert e > 0
        assert e == pytest.approx(v(m) - math.fsum(s.shapley[j] for j in m), abs=tol)
    # individual rationality under every rule that applies
    reports = [g, s, pay_as_bid(result, v)]
    if method is lfm.IMPACT:
        u = uniform(result, v)
        assert u.budget_balance == pytest.approx(0.0, abs=tol)
        reports.append(u)
    else:
        with pytest.raises(PaymentError):
            uniform(result, v)
    for report in reports:
        assert report.ir_violations == {}
        for p in everyone:
            assert report.omega[p] == pytest.approx(omega[p], abs=1e-9)
