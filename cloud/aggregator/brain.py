"""The aggregator's part of the USEF cycle for one congestion point (seed 004 §2.2-2.3, §6).

Plan: for each day it opens a round (agents/rounds.py): prices to every home, each answers with
its P-plan and flexibility offer by the deadline; the round closes without the silent. Validate:
the A-plan, summed, goes to the DSO as the D-prognosis; when the DSO asks for flexibility, the
aggregator offers its homes' blocks in the requested direction and PTUs at or below the max
price, summed into tiers by price step and divisibility, so the DSO learns no home's offer.
When the DSO orders a tier, the aggregator splits the order among the homes whose blocks made
the tier, cheapest first, a block that may not be split whole or not at all, prices each home's
share by its payment rule (cloud/aggregator/local_market.py: pay-as-bid, seed 004's rule, by
default; uniform or VCG), and sends each home its order, delivered until acknowledged. Settle:
each home order is measured against the home's P-plan before it; the DSO's settlements of the
aggregator's own orders are taken and kept (`dso_settlements`).

Settle on the platform (`settling`): on a tick, each day with DSO orders whose end is
`after_s` past is settled from the homes' meters (cloud/aggregator/meters.py: the history
service's PTU energies, final ones only), every `retry_s` until it is done: each home order
once its home's readings cover the ordered PTUs (the ledger keeps it, the home gets its
Settlement); and once every home the DSO's orders were bought on (those whose P-plans made the
D-prognosis) has readings for the PTUs the DSO ordered, the DSO gets one `Metered`: their sum
per PTU, no home's own series (seed 004 C.1.3). It is recorded in the ledger when sent, so it
is sent once; delivery retries it until the DSO acknowledges. Operate's re-dispatch orders are
settled with the home orders, each against the home's plan when it was ordered; a day with
re-dispatch but no sale (found in the store, so also after a restart) is settled without a sum
for the DSO.

Operate (cloud/aggregator/operate.py): homes keep sending P-plan revisions after the round
closed, and they are taken. A PTU that begins less than an hour from now and is not over is
locked (gate closure): it is no longer offered to the DSO. On each tick, wherever in a locked
PTU the portfolio's current A-plan is above what the aggregator committed (its last D-prognosis
less the DSO's orders it took) by more than a tolerance, it orders the difference from its
homes' upward blocks that no order took (below it where a downward order was sold: from their
downward blocks), cheapest first, pay-as-bid, each block at most once,
without trading and without a word to the DSO; what no block covers is logged once per PTU.

Every state change is kept in the RoundStore before it is acknowledged, so an aggregator
restarted mid-round resumes its rounds; the flexibility part (request, offer, orders) lives in
memory and is rebuilt by the DSO resending what it did not see acknowledged.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from homeflex.agents.messages import (
    Ack,
    DPrognosis,
    FlexOffer,
    FlexOrder,
    FlexRequest,
    Metered,
    OfferBlock,
    Payload,
    PPlan,
    Prices,
    Settlement,
)
from homeflex.agents.node import Outgoing, Reporting
from homeflex.agents.rounds import Round, RoundStore
from homeflex.cloud.aggregator.local_market import PaymentRule, split
from homeflex.cloud.aggregator.meters import Meters, day_start
from homeflex.cloud.aggregator.operate import TOLERANCE_KW, Operate, locked
from homeflex.cloud.market import objects as mo
from homeflex.cloud.market.settlement import Ledger, settle

log = logging.getLogger(__name__)
PRICE_STEP = 0.01  # €/kWh: tiers are home prices rounded up to this
# a settlement or a day's meter sum is delivered for days: the other side may be down a while
SETTLED_TTL_S = 7 * 86_400.0
RESUME_DAYS = 14  # a restarted aggregator takes back the DSO's orders of this many days


@dataclass(frozen=True)
class DayPrices:
    import_eur_kwh: list[float]
    export_eur_kwh: list[float]


# tier (price, divisible) → PTU → the homes' blocks in it: (home price, home, kW)
Tiers = dict[tuple[float, bool], dict[int, list[tuple[float, str, float]]]]


@dataclass
class Flex:
    """A DSO request for one day and what became of it."""

    request: FlexRequest
    answers: Round  # the closed round the offer was built from
    offer: FlexOffer
    tiers: Tiers
    tier_ids: dict[str, tuple[float, bool]] = field(init=False)  # the offer's, as orders name them
    orders: dict[str, dict[str, FlexOrder]] = field(default_factory=dict)  # DSO order → home
    sold: dict[str, FlexOrder] = field(default_factory=dict)  # the DSO's orders taken, by id
    baselines: dict[str, list[float]] = field(default_factory=dict)  # home → P-plan, kW per PTU

    def __post_init__(self) -> None:
        self.tier_ids = self.offer.tiers(self.request.direction)


@dataclass
class Settling:
    """How the aggregator settles its days on its own (module docstring): the homes' meters,
    its ledger, the penalty for a kWh short (€), how long after a day's end settling begins and
    how often it is tried until the day is done (seconds of the agents' clock)."""

    meters: Meters
    ledger: Ledger
    penalty_eur_kwh: float = 0.1
    after_s: float = 1800.0
    retry_s: float = 60.0
    next_try: float = field(default=0.0, init=False)
    done: set[date] = field(default_factory=set, init=False)  # days nothing is left to do for
    waiting: dict[date, list[str]] = field(default_factory=dict, init=False)  # for meters of


class AggregatorBrain(Reporting):
    def __init__(
        self,
        name: str,
        homes: frozenset[str],
        dso: str,
        congestion_point: str,
        store: RoundStore,
        prices: Callable[[date], DayPrices],
        *,
        answer_window_s: float = 120.0,
        payment: PaymentRule = "pay-as-bid",
        redispatch_tolerance_kw: float = TOLERANCE_KW,
        settling: Settling | None = None,
    ) -> None:
        self.name = name
        self.payment = payment  # how each home's share of a DSO order is priced
        self.homes = homes
        self.dso = dso
        self.congestion_point = congestion_point
        self.store = store
        self.prices = prices
        self.answer_window_s = answer_window_s
        self.rounds: dict[str, Round] = {}
        for rid in store.open_rounds():
            r = store.load(rid)
            if r is not None:
                self.rounds[rid] = r
                log.info("%s: resumed round %s (%d answers)", name, rid, len(r.plans))
        self.flex: dict[str, Flex] = {}  # request id →
        self.dso_settlements: dict[str, Settlement] = {}  # the DSO's order id →
        self.to_open: list[date] = []  # days to open a round for at the next tick
        self.operate = Operate(name, store, tolerance_kw=redispatch_tolerance_kw)
        self.settling = settling
        self._resume_flex()

    def _resume_flex(self) -> None:
        """After a restart: the DSO's requests and orders of the last RESUME_DAYS days (before the
        newest round's), rebuilt
        from their records as they were taken (the offer from the round's stored answers and the
        request's time, each order's split by the same rule), and each order's baselines as they
        were then: what Settle needs, and what makes a resent request or order "taken before"."""
        summaries = self.store.summaries()
        if not summaries:
            return
        recent = max(date.fromisoformat(s["day"]) for s in summaries) - timedelta(days=RESUME_DAYS)
        for summary in summaries:
            if date.fromisoformat(summary["day"]) < recent:
                continue
            records = self.store.records(summary["id"])
            requests = any(k.startswith("request:") for k in records)
            answers = self.store.load(summary["id"]) if requests else None  # a round's answers
            for key, rec in sorted(records.items()):
                if key.startswith("request:") and answers is not None:
                    req = FlexRequest.model_validate(rec["request"])
                    if "tiers" not in rec:  # kept before offers were: not resumed
                        log.error("%s: request %s kept without its offer: not resumed",
                                  self.name, req.id)  # fmt: skip
                        continue
                    self._offer(req, answers, _tiers_from_json(rec["tiers"]))
            for key, rec in sorted(records.items()):
                if key.startswith("dso-order:"):
                    order = FlexOrder.model_validate(rec["order"])
                    ack, _ = self._order(order)
                    flex = next((f for f in self.flex.values() if order.id in f.orders), None)
                    if ack.status != "ok" or flex is None:
                        log.error("%s: order %s not resumed: %s", self.name, order.id, ack.detail)
                        continue
                    flex.baselines.update(rec["baselines"])
            if any(k.startswith("dso-order:") for k in records):
                log.info("%s: resumed the DSO's orders of round %s", self.name, summary["id"])

    def round_id(self, day: date, seq: int = 0) -> str:
        """Round `seq` for `day`: 0 the day-ahead one, 1, 2 … the plans made again later."""
        return f"{self.name}.{day.isoformat()}" + (f".{seq}" if seq else "")

    # --- Plan --------------------------------------------------------------------------------

    def open_round(self, day: date, now: float, seq: int = 0) -> list[Outgoing]:
        """Ask every home for its P-plan and offer for `day`; nothing if the round exists."""
        rid = self.round_id(day, seq)
        if rid in self.rounds or self.store.load(rid) is not None:
            return []
        r = Round(rid, day, self.homes, answer_by=now + self.answer_window_s)
        self.store.open_round(r)
        self.rounds[rid] = r
        p = self.prices(day)
        msg = Prices(
            round=rid,
            day=day,
            import_eur_kwh=p.import_eur_kwh,
            export_eur_kwh=p.export_eur_kwh,
            answer_by=r.answer_by,
        )
        ttl = self.answer_window_s
        return [Outgoing(h, msg, key=f"prices:{rid}:{h}", ttl_s=ttl) for h in sorted(self.homes)]

    def on_message(self, sender: str, message: Payload, now: float) -> tuple[Ack, list[Outgoing]]:
        if isinstance(message, PPlan | FlexOffer):
            r = (
                self.rounds.get(message.round)
                or self.operate.round(message.round, message.day)  # revisions during the day
                or self.store.load(message.round)
            )
            if r is None:
                return Ack(status="refused", detail=f"no round {message.round!r}"), []
            ack, changed = r.take(sender, message, now)
            if changed:
                self.store.save_answer(r, sender, message)
            return ack, []
        if sender != self.dso:
            return Ack(status="refused", detail=f"{sender} is not this aggregator's DSO"), []
        if isinstance(message, FlexRequest):
            return self._request(message, now)
        if isinstance(message, FlexOrder):
            ack, out = self._order(message)
            if ack.status == "ok":  # what was sold, and each home's share, for Operate
                self.operate.sold(message)
                self.operate.sent(out)
            return ack, out
        if isinstance(message, Settlement):
            return self._dso_settlement(message)
        return Ack(status="refused", detail=f"no use for {type(message).__name__}"), []

    def on_tick(self, now: float) -> list[Outgoing]:
        out = []
        while self.to_open:
            out += self.open_round(self.to_open.pop(0), now)
        for r in list(self.rounds.values()):
            if r.close_if_due(now):
                self.store.save_closed(r)
                del self.rounds[r.id]
                log.info("%s: round %s closed; missing %s", self.name, r.id, r.missing())
                prognosis = self._prognosis(r)
                assert isinstance(prognosis.message, DPrognosis)
                self.operate.follow(r, prognosis.message, now)
                out.append(prognosis)
        return out + self.operate.tick(now) + self._settle_due(now)

    def on_delivered(self, key: str, ack: Ack, now: float) -> list[Outgoing]:
        self.operate.delivered(key, ack.status == "ok")  # a refused order is not in force
        return super().on_delivered(key, ack, now)

    def on_failed(self, key: str, now: float) -> list[Outgoing]:
        self.operate.delivered(key, ok=False)
        return super().on_failed(key, now)

    # --- Settle ------------------------------------------------------------------------------

    def settle(
        self,
        day: date,
        metered_kwh: Mapping[str, Mapping[int, float]],
        ledger: Ledger,
        penalty_eur_kwh: float,
    ) -> list[Outgoing]:
        """Each home order of `day` measured against the home's P-plan before the order, from
        its metered PTU energies (kWh): paid for what was delivered at the order's price,
        penalised for the rest; the record goes into the ledger and to the home. An order whose
        home has no meter reading for an ordered PTU waits for the next call (nothing is paid
        without proof); one settled before is not settled again."""
        settled = {e.data()["order"] for e in ledger.entries() if e.kind == "settlement"}
        out = []
        for home, order, base in self._home_orders(day):
            if order.id in settled:
                continue
            try:
                record = settle(
                    order=order.id,
                    participant=home,
                    awarded_kw=order.profile_kw,
                    baseline_kw={t: base[t] for t in order.profile_kw},
                    metered_kwh=metered_kwh.get(home, {}),
                    price=order.price,
                    penalty_rate=penalty_eur_kwh,
                    direction=mo.Direction(order.direction.value),
                )
            except ValueError as exc:
                log.warning("%s: %s not settled yet: %s", self.name, order.id, exc)
                continue
            ledger.record(record)
            settled.add(order.id)
            msg = Settlement(
                order=order.id,
                day=day,
                delivered_kwh=record.delivered_kwh,
                shortfall_kwh=record.shortfall_kwh,
                payment_eur=record.payment_eur,
                penalty_eur=record.penalty_eur,
            )
            out.append(Outgoing(home, msg, key=f"settlement:{order.id}", ttl_s=SETTLED_TTL_S))
        return out

    def _home_orders(self, day: date) -> list[tuple[str, FlexOrder, Mapping[int, float]]]:
        """The home orders of `day` in force, each with its home and baseline (kW by PTU):
        the DSO's orders as split, against the home's P-plan before them, and the re-dispatch
        orders of Operate, against the home's plan when each was ordered. One a home refused
        was never in force: neither paid nor fined."""
        out: list[tuple[str, FlexOrder, Mapping[int, float]]] = []
        for flex in self.flex.values():
            if flex.request.day == day:
                for per_home in flex.orders.values():
                    for home, order in sorted(per_home.items()):
                        if not self.operate.void(order.id, day):
                            out.append((home, order, dict(enumerate(flex.baselines[home]))))
        for o in self.operate.redispatched(day):
            if o.baseline_kw is None:
                log.warning("%s: re-dispatch %s has no baseline kept: not settled", self.name,
                            o.order.id)  # fmt: skip
                continue
            out.append((o.home, o.order, o.baseline_kw))
        return out

    def _settle_due(self, now: float) -> list[Outgoing]:
        """Settle the days that are due (module docstring), at most every `retry_s`. A history
        that cannot be read is logged and tried again: the tick's other work goes on."""
        s = self.settling
        if s is None or now < s.next_try:
            return []
        recent = datetime.fromtimestamp(now, UTC).date() - timedelta(days=RESUME_DAYS)
        days = {f.request.day for f in self.flex.values() if f.sold}
        days |= set(self.store.days_with("order:", recent))  # re-dispatched without a sale
        days -= s.done
        due = [d for d in sorted(days) if now >= day_start(d + timedelta(days=1)) + s.after_s]
        if due:
            s.next_try = now + s.retry_s
        out = []
        for day in due:
            try:
                out += self.settle_day(day, s)
            except (OSError, sqlite3.Error) as exc:
                log.warning("%s: %s not settled now (tried again): %s", self.name, day, exc)
        return out

    def settle_day(self, day: date, s: Settling) -> list[Outgoing]:
        """What can be settled of `day` now: home orders (`settle`) and the DSO's `Metered`."""
        flexes = [f for f in self.flex.values() if f.request.day == day and f.sold]
        # the homes whose P-plans made the D-prognosis the DSO bought on: its baseline's homes
        homes = sorted({h for f in flexes for h in f.answers.plans})
        orders = self._home_orders(day)
        metered = s.meters.day_kwh(sorted(set(homes) | {h for h, _, _ in orders}), day)
        out = self.settle(day, metered, s.ledger, s.penalty_eur_kwh)
        entries = s.ledger.entries()
        sent = not flexes or any(  # nothing sold that day: no sum for the DSO
            e.kind == "metered"
            and e.data()["day"] == day.isoformat()
            and e.data()["congestion_point"] == self.congestion_point
            for e in entries
        )
        if not sent:
            ptus = {t for f in flexes for o in f.sold.values() for t in o.profile_kw}
            first, last = min(ptus), max(ptus)
            span = range(first, last + 1)
            waiting = [h for h in homes if any(t not in metered.get(h, {}) for t in span)]
            if waiting:
                if s.waiting.get(day) != waiting:  # said once, not on every try
                    s.waiting[day] = waiting
                    log.info("%s: %s: the DSO's sum waits for the meters of %s",
                             self.name, day, ", ".join(waiting))  # fmt: skip
            else:
                msg = Metered(
                    day=day,
                    first_ptu=first,
                    congestion_point=self.congestion_point,
                    net_kwh=[sum(metered[h][t] for h in homes) for t in span],
                    homes=len(homes),
                )
                s.ledger.append("metered", msg.model_dump(mode="json"))
                key = f"metered:{self.congestion_point}:{day.isoformat()}"
                out.append(Outgoing(self.dso, msg, key=key, ttl_s=SETTLED_TTL_S))
                sent = True
        settled = {e.data()["order"] for e in s.ledger.entries() if e.kind == "settlement"}
        homes_done = all(o.id in settled for _, o, _ in orders)
        if sent and homes_done:
            s.done.add(day)
            log.info("%s: %s settled", self.name, day)
        return out

    def _dso_settlement(self, s: Settlement) -> tuple[Ack, list[Outgoing]]:
        """The DSO's settlement of one of this aggregator's orders, kept by order id. The same
        one again (its ack was lost) changes nothing; a different one for a settled order is
        refused: the DSO's ledger settles an order once."""
        before = self.dso_settlements.get(s.order)
        if before == s:
            return Ack(status="ok", detail="taken before"), []
        if before is not None:
            detail = f"order {s.order} was settled before with other values"
            return Ack(status="refused", detail=detail), []
        self.dso_settlements[s.order] = s
        log.info("%s: order %s settled: %.3f kWh delivered, %.2f € paid, %.2f € penalty",
                 self.name, s.order, s.delivered_kwh, s.payment_eur, s.penalty_eur)  # fmt: skip
        return Ack(status="ok"), []

    def _prognosis(self, r: Round) -> Outgoing:
        msg = DPrognosis(
            round=r.id,
            day=r.day,
            congestion_point=self.congestion_point,
            net_kw=r.a_plan(),
            homes=len(r.plans),
        )
        return Outgoing(self.dso, msg, key=f"prognosis:{r.id}")

    # --- Validate: offer and orders ----------------------------------------------------------

    def _request(self, req: FlexRequest, now: float) -> tuple[Ack, list[Outgoing]]:
        """Offer the homes' blocks that no order has taken yet (a later request of the day is
        offered what is left), in the requested direction and PTUs, at or below the max price,
        outside the gate."""
        if req.id in self.flex:
            return Ack(status="ok", detail="taken before"), []
        answers = self.store.load(req.round)
        committed = self.operate.commitment(req.round, req.day)
        if answers is None or committed is None:
            detail = f"no round {req.round!r} with a D-prognosis sent here"
            return Ack(status="refused", detail=detail), []
        tiers: Tiers = {}
        for ptu in sorted(req.profile_kw):
            if locked(req.day, ptu, now):
                continue
            for price, home, _, kw, divisible in committed.free_blocks(ptu, req.direction):
                if price <= req.max_price:
                    tier = (_step_up(price, req.max_price), divisible)
                    tiers.setdefault(tier, {}).setdefault(ptu, []).append((price, home, kw))
        flex = self._offer(req, answers, tiers)
        record = {"request": req.model_dump(mode="json"), "at": now, "tiers": _tiers_json(tiers)}
        self.store.save_record(req.round, f"request:{req.id}", record)  # for a restart
        return Ack(status="ok"), [Outgoing(self.dso, flex.offer, key=f"offer:{req.id}")]

    def _offer(self, req: FlexRequest, answers: Round, tiers: Tiers) -> Flex:
        """The offer of `tiers` to the DSO, summed per tier and PTU, kept as the request's Flex."""
        blocks = [
            OfferBlock(
                ptu=ptu,
                direction=req.direction,
                kw=sum(kw for _, _, kw in members),
                price=price,
                divisible=divisible,
            )
            for (price, divisible), by_ptu in sorted(tiers.items())
            for ptu, members in sorted(by_ptu.items())
        ]
        offer = FlexOffer(
            round=req.round, id=f"{self.name}.{req.id}", day=req.day, request=req.id, blocks=blocks
        )
        self.flex[req.id] = Flex(req, answers, offer, tiers)
        return self.flex[req.id]

    def _order(self, order: FlexOrder) -> tuple[Ack, list[Outgoing]]:
        flex = next((f for f in self.flex.values() if order.offer in f.tier_ids), None)
        if flex is None:
            return Ack(status="refused", detail=f"no offer tier {order.offer!r} here"), []
        tier = flex.tier_ids[order.offer]
        if order.id in flex.orders:
            return Ack(status="ok", detail="taken before"), []
        if order.direction != flex.request.direction:
            way = flex.request.direction.value
            detail = f"{order.offer} is offered {way}, not {order.direction.value}"
            return Ack(status="refused", detail=detail), []
        if order.price < tier[0]:
            detail = f"{order.offer} is offered at {tier[0]} €/kWh; the order pays {order.price}"
            return Ack(status="refused", detail=detail), []
        if not _fits(flex, tier, order):
            detail = f"the order asks more kW in some PTU than tier {order.offer} holds"
            return Ack(status="refused", detail=detail), []
        shares = split(order.profile_kw, order.price, flex.tiers[tier], divisible=tier[1],
                       rule=self.payment)  # fmt: skip
        answers = flex.answers
        home_orders = {
            home: FlexOrder(
                round=order.round,
                id=f"{order.id}.{n}",
                day=order.day,
                offer=answers.offers[home].id,
                direction=order.direction,
                profile_kw=share.profile_kw,
                price=share.price,
            )
            for n, (home, share) in enumerate(sorted(shares.items()))
        }
        flex.orders[order.id] = home_orders
        flex.sold[order.id] = order
        for home in home_orders:  # the P-plan the order is measured against, before any re-plan
            plan = answers.plans[home]
            flex.baselines.setdefault(home, [0.0] * plan.first_ptu + list(plan.net_kw))
        record = {
            "order": order.model_dump(mode="json"),
            "baselines": {home: flex.baselines[home] for home in home_orders},
        }
        self.store.save_record(order.round, f"dso-order:{order.id}", record)  # for a restart
        out = [Outgoing(h, o, key=f"order:{o.id}") for h, o in sorted(home_orders.items())]
        return Ack(status="ok"), out


def _tiers_json(tiers: Tiers) -> list[Any]:
    return [[price, divisible, ptu, [list(m) for m in members]]
            for (price, divisible), by_ptu in sorted(tiers.items())
            for ptu, members in sorted(by_ptu.items())]  # fmt: skip


def _tiers_from_json(data: list[Any]) -> Tiers:
    tiers: Tiers = {}
    for price, divisible, ptu, members in data:
        tiers.setdefault((price, divisible), {})[ptu] = [(p, h, kw) for p, h, kw in members]
    return tiers


def _step_up(price: float, cap: float) -> float:
    """A home's price rounded up to the tier step, never above the request's max price."""
    return min(cap, math.ceil(round(price / PRICE_STEP, 9)) * PRICE_STEP)


def _fits(flex: Flex, tier: tuple[float, bool], order: FlexOrder) -> bool:
    by_ptu = flex.tiers[tier]
    return all(
        ptu in by_ptu and kw <= sum(k for _, _, k in by_ptu[ptu]) + 1e-6
        for ptu, kw in order.profile_kw.items()
    )
