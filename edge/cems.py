"""The home's agent (the seed's CEMS): answers its aggregator's prices with the P-plan and a
flexibility offer from its own planner, and takes flexibility orders into its plans.

Prices for a day come in; the home plans that day at those prices with every order it holds,
and sends the P-plan (kW per PTU) and, for the PTUs the aggregator trades (`offer_ptus`), how
much less it could take in each and what that costs it: the planner's envelope
(edge/planner/flexibility.py), the least net power with every preference held, priced at the
extra cost of the plan per kWh given up, plus `margin_eur_kwh`. The home's models never leave
it; only these answers do (seed 001's market auction, seed 004 C.1.3).

An order is checked by planning with it: if the plan meets it, the order is kept (it binds every
later plan: edge/planner/inputs.py FlexOrder), acknowledged, and the new P-plan revision goes to
the aggregator; if not, it is refused with the planner's reason, and nothing is kept. The same
prices or order again (an ack was lost) get the same answer and change nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from homeflex.agents.messages import (
    Ack,
    FlexOffer,
    FlexOrder,
    OfferBlock,
    Payload,
    PPlan,
    Prices,
    Settlement,
)
from homeflex.agents.node import Outgoing, Reporting
from homeflex.edge.planner.flexibility import envelope
from homeflex.edge.planner.inputs import FlexOrder as PlannedOrder
from homeflex.edge.planner.inputs import PlanInputs
from homeflex.edge.planner.planner import NoPlan, Plan, solve

log = logging.getLogger(__name__)
PTU = timedelta(minutes=15)
MIN_OFFER_W = 100.0  # less than this in a PTU is not worth offering
PRICE_CAP = 10.0  # €/kWh, the messages' bound


@dataclass
class Answered:
    prices: Prices
    plan: Plan
    revision: int = 0


@dataclass
class HomeBrain(Reporting):
    name: str
    aggregator: str
    make_inputs: Callable[[Prices, list[PlannedOrder]], PlanInputs]
    offer_ptus: list[int]
    margin_eur_kwh: float = 0.02
    orders: dict[str, list[PlannedOrder]] = field(default_factory=dict)  # order id → per PTU
    accepted: dict[str, FlexOrder] = field(default_factory=dict)  # order id → as received
    answered: dict[str, Answered] = field(default_factory=dict)  # round id →
    settlements: dict[str, Settlement] = field(default_factory=dict)  # order id → what it earned

    def binding(self) -> list[PlannedOrder]:
        """Every order kept, as the planner's bounds (the gateway plans with these too)."""
        return [p for planned in self.orders.values() for p in planned]

    def on_message(self, sender: str, message: Payload, now: float) -> tuple[Ack, list[Outgoing]]:
        if sender != self.aggregator:
            return Ack(status="refused", detail=f"{sender} is not this home's aggregator"), []
        try:
            if isinstance(message, Prices):
                return self._prices(message)
            if isinstance(message, FlexOrder):
                return self._order(message)
            if isinstance(message, Settlement):
                self.settlements[message.order] = message  # the same one again: the same
                return Ack(status="ok"), []
        except NoPlan as exc:
            return Ack(status="refused", detail=f"the planner found no plan: {exc}"), []
        return Ack(status="refused", detail=f"a home takes no {type(message).__name__}"), []

    def on_failed(self, key: str, now: float) -> list[Outgoing]:
        log.warning("%s: %s never reached the aggregator; the home keeps its own plan", self.name,
                    key)  # fmt: skip
        return []

    # --- prices: P-plan and offer ------------------------------------------------------------

    def _prices(self, prices: Prices) -> tuple[Ack, list[Outgoing]]:
        if prices.round in self.answered:
            return Ack(status="ok", detail="answered before"), []
        inputs = self.make_inputs(prices, self.binding())
        span = range(prices.first_ptu, prices.first_ptu + inputs.ptus)
        plan, points = envelope(
            inputs, [p - prices.first_ptu for p in self.offer_ptus if p in span]
        )
        self.answered[prices.round] = Answered(prices, plan)
        blocks = []
        for e in points:
            down_w = e.planned_w - e.min_w
            if down_w < MIN_OFFER_W:
                continue
            kwh = down_w / 1000 * PTU.total_seconds() / 3600
            price = min(PRICE_CAP, e.cost_down_eur / kwh + self.margin_eur_kwh)
            blocks.append(
                OfferBlock(
                    ptu=prices.first_ptu + e.ptu, direction="up", kw=down_w / 1000, price=price
                )
            )
        offer = FlexOffer(
            round=prices.round, id=f"{self.name}.{prices.round}", day=prices.day, blocks=blocks
        )
        return Ack(status="ok"), [
            self._plan_message(prices.round),
            Outgoing(self.aggregator, offer, key=f"offer:{prices.round}"),
        ]

    def _plan_message(self, round_id: str) -> Outgoing:
        a = self.answered[round_id]
        msg = PPlan(
            round=round_id,
            day=a.prices.day,
            first_ptu=a.prices.first_ptu,
            net_kw=[w / 1000 for w in a.plan.net_w],
            revision=a.revision,
        )
        return Outgoing(self.aggregator, msg, key=f"plan:{round_id}:{a.revision}")

    # --- orders ------------------------------------------------------------------------------

    def _order(self, order: FlexOrder) -> tuple[Ack, list[Outgoing]]:
        if order.id in self.orders:
            return Ack(status="ok", detail="taken before"), []
        a = self.answered.get(order.round)
        if a is None:
            return Ack(status="refused", detail=f"no plan for round {order.round!r} here"), []
        day = datetime(order.day.year, order.day.month, order.day.day, tzinfo=UTC)
        planned = [
            PlannedOrder(
                id=f"{order.id}@{ptu}",
                start=day + ptu * PTU,
                end=day + (ptu + 1) * PTU,
                max_net_w=a.plan.net_w[ptu - a.prices.first_ptu] - kw * 1000,
                price_eur=order.price * kw * PTU.total_seconds() / 3600,
            )
            for ptu, kw in sorted(order.profile_kw.items())
        ]
        plan = solve(self.make_inputs(a.prices, [*self.binding(), *planned]))
        missed = [r for r in plan.requests if r.kind == "order" and not r.met]
        if missed:
            why = "; ".join(f"{r.id}: {r.reason}" for r in missed)
            return Ack(status="refused", detail=f"cannot deliver: {why}"), []
        self.orders[order.id] = planned
        self.accepted[order.id] = order
        a.plan = plan
        a.revision += 1
        return Ack(status="ok"), [self._plan_message(order.round)]
