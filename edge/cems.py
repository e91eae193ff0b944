"""The home's agent (the seed's CEMS): answers its aggregator's prices with the P-plan and a
flexibility offer from its own planner, takes flexibility orders into its plans, and tells the
aggregator when its plan for the day changed.

Prices for a day come in; the home plans at those prices with every order it holds, from where
`make_inputs` starts (the gateway plans from now, so tonight's battery and car are in the plan
for tomorrow; a test may start at the day's first priced PTU) to the last priced PTU. It sends
the P-plan (kW per PTU of the day) and, for the PTUs the aggregator trades (`offer_ptus`), how
much less (upward flexibility) and how much more (downward: to soak up the neighbourhood's
back-flow) it could take in each and what that costs it: the planner's envelope
(edge/planner/flexibility.py), the least and the most net power with every preference held,
each priced at the extra cost of the plan per kWh moved, plus `margin_eur_kwh`. The home's
models never leave it; only these answers do (seed 004 C.1.3).

An order (upward: at most the P-plan less its kW; downward: at least the P-plan plus its kW)
is checked by planning with it: if the plan meets it, the order is kept (it binds every
later plan: edge/planner/inputs.py FlexOrder; `on_order` hands it to the gateway's control loop),
acknowledged, and the new P-plan revision goes to the aggregator; if not, it is refused with the
planner's reason, and nothing is kept. The same prices or order again (an ack was lost) get the
same answer and change nothing.

Intraday (USEF Operate): the gateway re-plans every PTU; `revise` compares each new plan with the
P-plan last sent for the days it covers and sends a new revision when a PTU not yet begun moved
by more than `revise_w`. The aggregator decides what it still trades for (gate closure).

With a `state` file the answers, orders and settlements survive a restart of the gateway: an
order accepted before is still honoured after it.

The owner decides (edge/preferences.py, `neighbourhood`): on a day the home does not take part
it sends its P-plan with an offer of nothing and refuses orders; without consent to share the
plan it sends nothing at all.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from homeflex.agents.messages import (
    Ack,
    Direction,
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
from homeflex.edge.planner.planner import NoPlan, solve
from homeflex.edge.preferences import Neighbourhood

log = logging.getLogger(__name__)
PTU = timedelta(minutes=15)
PTU_S = PTU.total_seconds()
MIN_OFFER_W = 100.0  # less than this in a PTU is not worth offering
PRICE_CAP = 10.0  # €/kWh, the messages' bound


def day_start(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


@dataclass
class Answered:
    """A round the home answered: the prices, and the P-plan it stands by (W per PTU of the day,
    from `first_ptu`), revised with each order it took and each intraday change it reported."""

    prices: Prices
    first_ptu: int
    net_w: list[float]
    revision: int = 0
    day_ahead_w: list[float] = field(default_factory=list)  # revision 0, as first sent

    def __post_init__(self) -> None:
        if not self.day_ahead_w:
            self.day_ahead_w = list(self.net_w)

    def at(self, ptu: int) -> float:
        return self.net_w[ptu - self.first_ptu]

    def to_json(self) -> dict[str, Any]:
        return {
            "prices": json.loads(self.prices.encode()),
            "first_ptu": self.first_ptu,
            "net_w": self.net_w,
            "revision": self.revision,
            "day_ahead_w": self.day_ahead_w,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Answered:
        return cls(
            Prices.model_validate(data["prices"]),
            data["first_ptu"],
            data["net_w"],
            data["revision"],
            data.get("day_ahead_w", []),
        )


@dataclass
class HomeBrain(Reporting):
    name: str
    aggregator: str
    make_inputs: Callable[[Prices, list[PlannedOrder]], PlanInputs]
    offer_ptus: list[int]
    margin_eur_kwh: float = 0.02
    revise_w: float = 500.0
    on_order: Callable[[list[PlannedOrder]], None] | None = None
    state: Path | None = None
    choices: Callable[[], Neighbourhood] = Neighbourhood  # the owner's, read at each message
    orders: dict[str, list[PlannedOrder]] = field(default_factory=dict)  # order id → per PTU
    accepted: dict[str, FlexOrder] = field(default_factory=dict)  # order id → as received
    answered: dict[str, Answered] = field(default_factory=dict)  # round id →
    settlements: dict[str, Settlement] = field(default_factory=dict)  # order id → what it earned
    _new_plan: tuple[float, list[float], float] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.state is not None and self.state.exists():
            self._load(self.state)

    def binding(self) -> list[PlannedOrder]:
        """Every order kept, as the planner's bounds (the gateway plans with these too)."""
        return [p for planned in self.orders.values() for p in planned]

    def on_message(self, sender: str, message: Payload, now: float) -> tuple[Ack, list[Outgoing]]:
        if sender != self.aggregator:
            return Ack(status="refused", detail=f"{sender} is not this home's aggregator"), []
        try:
            if isinstance(message, Prices):
                return self._prices(message, now)
            if isinstance(message, FlexOrder):
                return self._order(message)
            if isinstance(message, Settlement):
                if message.order not in self.settlements:  # the same one again: the same
                    self.settlements[message.order] = message
                    self._save()
                return Ack(status="ok"), []
        except NoPlan as exc:
            return Ack(status="refused", detail=f"the planner found no plan: {exc}"), []
        except ValueError as exc:  # inputs the planner cannot take: the home keeps its plan
            log.warning("%s: %s refused: %s", self.name, type(message).__name__, exc)
            return Ack(status="refused", detail=str(exc)[:500]), []
        return Ack(status="refused", detail=f"a home takes no {type(message).__name__}"), []

    def on_failed(self, key: str, now: float) -> list[Outgoing]:
        log.warning("%s: %s never reached the aggregator; the home keeps its own plan", self.name,
                    key)  # fmt: skip
        return []

    # --- prices: P-plan and offer ------------------------------------------------------------

    def _prices(self, prices: Prices, now: float) -> tuple[Ack, list[Outgoing]]:
        if prices.round in self.answered:
            return Ack(status="ok", detail="answered before"), []
        if now > prices.answer_by:
            return Ack(status="refused", detail=f"round {prices.round} closed before it came"), []
        choices = self.choices()
        declined = choices.takes_part(prices.day)
        if not choices.share_plan:
            log.info("%s: %s not answered: %s", self.name, prices.round, declined)
            return Ack(status="ok", detail=f"not answered: {declined}"), []
        inputs = self.make_inputs(prices, self.binding())
        k0 = round((inputs.start.timestamp() - day_start(prices.day)) / PTU_S)  # plan index 0
        first = max(prices.first_ptu, k0)
        end = prices.first_ptu + len(prices.import_eur_kwh)
        if end > k0 + inputs.ptus or first >= end:
            raise ValueError(
                f"the home's plan (PTUs {k0}..{k0 + inputs.ptus - 1} of {prices.day}) does not "
                f"cover the priced PTUs {first}..{end - 1}"
            )
        trade = [] if declined else [p - k0 for p in self.offer_ptus if first <= p < end]
        plan, points = envelope(inputs, trade)
        self.answered[prices.round] = Answered(prices, first, plan.net_w[first - k0 : end - k0])
        log.info(
            "%s: answering %s with a plan from %s over %d PTUs of %s (%s)",
            self.name, prices.round, inputs.start.isoformat(timespec="minutes"), inputs.ptus,
            ", ".join(d.id for d in inputs.devices) or "no devices", prices.day,
        )  # fmt: skip
        blocks = []
        for e in points:
            # up: less net load than planned (down to min_w); down: more (up to max_w)
            for direction, w, cost in (
                (Direction.UP, e.planned_w - e.min_w, e.cost_down_eur),
                (Direction.DOWN, e.max_w - e.planned_w, e.cost_up_eur),
            ):
                if w < MIN_OFFER_W:
                    continue
                kwh = w / 1000 * PTU_S / 3600
                price = min(PRICE_CAP, cost / kwh + self.margin_eur_kwh)
                blocks.append(OfferBlock(ptu=k0 + e.ptu, direction=direction, kw=w / 1000,
                                         price=price))  # fmt: skip
        offer = FlexOffer(
            round=prices.round, id=f"{self.name}.{prices.round}", day=prices.day, blocks=blocks
        )
        self._save()
        return Ack(status="ok"), [
            self._plan_message(prices.round),
            Outgoing(self.aggregator, offer, key=f"offer:{prices.round}"),
        ]

    def _plan_message(self, round_id: str) -> Outgoing:
        a = self.answered[round_id]
        msg = PPlan(
            round=round_id,
            day=a.prices.day,
            first_ptu=a.first_ptu,
            net_kw=[w / 1000 for w in a.net_w],
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
        declined = self.choices().takes_part(order.day)
        if declined is not None:
            return Ack(status="refused", detail=declined), []
        outside = [p for p in order.profile_kw if not 0 <= p - a.first_ptu < len(a.net_w)]
        if outside:
            return Ack(status="refused", detail=f"PTUs {outside} are not in the P-plan"), []
        day = datetime(order.day.year, order.day.month, order.day.day, tzinfo=UTC)
        up = order.direction == Direction.UP
        planned = [
            PlannedOrder(
                id=f"{order.id}@{ptu}",
                start=day + ptu * PTU,
                end=day + (ptu + 1) * PTU,
                max_net_w=a.at(ptu) - kw * 1000 if up else None,
                min_net_w=None if up else a.at(ptu) + kw * 1000,
                price_eur=order.price * kw * PTU_S / 3600,
            )
            for ptu, kw in sorted(order.profile_kw.items())
        ]
        inputs = self.make_inputs(a.prices, [*self.binding(), *planned])
        plan = solve(inputs)
        missed = [r for r in plan.requests if r.kind == "order" and not r.met]
        if missed:
            why = "; ".join(f"{r.id}: {r.reason}" for r in missed)
            return Ack(status="refused", detail=f"cannot deliver: {why}"), []
        self.orders[order.id] = planned
        self.accepted[order.id] = order
        self._adopt(a, inputs.start.timestamp(), plan.net_w)
        a.revision += 1
        self._save()
        if self.on_order is not None:
            self.on_order(planned)
        return Ack(status="ok"), [self._plan_message(order.round)]

    # --- intraday ----------------------------------------------------------------------------

    def plan_changed(self, start: float, net_w: list[float], now: float) -> None:
        """The gateway has a new plan (`now` on the gateway's clock): weighed by `revise` at the
        next tick. Safe from another thread: one slot, replaced whole; only the newest counts."""
        self._new_plan = (start, net_w, now)

    def on_tick(self, now: float) -> list[Outgoing]:
        new, self._new_plan = self._new_plan, None
        return [] if new is None else self.revise(*new)

    def revise(self, start: float, net_w: list[float], now: float) -> list[Outgoing]:
        """The gateway's new plan (net W per PTU from `start`): a new P-plan revision for each
        answered round whose not-yet-begun PTUs it moved by more than `revise_w`."""
        out = []
        for rid, a in self.answered.items():
            first = day_start(a.prices.day) + a.first_ptu * PTU_S
            if first + len(a.net_w) * PTU_S <= now:
                continue  # the round's day is over
            old = list(a.net_w)
            self._adopt(a, start, net_w)
            moved = [
                abs(new - was)
                for t, (new, was) in enumerate(zip(a.net_w, old, strict=True))
                if first + t * PTU_S >= now
            ]
            if max(moved, default=0.0) > self.revise_w:
                a.revision += 1
                out.append(self._plan_message(rid))
            else:
                a.net_w = old  # small changes are not news: the aggregator keeps the old plan
        if out:
            self._save()
        return out

    @staticmethod
    def _adopt(a: Answered, start: float, net_w: list[float]) -> None:
        """Take a plan's values (net W per PTU from `start`) into the P-plan where they overlap."""
        first = day_start(a.prices.day) + a.first_ptu * PTU_S
        for t in range(len(a.net_w)):
            i = round((first + t * PTU_S - start) / PTU_S)
            if 0 <= i < len(net_w):
                a.net_w[t] = net_w[i]

    # --- state -------------------------------------------------------------------------------

    def _save(self) -> None:
        if self.state is None:
            return
        data = {
            "answered": {rid: a.to_json() for rid, a in self.answered.items()},
            "orders": {
                oid: {
                    "order": json.loads(self.accepted[oid].encode()),
                    "planned": [p.model_dump(mode="json") for p in planned],
                }
                for oid, planned in self.orders.items()
            },
            "settlements": {oid: json.loads(s.encode()) for oid, s in self.settlements.items()},
        }
        tmp = self.state.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.state)

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text())
            self.answered = {r: Answered.from_json(a) for r, a in data["answered"].items()}
            for oid, o in data["orders"].items():
                self.accepted[oid] = FlexOrder.model_validate(o["order"])
                self.orders[oid] = [PlannedOrder.model_validate(p) for p in o["planned"]]
            self.settlements = {
                oid: Settlement.model_validate(s) for oid, s in data["settlements"].items()
            }
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # the orders cannot be honoured without this file: say so loudly, keep running
            log.error("%s: agent state %s unreadable (%s); starting without it", self.name,
                      path, exc)  # fmt: skip
            return
        log.info("%s: %d rounds and %d orders restored from %s", self.name, len(self.answered),
                 len(self.orders), path)  # fmt: skip
