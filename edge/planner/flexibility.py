"""What the home can offer its aggregator, from its own planner: the P-plan; price-quantity bid
blocks found by re-solving the plan at candidate prices (seed 001's market-auction bid: the
home's models stay private, only its answers to prices leave); and the up/down envelope, the
least and most net power the home can take in each PTU without giving up any preference, with
what each extreme costs."""

from __future__ import annotations

from dataclasses import dataclass

from homeflex.edge.planner.inputs import PlanInputs
from homeflex.edge.planner.planner import (
    MET_TOLERANCE_W,
    OBJECTIVE_SCALE,
    Plan,
    assemble,
    run,
    solve,
)

# € per kWh of deviation the envelope's solves accept: far above any price, so that the extreme
# is found first and its cheapest plan second; preferences cannot be traded (they are held).
EXTREME_EUR_PER_KWH = 10.0
HELD_SLACK = 1e-6  # how far a held preference may move in the deviation's plan (solver noise)


@dataclass(frozen=True)
class BidBlock:
    """At market price `price_eur_kwh` in every PTU, the home would take `net_w` per PTU."""

    price_eur_kwh: float
    net_w: list[float]


@dataclass(frozen=True)
class EnvelopePtu:
    """PTU `ptu` of the plan: the net power planned, the least and most the home can take
    instead (W, + import), and what its plan costs more (€, over the horizon) at each."""

    ptu: int
    planned_w: float
    min_w: float
    max_w: float
    cost_down_eur: float
    cost_up_eur: float


def p_plan(plan: Plan) -> list[float]:
    """The home's P-plan: expected net import per PTU (W; negative = export)."""
    return list(plan.net_w)


def bid_blocks(
    inputs: PlanInputs, prices_eur_kwh: list[float], ptus: list[int] | None = None
) -> list[BidBlock]:
    """One block per candidate price: the plan the home would follow if every kWh in `ptus` (the
    period the aggregator asks about; default: all) were bought and sold at that price, the other
    PTUs keeping their forecast prices. Net power in `ptus` falls (weakly) as the price rises."""
    period = set(range(inputs.ptus) if ptus is None else ptus)
    blocks = []
    for price in sorted(prices_eur_kwh):
        imp = [price if t in period else p for t, p in enumerate(inputs.import_price)]
        exp = [price if t in period else p for t, p in enumerate(inputs.export_price)]
        priced = inputs.model_copy(update={"import_price": imp, "export_price": exp})
        blocks.append(BidBlock(price, solve(priced).net_w))
    return blocks


def envelope(inputs: PlanInputs, ptus: list[int] | None = None) -> tuple[Plan, list[EnvelopePtu]]:
    """The plan, and for each PTU in `ptus` (default: all) how far its net power can go down and
    up while every preference (comfort, charge by departure, appliance windows, requests and
    orders) is kept as well as the plan keeps it, each PTU on its own (the others re-planned).
    Two solves per PTU: ask for the PTUs an aggregator trades, not always all 96."""
    base = assemble(inputs)
    base.m.solver.Minimize(OBJECTIVE_SCALE * base.objective())
    plan = run(base, inputs)
    held = [v.solution_value() for v in base.m.slacks]
    out = []
    for t in range(inputs.ptus) if ptus is None else ptus:
        extremes = []
        for direction in (-1.0, 1.0):
            a = assemble(inputs)
            for slack, value in zip(a.m.slacks, held, strict=True):
                a.m.constrain(slack <= value + HELD_SLACK)
            weight = EXTREME_EUR_PER_KWH * a.m.dt_h / 1000.0
            a.m.solver.Minimize(OBJECTIVE_SCALE * (a.objective() - direction * weight * a.net(t)))
            moved = run(a, inputs)
            # Both plans are only proven within the gap: a deviation's may come out cheaper, or
            # dearer with nothing moved. Costs are accurate to the gap (Plan.gap_eur).
            cost = max(0.0, moved.objective_eur - plan.objective_eur)
            if abs(moved.net_w[t] - plan.net_w[t]) <= MET_TOLERANCE_W:
                cost = 0.0
            extremes.append((moved.net_w[t], cost))
        (low, cost_down), (high, cost_up) = extremes
        out.append(EnvelopePtu(t, plan.net_w[t], low, high, cost_down, cost_up))
    return plan, out
