"""USEF Operate for one aggregator: its homes keep to what it committed to the DSO, by
re-dispatch inside its own portfolio, without trading (seed 004 §6, Operate).

What was committed, per PTU: the D-prognosis the aggregator last sent for a round covering the
PTU, less the kW of the DSO's orders it took on that round. Where the portfolio stands: that
round's P-plans at their latest revisions (homes keep sending them as they re-plan during the
day), less the orders sent to homes that their plans do not show yet (a home's next revision
holds every order it accepted: edge/cems.py). Gate closure: a PTU that begins less than
`GATE_CLOSURE_S` from now, and is not over, is locked: nothing is traded with the DSO for it any
more. When the portfolio in a locked PTU is above the commitment by more than the tolerance,
the difference is ordered from the homes' upward blocks of that round that no order has taken;
when it is below by more than the tolerance in a PTU where the DSO bought downward flexibility
(the commitment is then a floor: the back-flow it was bought against), from their downward
blocks (below the commitment anywhere else is not a breach: less load than promised). Either
way cheapest first, each at its own price (pay-as-bid), one order per block and a block at most
once; a block that may not be split only when it fits whole. What cannot be covered is logged
once per PTU.

Every commitment and order is kept in the RoundStore before it is acknowledged or sent, so a
restarted aggregator follows the same commitments and never orders a block twice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from homeflex.agents.messages import Direction, DPrognosis, FlexOrder, PPlan
from homeflex.agents.node import Outgoing
from homeflex.agents.rounds import PTUS, Round, RoundStore

log = logging.getLogger(__name__)
GATE_CLOSURE_S = 3600.0  # seed 004 §5.2: 1 h
PTU_S = 900.0
# a portfolio this little above its commitment is forecast noise, not worth an order
TOLERANCE_KW = 0.5
EPS = 1e-9


def ptu_start(day: date, ptu: int) -> float:
    """Unix time at which PTU `ptu` of `day` begins (PTUs count from midnight UTC)."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() + ptu * PTU_S


def locked(day: date, ptu: int, now: float) -> bool:
    """Inside the gate at `now`: begins less than GATE_CLOSURE_S later and is not over."""
    start = ptu_start(day, ptu)
    return start < now + GATE_CLOSURE_S and start + PTU_S > now


def _sign(direction: Direction) -> float:
    return 1.0 if direction == Direction.UP else -1.0  # up: less net load


def _at(plan: PPlan, ptu: int) -> float | None:
    n = ptu - plan.first_ptu
    return plan.net_kw[n] if 0 <= n < len(plan.net_kw) else None


@dataclass
class HomeOrder:
    """An order the aggregator sent a home on a followed round."""

    home: str
    order: FlexOrder
    revision: int  # the home's P-plan revision when the order went out; a higher one holds it
    block: int | None = None  # a re-dispatch: the index of the home's offer block it takes
    void: bool = False  # refused or never acknowledged: not in force, and not ordered again
    # a re-dispatch: what the home was to draw in its PTU without it (its P-plan then, with the
    # orders it had not planned in yet): what Settle measures its delivery against
    baseline_kw: dict[int, float] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "home": self.home,
            "order": self.order.model_dump(mode="json"),
            "revision": self.revision,
            "block": self.block,
            "void": self.void,
            "baseline_kw": self.baseline_kw,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HomeOrder:
        order = FlexOrder.model_validate(data["order"])
        base = data.get("baseline_kw")  # absent in records from before it was kept
        baseline = None if base is None else {int(t): kw for t, kw in base.items()}
        return cls(data["home"], order, data["revision"], data["block"], data["void"], baseline)


@dataclass
class Commitment:
    """A round whose D-prognosis went to the DSO, with every P-plan revision since, and what
    was sold to the DSO and ordered from the homes on it."""

    round: Round
    prognosis_kw: list[float]  # one per PTU of the day
    sent_at: float
    sold: dict[str, FlexOrder] = field(default_factory=dict)  # the DSO's order id →
    orders: dict[str, HomeOrder] = field(default_factory=dict)  # home order id →
    short: set[int] = field(default_factory=set)  # PTUs logged as short of blocks

    def covers(self, ptu: int) -> bool:
        return any(_at(p, ptu) is not None for p in self.round.plans.values())

    def committed_kw(self, ptu: int) -> float:
        """The D-prognosis less what the DSO bought in `ptu`."""
        sold = sum(_sign(o.direction) * o.profile_kw.get(ptu, 0.0) for o in self.sold.values())
        return self.prognosis_kw[ptu] - sold

    def portfolio_kw(self, ptu: int) -> float:
        """The homes' latest P-plans summed, less the orders their plans do not show yet."""
        homes = set(self.round.plans) | {o.home for o in self.orders.values()}
        return sum(self.home_kw(home, ptu) for home in homes)

    def home_kw(self, home: str, ptu: int) -> float:
        """The home's latest P-plan in `ptu`, less the orders it does not show yet."""
        plan = self.round.plans.get(home)
        kw = (_at(plan, ptu) if plan is not None else None) or 0.0
        for o in self.orders.values():
            if o.home == home and not o.void and o.revision >= self.revision(home):
                kw -= _sign(o.order.direction) * o.order.profile_kw.get(ptu, 0.0)
        return kw

    def revision(self, home: str) -> int:
        plan = self.round.plans.get(home)
        return -1 if plan is None else plan.revision

    def free_blocks(
        self, ptu: int, direction: Direction = Direction.UP
    ) -> list[tuple[float, str, int, float, bool]]:
        """The homes' blocks in `ptu` and `direction` that no order took: (price, home, index,
        kW left, divisible), cheapest first. The DSO's orders, split among the homes, name no
        block: they use up each home's blocks cheapest first."""
        free = []
        for home, offer in sorted(self.round.offers.items()):
            mine = [o for o in self.orders.values()
                    if o.home == home and o.order.direction == direction]  # fmt: skip
            split = sum(o.order.profile_kw.get(ptu, 0.0) for o in mine if o.block is None)
            taken = {o.block for o in mine if o.block is not None}
            blocks = sorted(
                (b.price, n, b.kw, b.divisible)
                for n, b in enumerate(offer.blocks)
                if b.ptu == ptu and b.direction == direction
            )
            for price, n, kw, divisible in blocks:
                used = min(split, kw)
                split -= used
                if n in taken or (used > EPS and not divisible) or kw - used <= EPS:
                    continue
                free.append((price, home, n, kw - used, divisible))
        return sorted(free)

    def redispatch(self, ptu: int, tolerance_kw: float) -> tuple[list[HomeOrder], float]:
        """Orders for the portfolio's gap to the commitment in `ptu` (above it; or below it
        where a downward order was sold), when more than `tolerance_kw`, and the kW no free
        block covers."""
        gap = self.portfolio_kw(ptu) - self.committed_kw(ptu)
        floor = any(o.direction == Direction.DOWN and ptu in o.profile_kw
                    for o in self.sold.values())  # fmt: skip
        if gap > tolerance_kw + EPS:  # (sums of kW carry rounding)
            direction, left = Direction.UP, gap
        elif floor and -gap > tolerance_kw + EPS:
            direction, left = Direction.DOWN, -gap
        else:
            return [], 0.0
        new = []
        for price, home, n, kw, divisible in self.free_blocks(ptu, direction):
            take = min(left, kw) if divisible else kw * (kw <= left + EPS)
            if take <= EPS:
                continue
            done = sum(1 for o in self.orders.values() if o.block is not None and
                       ptu in o.order.profile_kw)  # fmt: skip
            order = FlexOrder(
                round=self.round.id,
                id=f"{self.round.id}.rd{ptu}.{done}",
                day=self.round.day,
                offer=self.round.offers[home].id,
                direction=direction,
                profile_kw={ptu: take},
                price=price,
            )
            base = {ptu: self.home_kw(home, ptu)}
            o = HomeOrder(home, order, self.revision(home), block=n, baseline_kw=base)
            self.orders[order.id] = o
            new.append(o)
            left -= take
            if left <= EPS:
                break
        return new, max(0.0, left)


class Operate:
    """The aggregator's commitments per day and their re-dispatch; the brain hands it what it
    sends and takes, and calls `tick`."""

    def __init__(self, name: str, store: RoundStore, *, tolerance_kw: float = TOLERANCE_KW) -> None:
        self.name = name
        self.store = store
        self.tolerance_kw = tolerance_kw
        self.days: dict[date, list[Commitment]] = {}  # by the time their D-prognosis went

    # --- what the brain tells it -------------------------------------------------------------

    def follow(self, r: Round, prognosis: DPrognosis, now: float) -> None:
        """The D-prognosis of the closed round `r` is being sent: from now on it is what the
        aggregator committed to in the PTUs the round covers."""
        day = self._day(r.day)  # read before this one is in the store: it would come twice
        record = {"sent_at": now, "message": prognosis.model_dump(mode="json")}
        self.store.save_record(r.id, "prognosis", record)
        day.append(Commitment(r, _day_kw(prognosis), now))

    def commitment(self, round_id: str, day: date) -> Commitment | None:
        """The followed round `round_id` of `day` with what was committed and ordered on it."""
        return self._find(round_id, day)

    def round(self, round_id: str, day: date) -> Round | None:
        """A followed round, to take its homes' revisions into; None for any other."""
        c = self._find(round_id, day)
        return None if c is None else c.round

    def sold(self, order: FlexOrder) -> None:
        """The DSO's order the aggregator took (again, if its ack was lost)."""
        c = self._find(order.round, order.day)
        if c is None or order.id in c.sold:
            return
        self.store.save_record(c.round.id, f"sold:{order.id}", order.model_dump(mode="json"))
        c.sold[order.id] = order

    def sent(self, out: Iterable[Outgoing]) -> None:
        """Orders going to homes (the DSO's, split): noted with each home's revision now."""
        for o in out:
            msg = o.message
            if not isinstance(msg, FlexOrder):
                continue
            c = self._find(msg.round, msg.day)
            if c is not None and msg.id not in c.orders:
                self._keep(c, HomeOrder(o.to, msg, c.revision(o.to)))

    def delivered(self, key: str, ok: bool) -> None:
        """A home's answer to an order (`order:<id>`): a refused one, or one never
        acknowledged (`ok` False), is not in force."""
        if ok or not key.startswith("order:"):
            return
        oid = key.removeprefix("order:")
        for cs in self.days.values():
            for c in cs:
                o = c.orders.get(oid)
                if o is not None and not o.void:
                    o.void = True
                    self._keep(c, o)
                    log.warning("%s: %s to %s is not in force", self.name, oid, o.home)

    def redispatched(self, day: date) -> list[HomeOrder]:
        """The re-dispatch orders of `day` in force (read from the store for a day no longer
        followed), by id."""
        orders = [o for c in self._day(day) for o in c.orders.values()]
        return sorted((o for o in orders if o.block is not None and not o.void),
                      key=lambda o: o.order.id)  # fmt: skip

    def void(self, oid: str, day: date) -> bool:
        """Whether the home refused order `oid` of `day`, or never acknowledged it (read from
        the store for a day no longer followed)."""
        return any(o.void for c in self._day(day) if (o := c.orders.get(oid)) is not None)

    # --- the tick ----------------------------------------------------------------------------

    def tick(self, now: float) -> list[Outgoing]:
        """Re-dispatch in every locked PTU where the portfolio strays from its commitment."""
        out = []
        today = datetime.fromtimestamp(now, UTC).date()
        for day in self._loaded_days(now):
            for ptu in range(PTUS):
                if not locked(day, ptu, now):
                    continue
                c = self._governing(day, ptu)
                if c is None:
                    continue
                new, short = c.redispatch(ptu, self.tolerance_kw)
                end = ptu_start(day, ptu) + PTU_S
                for o in new:
                    self._keep(c, o)
                    out.append(Outgoing(o.home, o.order, key=f"order:{o.order.id}",
                                        ttl_s=max(1.0, end - now)))  # fmt: skip
                if new:
                    log.info("%s: PTU %d of %s: re-dispatched %.3f kW among %d homes",
                             self.name, ptu, day, sum(o.order.profile_kw[ptu] for o in new),
                             len(new))  # fmt: skip
                if short > self.tolerance_kw and ptu not in c.short:
                    c.short.add(ptu)
                    log.warning("%s: PTU %d of %s: %.3f kW off the commitment and no block "
                                "of round %s left to order", self.name, ptu, day, short,
                                c.round.id)  # fmt: skip
        for day in [d for d in self.days if d < today]:
            del self.days[day]  # over: Settle's business now
        return out

    # --- state -------------------------------------------------------------------------------

    def _governing(self, day: date, ptu: int) -> Commitment | None:
        """The latest commitment whose round covers the PTU."""
        return next((c for c in reversed(self._day(day)) if c.covers(ptu)), None)

    def _loaded_days(self, now: float) -> list[date]:
        days = {datetime.fromtimestamp(t, UTC).date() for t in (now, now + GATE_CLOSURE_S)}
        for day in days:
            self._day(day)
        return sorted(days)

    def _day(self, day: date) -> list[Commitment]:
        """The day's commitments, read from the store the first time."""
        if day not in self.days:
            loaded = []
            for rid, rec in self.store.rounds_with(day, "prognosis").items():
                r = self.store.load(rid)
                if r is None:
                    continue
                c = Commitment(r, _day_kw(DPrognosis.model_validate(rec["message"])),
                               rec["sent_at"])  # fmt: skip
                for key, data in self.store.records(rid).items():
                    if key.startswith("sold:"):
                        order = FlexOrder.model_validate(data)
                        c.sold[order.id] = order
                    elif key.startswith("order:"):
                        o = HomeOrder.from_json(data)
                        c.orders[o.order.id] = o
                loaded.append(c)
            self.days[day] = sorted(loaded, key=lambda c: c.sent_at)
        return self.days[day]

    def _find(self, round_id: str, day: date) -> Commitment | None:
        return next((c for c in self._day(day) if c.round.id == round_id), None)

    def _keep(self, c: Commitment, o: HomeOrder) -> None:
        self.store.save_record(c.round.id, f"order:{o.order.id}", o.to_json())
        c.orders[o.order.id] = o


def _day_kw(p: DPrognosis) -> list[float]:
    kw = [0.0] * PTUS
    kw[p.first_ptu : p.first_ptu + len(p.net_kw)] = p.net_kw
    return kw
