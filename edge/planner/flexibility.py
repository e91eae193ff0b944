"""What the home can offer its aggregator, from its own planner: the P-plan, and price-quantity
bid blocks found by re-solving the plan at candidate prices (seed 001's market-auction bid: the
home's models stay private, only its answers to prices leave)."""

from __future__ import annotations

from dataclasses import dataclass

from homeflex.edge.planner.inputs import PlanInputs
from homeflex.edge.planner.planner import Plan, solve


@dataclass(frozen=True)
class BidBlock:
    """At market price `price_eur_kwh` in every PTU, the home would take `net_w` per PTU."""

    price_eur_kwh: float
    net_w: list[float]


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
