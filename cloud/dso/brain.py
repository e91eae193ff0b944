"""The DSO's side of Validate (seed 004 §6, UC3): sum the aggregators' D-prognoses at each
congestion point, ask every aggregator there for the excess over the transformer limit with a
max price, buy the cheapest offers (cloud/market/dso.py `procure`) and order them. The excess
goes both ways: load above the limit is asked away upward (less load; request id
`<point>.<day>`), back-flow beyond it downward (more load, less export; `<point>.<day>.down`),
each direction its own request, offers and purchase; the check is decided when both are. A
point with an LV feeder (`CongestionPoint.feeder`, cloud/dso/feeder.py) is also checked by a
power flow of the aggregators' D-prognoses: in each PTU a request asks for the larger of the
transformer's excess and the relief the feeder's buses and lines need; after each purchase
there the DSO validates again on the D-prognoses less what it bought (`_validate_again`), until
the feeder is safe or a purchase buys nothing.

A D-prognosis that comes after a decided check starts a new validation of the point for that
day (the aggregators planned again: their homes plan with the orders they hold, so flexibility
already sold is in the new sums, and only what is still over the limit is asked for).
Per congestion point and day: the D-prognoses are awaited from every aggregator of the point,
or until `prognosis_wait_s` after the first: a silent aggregator does not block the check, and
its load is taken from its last D-prognosis of an earlier day (the same PTUs of the day), or
left out, logged, when there is none. Offers are awaited until the request's `answer_by`, then
the procurement runs with those that came. A D-prognosis or offer received again (its ack was
lost) is acknowledged and changes nothing; a newer one replaces the old before the check or the
purchase. The DSO sees only sums per aggregator: no message it takes names a home.

Settle (`settle`, after the day): each order is measured against the D-prognosis of its
aggregator that the purchase was made on (kept with the order: a later validation's prognoses,
which hold what was sold, do not replace it; several orders of one aggregator in a PTU are
stacked, cheapest first, see `_keep_baselines`), from the metered energy of the aggregator's
homes at the point, summed (kWh per PTU); paid at the order's price for what was delivered,
penalised for the rest (cloud/market/settlement.py), recorded once in the ledger and sent to the
aggregator. The DSO's ledger names aggregators only.

On the platform the aggregator sends, after the day, one `Metered` per day and congestion
point: the sum of its homes' meters over the PTUs it was ordered. It settles that aggregator's
orders of the day at the point (with the brain's `ledger` and `penalty_eur_kwh`). The same
Metered again changes nothing; another one for a day and point taken before is refused (each
order is settled once), as is one for a point the aggregator is not registered at, or one that
does not cover every PTU of its orders (the Ack says which).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from homeflex.agents.messages import (
    Ack,
    Direction,
    DPrognosis,
    FlexOffer,
    FlexOrder,
    FlexRequest,
    Metered,
    Payload,
    Settlement,
)
from homeflex.agents.node import Outgoing, Reporting
from homeflex.cloud.dso.checks import CheckStore
from homeflex.cloud.dso.feeder import Feeder, FeederCheck
from homeflex.cloud.market import dso as market
from homeflex.cloud.market import objects as mo
from homeflex.cloud.market.settlement import Ledger, settle

log = logging.getLogger(__name__)
PTUS = 96
SETTLED_TTL_S = 7 * 86_400.0  # a settlement is delivered for days: the aggregator may be down
RESUME_DAYS = 14  # a restarted DSO takes back its checks of this many days


@dataclass(frozen=True)
class CongestionPoint:
    name: str
    limit_kw: float
    aggregators: frozenset[str]
    other_load_kw: tuple[float, ...] = (0.0,) * PTUS  # load of homes outside any aggregator
    feeder: Feeder | None = None  # the LV feeder behind it: a power flow in Validate too


@dataclass
class Check:
    """One congestion point's validation for one day."""

    point: CongestionPoint
    day: date
    started: float
    prognoses: dict[str, DPrognosis] = field(default_factory=dict)
    requests: dict[mo.Direction, mo.FlexRequest] = field(default_factory=dict)  # up, down
    answer_by: float = 0.0
    offers: dict[str, dict[str, FlexOffer]] = field(default_factory=dict)  # request → agg →
    procurements: dict[mo.Direction, market.Procurement] = field(default_factory=dict)
    safe: bool | None = None  # decided: True when no PTU is over the limit
    estimated: dict[str, DPrognosis] = field(default_factory=dict)  # the silent, from before
    generation: int = 0  # the day's first validation of the point, or a later one
    grid: FeederCheck | None = None  # the power flow, when the point has a feeder

    def by_aggregator_kw(self) -> dict[str, list[float]]:
        """Each aggregator's D-prognosis (or the estimate standing in), kW per PTU of the day."""
        out = {}
        for agg, p in [*self.prognoses.items(), *self.estimated.items()]:
            series = [0.0] * PTUS
            series[p.first_ptu : p.first_ptu + len(p.net_kw)] = p.net_kw
            out[agg] = series
        return out

    def prognosis_kw(self) -> list[float]:
        total = list(self.point.other_load_kw)
        for p in [*self.prognoses.values(), *self.estimated.values()]:
            for n, kw in enumerate(p.net_kw):
                total[p.first_ptu + n] += kw
        return total

    def after_kw(self) -> list[float]:
        """The D-prognosis after what was ordered."""
        out = self.prognosis_kw()
        for got in self.procurements.values():
            out = got.apply(out)
        return out

    def held(self, aggregator: str) -> DPrognosis:
        """The aggregator's D-prognosis (or estimate) less what this check bought from it: its
        load once its homes hold the orders."""
        before = self.prognoses.get(aggregator) or self.estimated[aggregator]
        net = list(before.net_kw)
        for got in self.procurements.values():
            sign = 1.0 if got.request.direction == mo.Direction.UP else -1.0
            for o in got.orders():
                if o.participant == aggregator:
                    for t, kw in o.profile_kw.items():
                        if 0 <= t - before.first_ptu < len(net):
                            net[t - before.first_ptu] -= sign * kw
        return before.model_copy(update={"net_kw": net})

    def request_for(self, request_id: str) -> mo.FlexRequest | None:
        return next((r for r in self.requests.values() if r.id == request_id), None)

    def to_json(self) -> dict[str, Any]:
        """What a restarted DSO needs to go on with it (the purchases are made again from the
        offers: `procure` is deterministic)."""

        def dump(messages: Mapping[str, Payload]) -> dict[str, Any]:
            return {k: m.model_dump(mode="json") for k, m in messages.items()}

        return {
            "point": self.point.name,
            "day": self.day.isoformat(),
            "started": self.started,
            "generation": self.generation,
            "prognoses": dump(self.prognoses),
            "estimated": dump(self.estimated),
            "requests": {d.value: r.model_dump(mode="json") for d, r in self.requests.items()},
            "answer_by": self.answer_by,
            "offers": {rid: dump(by_agg) for rid, by_agg in self.offers.items()},
            "bought": [d.value for d in self.procurements],
            "safe": self.safe,
        }

    @classmethod
    def from_json(cls, point: CongestionPoint, data: dict[str, Any]) -> Check:
        """The check as kept, without its purchases (DsoBrain makes them again)."""
        return cls(
            point=point,
            day=date.fromisoformat(data["day"]),
            started=data["started"],
            generation=data["generation"],
            prognoses={a: DPrognosis.model_validate(p) for a, p in data["prognoses"].items()},
            estimated={a: DPrognosis.model_validate(p) for a, p in data["estimated"].items()},
            requests={
                mo.Direction(d): mo.FlexRequest.model_validate(r)
                for d, r in data["requests"].items()
            },
            answer_by=data["answer_by"],
            offers={
                rid: {a: FlexOffer.model_validate(o) for a, o in by_agg.items()}
                for rid, by_agg in data["offers"].items()
            },
            safe=data["safe"],
        )


@dataclass(frozen=True)
class Placed:
    """An order the DSO placed, with what it is settled against: the D-prognosis of its
    aggregator the purchase was made on, kW per PTU of the day; `point` is the congestion
    point it was bought for."""

    aggregator: str
    order: FlexOrder
    baseline_kw: dict[int, float]
    point: str


def _placed_json(p: Placed) -> dict[str, Any]:
    return {
        "aggregator": p.aggregator,
        "order": p.order.model_dump(mode="json"),
        "baseline_kw": {str(t): kw for t, kw in p.baseline_kw.items()},
        "point": p.point,
    }


def _placed_from_json(data: dict[str, Any]) -> Placed:
    return Placed(
        data["aggregator"],
        FlexOrder.model_validate(data["order"]),
        {int(t): kw for t, kw in data["baseline_kw"].items()},
        data["point"],
    )


class DsoBrain(Reporting):
    def __init__(
        self,
        name: str,
        points: list[CongestionPoint],
        max_price: float,
        *,
        prognosis_wait_s: float = 120.0,
        offer_window_s: float = 120.0,
        period_h: float = 0.25,
        ledger: Ledger | None = None,
        penalty_eur_kwh: float = 0.1,
        store: CheckStore | None = None,
    ) -> None:
        self.name = name
        self.points = {p.name: p for p in points}
        self.max_price = max_price
        self.prognosis_wait_s = prognosis_wait_s
        self.offer_window_s = offer_window_s
        self.period_h = period_h
        self.checks: list[Check] = []  # in the order they began
        self.placed: dict[str, Placed] = {}  # order id → the order and its baseline
        self.ledger = ledger  # where `Metered` is settled into; None: it is refused
        self.penalty_eur_kwh = penalty_eur_kwh
        self.metered: dict[tuple[str, str, date], Metered] = {}  # (aggregator, point, day) →
        for e in ledger.entries() if ledger is not None else []:
            if e.kind == "placed":  # a restart: the orders placed before are still to settle
                p = _placed_from_json(e.data())
                self.placed[p.order.id] = p
        self.store = store
        if store is not None:
            self._resume(store)

    def _resume(self, store: CheckStore) -> None:
        """After a restart: the validations of the last RESUME_DAYS days (before the newest
        one's) as they were kept, each purchase made again from the offers it was made from."""
        latest = store.latest_day()
        if latest is None:
            return
        for data in store.since(latest - timedelta(days=RESUME_DAYS)):
            point = self.points.get(data["point"])
            if point is None:
                log.warning("%s: a check of %s on %s is kept, but the point is no longer "
                            "configured: left alone", self.name, data["point"],
                            data["day"])  # fmt: skip
                continue
            check = Check.from_json(point, data)
            for way in data["bought"]:
                request = check.requests[mo.Direction(way)]
                check.procurements[request.direction] = self._procure(check, request)
            self.checks.append(check)
            if check.safe is None:
                log.info("%s: resumed the check of %s on %s", self.name, point.name, check.day)

    def _save(self, check: Check) -> None:
        if self.store is not None:
            self.store.save(check.point.name, check.day, check.generation, check.started,
                            check.to_json())  # fmt: skip

    def check(self, point: str, day: date) -> Check | None:
        """The latest validation of `point` on `day`."""
        return next((c for c in reversed(self.checks) if (c.point.name, c.day) == (point, day)),
                    None)  # fmt: skip

    # --- messages --------------------------------------------------------------------------

    def on_message(self, sender: str, message: Payload, now: float) -> tuple[Ack, list[Outgoing]]:
        if isinstance(message, DPrognosis):
            return self._prognosis(sender, message, now)
        if isinstance(message, FlexOffer):
            return self._offer(sender, message, now)
        if isinstance(message, Metered):
            return self._metered(sender, message)
        return Ack(status="refused", detail=f"the DSO takes no {type(message).__name__}"), []

    def _prognosis(self, sender: str, p: DPrognosis, now: float) -> tuple[Ack, list[Outgoing]]:
        point = self.points.get(p.congestion_point)
        if point is None or sender not in point.aggregators:
            detail = f"{sender} has no homes at congestion point {p.congestion_point!r}"
            return Ack(status="refused", detail=detail), []
        check = self.check(point.name, p.day)
        if check is not None and check.prognoses.get(sender) == p:
            return Ack(status="ok", detail="taken before"), []
        if check is None or check.safe is not None or check.requests:
            # a first D-prognosis, or a new one after a decided check: the aggregator planned
            # again (its homes holding what was sold), so the point is validated again
            later = 0 if check is None else check.generation + 1
            check = Check(point, p.day, started=now, generation=later)
            self.checks.append(check)
        check.prognoses[sender] = p
        self._save(check)
        if set(check.prognoses) == set(point.aggregators):
            return Ack(status="ok"), self._validate(check, now)
        return Ack(status="ok"), []

    def _offer(self, sender: str, offer: FlexOffer, now: float) -> tuple[Ack, list[Outgoing]]:
        rid = offer.request or ""
        check = next((c for c in self.checks if c.request_for(rid)), None)
        request = None if check is None else check.request_for(rid)
        if check is None or request is None:
            return Ack(status="refused", detail=f"no open request {offer.request!r}"), []
        if sender not in check.prognoses:
            return Ack(status="refused", detail=f"{sender} was not asked"), []
        offers = check.offers.setdefault(rid, {})
        if offers.get(sender) == offer:
            return Ack(status="ok", detail="taken before"), []
        if request.direction in check.procurements or now > check.answer_by:
            return Ack(status="refused", detail=f"request {offer.request} closed"), []
        offers[sender] = offer
        self._save(check)
        if set(offers) == set(check.prognoses):
            return Ack(status="ok"), self._buy(check, request, now)
        return Ack(status="ok"), []

    def on_tick(self, now: float) -> list[Outgoing]:
        out: list[Outgoing] = []
        for check in self.checks:
            waiting = check.safe is None and not check.requests
            if waiting and now >= check.started + self.prognosis_wait_s:
                for agr in sorted(check.point.aggregators - set(check.prognoses)):
                    before = self._last_prognosis(check, agr)
                    if before is None:
                        log.warning("%s: %s checked without %s", self.name, check.point.name, agr)
                    else:
                        check.estimated[agr] = before
                        log.warning("%s: %s checked with %s's D-prognosis of %s",
                                    self.name, check.point.name, agr, before.day)  # fmt: skip
                out += self._validate(check, now)
            elif check.safe is None and now > check.answer_by:
                for direction, request in check.requests.items():
                    if direction not in check.procurements:  # without those that did not answer
                        out += self._buy(check, request, now)
        return out

    def _last_prognosis(self, check: Check, aggregator: str) -> DPrognosis | None:
        """The aggregator's latest D-prognosis for the point before `check`: of the same day
        in an earlier validation, less what was bought from it there (its homes hold that
        now), else of an earlier day."""
        earlier = [
            c
            for c in self.checks[: self.checks.index(check)]
            if c.point == check.point and c.day <= check.day and aggregator in c.prognoses
        ]
        if not earlier:
            return None
        last = max(reversed(earlier), key=lambda c: c.day)  # the latest of the latest day
        before = last.prognoses[aggregator]
        return before if last.day != check.day else last.held(aggregator)

    # --- validate and buy ------------------------------------------------------------------

    def _validate(self, check: Check, now: float) -> list[Outgoing]:
        point = check.point
        prognosis = check.prognosis_kw()
        wanted = {d: market.excess_kw(prognosis, point.limit_kw, d) for d in mo.Direction}
        if point.feeder is not None:
            check.grid = point.feeder.check(check.by_aggregator_kw())
            for d, relief in check.grid.relief_kw.items():
                for t, kw in relief.items():
                    wanted[d][t] = max(wanted[d].get(t, 0.0), kw)
            for v in check.grid.violations:
                log.info("%s: %s on %s: %s", self.name, point.name, check.day, v)
        name = f"{point.name}.{check.day.isoformat()}"
        name += f".{check.generation}" if check.generation else ""
        check.requests = {
            d: mo.FlexRequest(
                id=name if d == mo.Direction.UP else f"{name}.down",
                buyer=self.name,
                direction=d,
                profile_kw=dict(sorted(profile.items())),
                max_price=self.max_price,
            )
            for d, profile in wanted.items()
            if profile
        }
        check.answer_by = now + self.offer_window_s
        if not check.requests:
            check.safe = True
        self._save(check)
        if check.safe:
            return []
        # each aggregator that reported is asked in its own round; a silent one is not
        return [
            Outgoing(
                agg,
                FlexRequest(
                    round=p.round,
                    id=request.id,
                    day=check.day,
                    congestion_point=point.name,
                    direction=request.direction.value,
                    profile_kw=request.profile_kw,
                    max_price=request.max_price,
                    answer_by=check.answer_by,
                ),
                key=f"request:{request.id}:{agg}",
            )
            for request in check.requests.values()
            for agg, p in sorted(check.prognoses.items())
        ]

    def _procure(self, check: Check, request: mo.FlexRequest) -> market.Procurement:
        offers = [
            o
            for agg, offer in sorted(check.offers.get(request.id, {}).items())
            for o in _tiers(agg, offer, request.direction)
        ]
        return market.procure(request, offers, period_h=self.period_h)

    def _buy(self, check: Check, request: mo.FlexRequest, now: float) -> list[Outgoing]:
        got = self._procure(check, request)
        check.procurements[request.direction] = got
        if set(check.procurements) == set(check.requests):
            check.safe = all(p.met for p in check.procurements.values())
        self._save(check)  # before the orders go: a restart buys the same again, not anew
        out = []
        placed: list[tuple[str, FlexOrder]] = []
        for order in got.orders():
            source = got.offers[order.offer]
            msg = FlexOrder(
                round=check.prognoses[order.participant].round,
                id=order.id,
                day=check.day,
                offer=source.id,  # the tier
                direction=order.direction.value,
                profile_kw=order.profile_kw,
                price=order.price,
            )
            out.append(Outgoing(order.participant, msg, key=f"order:{order.id}"))
            placed.append((order.participant, msg))
        self._keep_baselines(check, placed)
        bought = any(p.orders() for p in check.procurements.values())
        if check.safe is not None and check.point.feeder is not None and bought:
            out += self._validate_again(check, now)
        return out

    def _validate_again(self, check: Check, now: float) -> list[Outgoing]:
        """After a purchase at a point with a feeder, the power flow of the D-prognoses less
        what was bought (cloud/dso/feeder.py: a kW bought where it helps less leaves a
        violation): a new validation of the day, which asks for what is still missing. It
        repeats until the feeder is safe or a purchase buys nothing."""
        again = Check(check.point, check.day, started=now, generation=check.generation + 1,
                      prognoses={a: check.held(a) for a in check.prognoses},
                      estimated={a: check.held(a) for a in check.estimated})  # fmt: skip
        self.checks.append(again)
        log.info("%s: %s on %s validated again after the purchase (generation %d)",
                 self.name, check.point.name, check.day, again.generation)  # fmt: skip
        return self._validate(again, now)

    def _keep_baselines(self, check: Check, orders: list[tuple[str, FlexOrder]]) -> None:
        """Each order's baseline: its aggregator's D-prognosis the purchase was made on, less
        what the aggregator's cheaper orders of the same purchase ask in the same PTU. The
        meters sum the aggregator's homes and cannot tell which order a kW was delivered for;
        stacked so, each kW counts for one order only, the cheapest first. (An order of a later
        validation is stacked on its own prognosis, which already holds the earlier orders.)
        Kept once: an order placed again keeps its first baseline."""
        below: dict[str, dict[int, float]] = {}  # aggregator → PTU → kW its cheaper orders ask
        for agg, msg in sorted(orders, key=lambda x: (x[1].price, x[1].id)):
            prognosis = check.prognoses[agg]
            sign = 1.0 if msg.direction == Direction.UP else -1.0
            mine = below.setdefault(agg, {})
            baseline = {
                prognosis.first_ptu + n: kw - sign * mine.get(prognosis.first_ptu + n, 0.0)
                for n, kw in enumerate(prognosis.net_kw)
            }
            for t, kw in msg.profile_kw.items():
                mine[t] = mine.get(t, 0.0) + kw
            if msg.id not in self.placed:
                self.placed[msg.id] = Placed(agg, msg, baseline, check.point.name)
                if self.ledger is not None:  # kept for Settle across a restart
                    self.ledger.append("placed", _placed_json(self.placed[msg.id]))

    # --- settle ----------------------------------------------------------------------------

    def _metered(self, sender: str, m: Metered) -> tuple[Ack, list[Outgoing]]:
        """An aggregator's metered sum for a day at a point: its orders there settled."""
        point = self.points.get(m.congestion_point)
        if point is None or sender not in point.aggregators:
            detail = f"{sender} is not registered at congestion point {m.congestion_point!r}"
            return Ack(status="refused", detail=detail), []
        key = (sender, point.name, m.day)
        before = self.metered.get(key)
        if before == m:
            return Ack(status="ok", detail="taken before"), []
        where = f"{m.day} at {point.name}"
        if before is not None:
            detail = f"the metered energies of {where} were taken before with other values"
            return Ack(status="refused", detail=detail), []
        if self.ledger is None:
            return Ack(status="refused", detail=f"{self.name} keeps no ledger: no settling"), []
        orders = [p for p in self.placed.values() if (p.aggregator, p.point, p.order.day) == key]
        if not orders:
            return Ack(status="refused", detail=f"no order placed with {sender} for {where}"), []
        kwh = m.kwh()
        for p in sorted(orders, key=lambda p: p.order.id):
            missing = sorted(set(p.order.profile_kw) - set(kwh))
            if missing:
                ptus = ", ".join(str(t) for t in missing)
                detail = f"order {p.order.id}: no metered energy for PTU {ptus} of {m.day}"
                return Ack(status="refused", detail=detail[:500]), []
        self.metered[key] = m
        out = self.settle(m.day, {sender: kwh}, self.ledger, self.penalty_eur_kwh,
                          aggregator=sender, point=point.name)  # fmt: skip
        return Ack(status="ok"), out

    def settle(
        self,
        day: date,
        metered_kwh: Mapping[str, Mapping[int, float]],
        ledger: Ledger,
        penalty_eur_kwh: float,
        *,
        aggregator: str | None = None,
        point: str | None = None,
    ) -> list[Outgoing]:
        """Each order placed for `day` (with `aggregator`, at `point`, when given) measured
        against its baseline (module docstring) from `metered_kwh`: per aggregator, the
        metered kWh of its homes at the point per PTU. An order without a meter reading for
        every ordered PTU waits for the next call (nothing is paid without proof); one the
        ledger holds is not settled again. Returns a Settlement per order settled now, to its
        aggregator."""
        aggregators = set().union(*(p.aggregators for p in self.points.values()))
        strangers = sorted(set(metered_kwh) - aggregators)
        if strangers:
            raise ValueError(
                f"metered_kwh names {', '.join(strangers)}, not an aggregator of {self.name}: "
                "give the sum of each aggregator's homes per PTU; the DSO takes no home's meter"
            )
        settled = {e.data()["order"] for e in ledger.entries() if e.kind == "settlement"}
        out = []
        for oid, placed in sorted(self.placed.items()):
            order = placed.order
            if order.day != day or oid in settled:
                continue
            if aggregator not in (None, placed.aggregator) or point not in (None, placed.point):
                continue
            try:
                record = settle(
                    order=oid,
                    participant=placed.aggregator,
                    awarded_kw=order.profile_kw,
                    baseline_kw=placed.baseline_kw,
                    metered_kwh=metered_kwh.get(placed.aggregator, {}),
                    price=order.price,
                    penalty_rate=penalty_eur_kwh,
                    direction=mo.Direction(order.direction.value),
                    period_h=self.period_h,
                )
            except ValueError as exc:
                log.warning("%s: %s not settled yet: %s", self.name, oid, exc)
                continue
            ledger.record(record)
            settled.add(oid)
            msg = Settlement(
                order=oid,
                day=day,
                delivered_kwh=record.delivered_kwh,
                shortfall_kwh=record.shortfall_kwh,
                payment_eur=record.payment_eur,
                penalty_eur=record.penalty_eur,
            )
            out.append(
                Outgoing(placed.aggregator, msg, key=f"settlement:{oid}", ttl_s=SETTLED_TTL_S)
            )
        return out


def _tiers(aggregator: str, offer: FlexOffer, direction: mo.Direction) -> list[mo.FlexOffer]:
    """An aggregator's offer as the market's offers, one per tier (`FlexOffer.tiers`: a price
    and divisibility among its blocks in `direction`), kW per PTU, with the tier's id."""
    assert offer.request is not None  # _offer took it for an open request
    way = Direction(direction.value)
    out = []
    for tier_id, (price, divisible) in offer.tiers(way).items():
        profile: dict[int, float] = {}
        for b in offer.blocks:
            if b.direction == way and (b.price, b.divisible) == (price, divisible):
                profile[b.ptu] = profile.get(b.ptu, 0.0) + b.kw
        out.append(
            mo.FlexOffer(
                id=tier_id,
                participant=aggregator,
                request=offer.request,
                profile_kw=profile,
                price=price,
                divisible=divisible,
            )
        )
    return out
