"""Payment rules on a clearing result (seed 002 §2.4): pay-as-bid, uniform, VCG, uni-sided VCG
and exact Shapley with its core-stability (excess) report, each with its budget balance and
individual rationality.
A payment is money received; ω is a participant's utility (+) or cost (−) of what it cleared."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from itertools import combinations

from pydantic import Field

from homeflex.cloud.market.objects import Bid, ClearingResult, Side, Strict
from homeflex.cloud.market.registry import ClearingMethod

SHAPLEY_LIMIT = 16  # participants: exact Shapley clears up to 2^n coalitions
TOLERANCE = 1e-6  # €, relative to the welfare when that is larger than 1 €


class PaymentError(ValueError):
    """A payment rule that does not apply to this result, or a game too large to compute."""


class Welfare:
    """v(M): the welfare of clearing only coalition M's bids with `method`, cached per coalition;
    `solves` counts the clearings actually run. In a market that balances what buyers get against
    what sellers give (`balanced`, as the LFM's), a coalition with bids on one side only clears
    nothing and is worth 0 without a solve."""

    def __init__(self, method: ClearingMethod, bids: list[Bid], balanced: bool = True) -> None:
        self.method = method
        self.bids = bids
        self.balanced = balanced
        self.participants = frozenset(b.participant for b in bids)
        self._sides: dict[str, set[Side]] = {}
        for b in bids:
            self._sides.setdefault(b.participant, set()).add(b.side)
        self._cache: dict[frozenset[str], float] = {frozenset(): 0.0}
        self.solves = 0

    def __call__(self, coalition: Iterable[str]) -> float:
        key = frozenset(coalition)
        if key in self._cache:
            return self._cache[key]
        unknown = key - self.participants
        if unknown:
            raise PaymentError(f"coalition names {sorted(unknown)}, who have no bids in this game")
        sides = set().union(*(self._sides[p] for p in key))
        if self.balanced and len(sides) < 2:
            value = 0.0
        else:
            self.solves += 1
            value = self.method.clear(self.bids, set(key)).welfare
        self._cache[key] = value
        return value


class Excess(Strict):
    coalition: list[str]
    excess: float = Field(description="e(M) = v(M) − Σ_{i∈M} φ_i (€); > 0: M would rather leave")


class PaymentReport(Strict):
    """Payments under one rule, with what a reviewer checks them against."""

    rule: str
    method: str = Field(description="the clearing method whose result was paid")
    payments: dict[str, float] = Field(description="€ received per participant (< 0: paid)")
    omega: dict[str, float] = Field(description="ω per participant (€): utility +, cost −")
    budget_balance: float = Field(
        description="Σ payments (€): 0 balanced, > 0 a deficit the operator funds, < 0 a surplus"
    )
    ir_violations: dict[str, float] = Field(
        description="participants left worse off than not taking part: their ω + payment < 0"
    )
    marginal: dict[str, float] | None = Field(
        default=None, description="VCG: each participant's marginal contribution v(N) − v(N∖{i})"
    )
    shapley: dict[str, float] | None = Field(default=None, description="Shapley: φ_i (€)")
    excess: list[Excess] | None = Field(
        default=None, description="Shapley: coalitions with a positive excess, largest first"
    )
    solves: int = Field(default=0, description="clearings this rule ran (cached ones not again)")

    @property
    def individually_rational(self) -> bool:
        return not self.ir_violations

    @property
    def stable(self) -> bool | None:
        """Shapley only: no coalition has a positive excess (the allocation is in the core)."""
        return None if self.excess is None else not self.excess


def _tolerance(result: ClearingResult) -> float:
    return TOLERANCE * max(1.0, abs(result.welfare))


def _report(
    rule: str, result: ClearingResult, v: Welfare, payments: dict[str, float], **extra: object
) -> PaymentReport:
    omega = {p: 0.0 for p in sorted(v.participants)}
    for p, w in result.omega().items():
        omega[p] = w
    tol = _tolerance(result)
    net = {p: omega[p] + payments[p] for p in omega}
    return PaymentReport.model_validate(
        {
            "rule": rule,
            "method": result.method,
            "payments": payments,
            "omega": omega,
            "budget_balance": math.fsum(payments.values()),
            "ir_violations": {p: n for p, n in net.items() if n < -tol},
            **extra,
        }
    )


def _check(result: ClearingResult, v: Welfare) -> None:
    strangers = set(result.omega()) - v.participants
    if strangers:
        raise PaymentError(
            f"the result awards {sorted(strangers)}, who have no bids in the welfare function's "
            "game; build Welfare from the bids that were cleared"
        )


def pay_as_bid(result: ClearingResult, v: Welfare) -> PaymentReport:
    """Each pays its bid price (buyer) or receives it (seller) for what it cleared: pay = −ω."""
    _check(result, v)
    omega = result.omega()
    return _report("pay-as-bid", result, v, {p: -omega.get(p, 0.0) for p in sorted(v.participants)})


def uniform(result: ClearingResult, v: Welfare) -> PaymentReport:
    """Seed 002 eq. 3-15: cleared kW × the period's uniform price × period_h, received by a
    seller and paid by a buyer. Only for a method that prices every period with a trade."""
    _check(result, v)
    period_h = float(result.metadata.get("period_h", 1.0))
    payments = {p: 0.0 for p in sorted(v.participants)}
    for a in result.awards:
        if a.quantity == 0:
            continue
        price = result.prices.get(a.period)
        if price is None:
            raise PaymentError(
                f"{result.method} sets no uniform price (period {a.period}, bid {a.bid!r} "
                "cleared); pay it by pay-as-bid, VCG or Shapley instead"
            )
        sign = 1.0 if a.side == Side.SELL else -1.0
        payments[a.participant] += sign * price * a.quantity * period_h
    return _report("uniform", result, v, payments)


def vcg(result: ClearingResult, v: Welfare) -> PaymentReport:
    """Seed 002 eq. 3-11: pay_i = v(N) − v(N∖{i}) − ω_i, one re-clearing without each."""
    _check(result, v)
    before = v.solves
    everyone = v.participants
    total = _grand(result, v)
    omega = result.omega()
    marginal = {p: total - v(everyone - {p}) for p in sorted(everyone)}
    payments = {p: marginal[p] - omega.get(p, 0.0) for p in marginal}
    return _report("vcg", result, v, payments, marginal=marginal, solves=v.solves - before)


def vcg_uni_sided(result: ClearingResult, v: Welfare) -> PaymentReport:
    """Seed 002 ([43]): every participant that bought nothing gets its VCG payment; the buyers
    pay those payments' total between them, in proportion to the kWh each bought. Budget
    balanced and truthful for the sellers, not for the buyers."""
    full = vcg(result, v)
    period_h = float(result.metadata.get("period_h", 1.0))
    sides: dict[str, set[Side]] = {}
    bought: dict[str, float] = {}
    for a in result.awards:
        if a.quantity > 0:
            sides.setdefault(a.participant, set()).add(a.side)
            if a.side == Side.BUY:
                bought[a.participant] = bought.get(a.participant, 0.0) + a.quantity * period_h
    both = sorted(p for p, s in sides.items() if len(s) > 1)
    if both:
        raise PaymentError(
            f"{', '.join(both)} both bought and sold: uni-sided VCG needs each participant on "
            "one side; pay by VCG or Shapley instead"
        )
    payments = {p: 0.0 if p in bought else full.payments[p] for p in full.payments}
    owed = math.fsum(payments.values())
    total_kwh = math.fsum(bought.values())
    for p, kwh in bought.items():
        payments[p] = -owed * kwh / total_kwh
    return _report("vcg-uni-sided", result, v, payments, marginal=full.marginal, solves=full.solves)


def shapley(result: ClearingResult, v: Welfare, limit: int = SHAPLEY_LIMIT) -> PaymentReport:
    """Seed 002 eq. 3-13/3-14: pay_i = −ω_i + φ_i with φ_i the exact Shapley value over every
    coalition, and the excess e(M) = v(M) − Σ_{i∈M} φ_i of each coalition that has one > 0."""
    _check(result, v)
    players = sorted(v.participants)
    n = len(players)
    if n > limit:
        raise PaymentError(
            f"exact Shapley for {n} participants needs up to 2^{n} = {2**n:,} clearings; the "
            f"limit is {limit}. Pay by VCG or uniform, or split the game into smaller groups"
        )
    before = v.solves
    _grand(result, v)
    value = {frozenset(m): v(m) for size in range(n + 1) for m in combinations(players, size)}
    weight = [math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n) for s in range(n)]
    phi = {
        i: math.fsum(weight[len(m)] * (value[m | {i}] - value[m]) for m in value if i not in m)
        for i in players
    }
    tol = _tolerance(result)
    excess = sorted(
        (
            Excess(coalition=sorted(m), excess=e)
            for m in value
            if 0 < len(m) < n and (e := value[m] - math.fsum(phi[i] for i in m)) > tol
        ),
        key=lambda x: (-x.excess, x.coalition),
    )
    omega = result.omega()
    payments = {i: phi[i] - omega.get(i, 0.0) for i in players}
    return _report(
        "shapley", result, v, payments, shapley=phi, excess=excess, solves=v.solves - before
    )


def _grand(result: ClearingResult, v: Welfare) -> float:
    """v(N), which must be the welfare of the result being paid."""
    total = v(v.participants)
    if abs(total - result.welfare) > _tolerance(result):
        raise PaymentError(
            f"the result's welfare {result.welfare:.6f} € is not v(N) = {total:.6f} € of the "
            f"welfare function ({v.method.name}); pay a result of the same method and bids"
        )
    return total


Rule = Callable[[ClearingResult, Welfare], PaymentReport]
RULES: dict[str, Rule] = {
    "pay-as-bid": pay_as_bid,
    "uniform": uniform,
    "vcg": vcg,
    "vcg-uni-sided": vcg_uni_sided,
    "shapley": shapley,
}


def pay(rule: str, result: ClearingResult, v: Welfare) -> PaymentReport:
    if rule not in RULES:
        raise PaymentError(f"no payment rule {rule!r}; choose one of {', '.join(sorted(RULES))}")
    return RULES[rule](result, v)
