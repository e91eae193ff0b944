"""DSO procurement (seed 004 §6, UC3): a transformer limit turned into a flexibility request, and
the request met by the cheapest offers at or below its max price.

The limit is a transform of the summed D-prognosis (`congestion_request`, PowerMatcher's
concentrator in STYLE.md); `procure` only meets the request it is given and knows nothing of
transformers. Not a registry `ClearingMethod`: offers span several periods and may be
indivisible, which per-period `Bid`s cannot carry; `Procurement.result()` gives the same
`ClearingResult` the registry's methods return, and `participants` re-procures without some
sellers, as VCG needs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# not `from ortools.linear_solver import pywraplp`: once a module imports the typed
# `ortools.linear_solver.python`, mypy no longer finds pywraplp as an attribute of the package
import ortools.linear_solver.pywraplp as pywraplp

from homeflex.cloud.market.objects import (
    Award,
    ClearingResult,
    Direction,
    FlexOffer,
    FlexOrder,
    FlexRequest,
    Refusal,
    Side,
)

PERIOD_H = 0.25  # seed 004: 15-minute PTUs
METHOD = "dso-procurement"
_KW_EPS = 1e-7  # below this a kW figure is solver noise, not a quantity


def excess_kw(
    prognosis_kw: Sequence[float], limit_kw: float, direction: Direction
) -> dict[int, float]:
    """What a transformer rated `limit_kw` cannot carry, per period: load above the limit for
    `Direction.UP` (reduce load), export (negative load) beyond it for `Direction.DOWN` (raise
    load: back-flow from local PV). Periods within the limit are left out."""
    if not math.isfinite(limit_kw) or limit_kw <= 0:
        raise ValueError(f"transformer limit {limit_kw} kW: give a positive, finite rating")
    out: dict[int, float] = {}
    for period, kw in enumerate(prognosis_kw):
        if not math.isfinite(kw):
            raise ValueError(f"D-prognosis period {period}: {kw} kW is not a number")
        over = kw - limit_kw if direction == Direction.UP else -kw - limit_kw
        if over > 0:
            out[period] = over
    return out


def congestion_request(
    prognosis_kw: Sequence[float],
    limit_kw: float,
    *,
    request_id: str,
    buyer: str,
    max_price: float,
    direction: Direction = Direction.UP,
) -> FlexRequest:
    """The DSO's request for a summed D-prognosis (kW per period, aggregators' A-plans plus the
    non-aggregated load) against a transformer limit: the excess, at most `max_price` €/kWh."""
    return FlexRequest(
        id=request_id,
        buyer=buyer,
        direction=direction,
        profile_kw=excess_kw(prognosis_kw, limit_kw, direction),
        max_price=max_price,
    )


@dataclass(frozen=True)
class Procurement:
    """What the DSO buys: kW per period from each accepted offer (divisible offers in part),
    what each costs, and what the request still lacks per period (`shortfall_kw`)."""

    request: FlexRequest
    accepted: dict[str, dict[int, float]]  # offer id → period → kW
    cost_eur: dict[str, float]  # offer id → € (its price × its kWh, pay-as-bid)
    shortfall_kw: dict[int, float]  # periods of the request not fully met → kW missing
    refused: list[Refusal]
    offers: dict[str, FlexOffer]  # the offers taken into account, by id
    period_h: float = PERIOD_H
    status: str = "optimal"
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def met(self) -> bool:
        return not self.shortfall_kw

    @property
    def total_cost_eur(self) -> float:
        return sum(self.cost_eur.values())

    def supplied_kw(self) -> dict[int, float]:
        """The accepted kW per period, summed over offers (may exceed the request where an
        indivisible offer is larger than the need)."""
        out: dict[int, float] = {}
        for profile in self.accepted.values():
            for period, kw in profile.items():
                out[period] = out.get(period, 0.0) + kw
        return out

    def met_kw(self) -> dict[int, float]:
        """The part of the request met, per period."""
        supplied = self.supplied_kw()
        return {t: min(need, supplied.get(t, 0.0)) for t, need in self.request.profile_kw.items()}

    def apply(self, prognosis_kw: Sequence[float]) -> list[float]:
        """The D-prognosis after the accepted offers are delivered."""
        sign = -1.0 if self.request.direction == Direction.UP else 1.0
        out = list(prognosis_kw)
        for period, kw in self.supplied_kw().items():
            if period >= len(out):
                raise ValueError(f"accepted flexibility in period {period}, beyond the prognosis")
            out[period] += sign * kw
        return out

    def orders(self) -> list[FlexOrder]:
        """One order per accepted offer, for what was accepted of it (pay-as-bid)."""
        req = self.request
        return [
            FlexOrder(
                id=FlexOrder.id_for(req.id, oid),
                buyer=req.buyer,
                participant=self.offers[oid].participant,
                request=req.id,
                offer=oid,
                direction=req.direction,
                profile_kw=dict(sorted(profile.items())),
                price=self.offers[oid].price,
                period_h=self.period_h,
            )
            for oid, profile in sorted(self.accepted.items())
        ]

    def result(self) -> ClearingResult:
        """As a clearing result: one award per offer and period (ω = −cost) and one per period
        for the DSO, buying what is supplied and valuing the part it asked for at its max price
        (its willingness to pay). Pay-as-bid, so no uniform price."""
        h, req = self.period_h, self.request
        awards = [
            Award(
                bid=oid,
                participant=self.offers[oid].participant,
                period=t,
                side=Side.SELL,
                quantity=kw,
                value=-self.offers[oid].price * kw * h,
            )
            for oid, profile in self.accepted.items()
            for t, kw in sorted(profile.items())
        ]
        met = self.met_kw()
        awards += [
            Award(
                bid=req.id,
                participant=req.buyer,
                period=t,
                side=Side.BUY,
                quantity=kw,
                value=req.max_price * met.get(t, 0.0) * h,
            )
            for t, kw in sorted(self.supplied_kw().items())
        ]
        return ClearingResult(
            method=METHOD,
            awards=awards,
            prices=dict.fromkeys(sorted(req.profile_kw)),
            welfare=sum(a.value for a in awards),
            refused=self.refused,
            metadata={
                "status": self.status,
                "shortfall_kw": self.shortfall_kw,
                "cost_eur": self.total_cost_eur,
                **self.metadata,
            },
        )


def _admit(
    request: FlexRequest, offers: Sequence[FlexOffer], participants: set[str] | None
) -> tuple[list[FlexOffer], list[Refusal]]:
    admitted: list[FlexOffer] = []
    refused: list[Refusal] = []
    seen: set[str] = set()
    for o in offers:
        if o.id in seen:
            refused.append(
                Refusal(bid=o.id, field="id", message="an offer with this id came first")
            )
            continue
        seen.add(o.id)
        if o.request != request.id:
            refused.append(
                Refusal(
                    bid=o.id,
                    field="request",
                    message=f"answers request {o.request!r}, not {request.id!r}",
                )
            )
        elif o.price > request.max_price:
            refused.append(
                Refusal(
                    bid=o.id,
                    field="price",
                    message=f"{o.price} €/kWh is above the request's max price "
                    f"{request.max_price} €/kWh",
                )
            )
        elif participants is None or o.participant in participants:
            admitted.append(o)
    return admitted, refused


def procure(
    request: FlexRequest,
    offers: Sequence[FlexOffer],
    participants: set[str] | None = None,
    *,
    period_h: float = PERIOD_H,
    time_limit_s: float = 30.0,
) -> Procurement:
    """Meet `request` from `offers` at least cost (seed 004: "the DSO accepts the lowest-priced
    offers"), paying each accepted offer its own price.

    A divisible offer may be taken in part, period by period, up to its kW; an indivisible one
    whole or not at all (a MILP: SCIP). Offers above the request's max price, for another
    request or with a repeated id are refused. When the request cannot be met in full the
    answer is the selection that meets the most of it (kWh), cheapest among those, with the
    shortfall per period. An accepted offer is paid for all it delivers, also beyond the need
    (an indivisible one), so the total cost is further held to max price × kWh met: the DSO
    never pays more than its max price for what it asked. With `participants`, only their
    offers count (and none if the buyer is not among them)."""
    admitted, refused = _admit(request, offers, participants)
    if participants is not None and request.buyer not in participants:
        admitted = []
    need = {t: kw for t, kw in request.profile_kw.items() if kw > 0}
    empty = Procurement(
        request=request,
        accepted={},
        cost_eur={},
        shortfall_kw=dict(need),
        refused=refused,
        offers={o.id: o for o in admitted},
        period_h=period_h,
    )
    if not need or not admitted:
        return empty

    s = pywraplp.Solver.CreateSolver("SCIP")
    if s is None:
        raise RuntimeError("OR-Tools has no SCIP solver in this build")
    s.SuppressOutput()
    s.SetTimeLimit(int(time_limit_s * 1000))
    # an exact optimum: pywraplp's default relative gap (1e-4) would let a costlier selection pass
    if not s.SetSolverSpecificParametersAsString(
        "limits/gap = 0\nlimits/absgap = 1e-9\nnumerics/feastol = 1e-9\n"
    ):
        raise RuntimeError("SCIP refused its gap and tolerance parameters")

    take: dict[str, dict[int, Any]] = {}  # offer id → period → kW taken (a solver expression)
    whole: dict[str, Any] = {}  # indivisible offer id → its binary
    for n, o in enumerate(admitted):
        if o.divisible:
            # a divisible offer is not taken where the DSO has no need: it would cost for nothing
            take[o.id] = {
                t: s.NumVar(0.0, kw, f"y{n}_{t}") for t, kw in o.profile_kw.items() if t in need
            }
        else:
            whole[o.id] = z = s.BoolVar(f"z{n}")
            take[o.id] = {t: kw * z for t, kw in o.profile_kw.items() if kw > 0}
    short = {t: s.NumVar(0.0, kw, f"s{t}") for t, kw in need.items()}
    for t, kw in need.items():
        s.Add(sum(take[o][t] for o in take if t in take[o]) + short[t] >= kw)
    cost = sum(o.price * period_h * s.Sum(list(take[o.id].values())) for o in admitted)
    met_kwh = sum(need.values()) * period_h - period_h * s.Sum(list(short.values()))
    s.Add(cost <= request.max_price * met_kwh)

    # lexicographic: first the most of the request met, then the least cost for that
    shortfall_kwh = period_h * s.Sum(list(short.values()))
    s.Minimize(shortfall_kwh)
    status = _solve(s)
    best_short = shortfall_kwh.solution_value()
    # a looser bound here would let the second solve shave the met part to save a little cost
    s.Add(shortfall_kwh <= best_short + 1e-9 * max(1.0, best_short))
    s.Minimize(cost)
    status2 = _solve(s)

    accepted: dict[str, dict[int, float]] = {}
    cost_eur: dict[str, float] = {}
    for o in admitted:
        if o.id in whole:
            # a binary read back as 0.9999999 still takes the offer whole, at its exact kW
            taken = round(whole[o.id].solution_value()) == 1
            profile = {t: kw for t, kw in o.profile_kw.items() if kw > 0 and taken}
        else:
            profile = {t: float(v.solution_value()) for t, v in take[o.id].items()}
            profile = {t: kw for t, kw in profile.items() if kw > _KW_EPS}
        if profile:
            accepted[o.id] = profile
            cost_eur[o.id] = o.price * period_h * sum(profile.values())
    supplied: dict[int, float] = {}
    for profile in accepted.values():
        for t, kw in profile.items():
            supplied[t] = supplied.get(t, 0.0) + kw
    shortfall = {
        t: kw - supplied.get(t, 0.0) for t, kw in need.items() if kw - supplied.get(t, 0.0) > 1e-6
    }
    optimal = status == status2 == pywraplp.Solver.OPTIMAL
    return Procurement(
        request=request,
        accepted=accepted,
        cost_eur=cost_eur,
        shortfall_kw=shortfall,
        refused=refused,
        offers={o.id: o for o in admitted},
        period_h=period_h,
        status="optimal" if optimal else "feasible",
        metadata={"indivisible": sum(not o.divisible for o in admitted)},
    )


def _solve(s: pywraplp.Solver) -> int:
    status: int = s.Solve()
    # taking nothing is always feasible, so no solution at all means the solver gave up early
    if status not in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
        raise RuntimeError(f"DSO procurement: SCIP status {status}; raise time_limit_s")
    return status
