"""Settlement: flexibility delivered against the baseline from metered PTU energies, paid at the
cleared price with a penalty for shortfall, and written to an append-only, hash-chained ledger.

The rule, period by period (no netting across periods):
- metered kW = metered kWh / period length;
- delivered kW = (baseline − metered) for flexibility `up` (less load), (metered − baseline) for
  `down`, no less than 0 and no more than the awarded kW: flexibility beyond the award is not
  paid, a move the wrong way is not charged beyond the award;
- shortfall kW = awarded − delivered;
- payment = price × delivered kWh; penalty = penalty rate × shortfall kWh; net = payment − penalty.
The baseline is the P-plan for a DSO or community order, and for the capacity-limit product
(seed 002 LFM) the sold connection capacity: a CL-cap of q kW under a capacity C is delivered
when the metered load stays at or below C − q (baseline C, direction up).
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from homeflex.cloud.market.objects import ID_PATTERN, PRICE_BOUND, Direction, FlexOrder, Strict

PERIOD_H = 0.25
GENESIS = "0" * 64


class PeriodDelivery(Strict):
    period: int
    awarded_kw: float
    baseline_kw: float
    metered_kwh: float
    delivered_kw: float
    shortfall_kw: float
    payment_eur: float
    penalty_eur: float


class SettlementRecord(Strict):
    """One order's settlement: what was awarded, what the meter shows, what is paid."""

    order: str = Field(pattern=ID_PATTERN)
    participant: str = Field(pattern=ID_PATTERN)
    direction: Direction
    price: float = Field(ge=0, le=PRICE_BOUND, allow_inf_nan=False)
    penalty_rate: float = Field(ge=0, le=PRICE_BOUND, allow_inf_nan=False)
    period_h: float = Field(gt=0, allow_inf_nan=False)
    periods: list[PeriodDelivery]

    @property
    def delivered_kwh(self) -> float:
        return sum(p.delivered_kw for p in self.periods) * self.period_h

    @property
    def shortfall_kwh(self) -> float:
        return sum(p.shortfall_kw for p in self.periods) * self.period_h

    @property
    def payment_eur(self) -> float:
        return sum(p.payment_eur for p in self.periods)

    @property
    def penalty_eur(self) -> float:
        return sum(p.penalty_eur for p in self.periods)

    @property
    def net_eur(self) -> float:
        """What the participant receives (negative: it pays)."""
        return self.payment_eur - self.penalty_eur


def settle(
    *,
    order: str,
    participant: str,
    awarded_kw: Mapping[int, float],
    baseline_kw: Mapping[int, float] | float,
    metered_kwh: Mapping[int, float],
    price: float,
    penalty_rate: float,
    direction: Direction = Direction.UP,
    period_h: float = PERIOD_H,
) -> SettlementRecord:
    """Settle one awarded order (module docstring: the rule). `baseline_kw` is the P-plan per
    period, or one number for the capacity-limit product (the connection capacity). Every
    awarded period needs its baseline and meter reading: nothing is paid without proof."""
    sign = 1.0 if direction == Direction.UP else -1.0
    periods = []
    for t in sorted(awarded_kw):
        award = awarded_kw[t]
        base = baseline_kw if isinstance(baseline_kw, float | int) else baseline_kw.get(t)
        if base is None:
            raise ValueError(f"order {order}: no baseline for period {t}")
        if t not in metered_kwh:
            raise ValueError(f"order {order}: no meter reading for period {t}; cannot settle")
        kwh = metered_kwh[t]
        for what, x in (("award", award), ("baseline", base), ("meter reading", kwh)):
            if not math.isfinite(x):
                raise ValueError(f"order {order}: period {t}: {what} {x} is not a number")
        if award < 0:
            raise ValueError(f"order {order}: period {t}: award {award} kW is negative")
        delivered = min(award, max(0.0, sign * (base - kwh / period_h)))
        short = award - delivered
        periods.append(
            PeriodDelivery(
                period=t,
                awarded_kw=award,
                baseline_kw=float(base),
                metered_kwh=kwh,
                delivered_kw=delivered,
                shortfall_kw=short,
                payment_eur=price * delivered * period_h,
                penalty_eur=penalty_rate * short * period_h,
            )
        )
    return SettlementRecord(
        order=order,
        participant=participant,
        direction=direction,
        price=price,
        penalty_rate=penalty_rate,
        period_h=period_h,
        periods=periods,
    )


def settle_order(
    order: FlexOrder,
    baseline_kw: Mapping[int, float] | float,
    metered_kwh: Mapping[int, float],
    penalty_rate: float,
) -> SettlementRecord:
    """`settle` for an order: its profile, price, direction and period length."""
    return settle(
        order=order.id,
        participant=order.participant,
        awarded_kw=order.profile_kw,
        baseline_kw=baseline_kw,
        metered_kwh=metered_kwh,
        price=order.price,
        penalty_rate=penalty_rate,
        direction=order.direction,
        period_h=order.period_h,
    )


# --- the ledger ------------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    seq INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    prev TEXT NOT NULL,
    hash TEXT NOT NULL
) STRICT;
CREATE TRIGGER IF NOT EXISTS ledger_no_update BEFORE UPDATE ON ledger
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS ledger_no_delete BEFORE DELETE ON ledger
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
"""


@dataclass(frozen=True)
class Entry:
    seq: int
    ts: float
    kind: str  # e.g. "award", "meter", "settlement"
    body: str  # canonical JSON, stored and hashed as written
    prev: str  # the previous entry's hash (GENESIS for the first)
    hash: str

    def data(self) -> Any:
        return json.loads(self.body)


def _digest(seq: int, ts: float, kind: str, body: str, prev: str) -> str:
    # every field but the hash, the body as its exact stored text: a reformatted body shows too
    covered = json.dumps([seq, ts, kind, body, prev], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(covered.encode()).hexdigest()


def canonical(body: Any) -> str:
    return json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


class Ledger:
    """Entries appended in one SQLite file, each carrying the SHA-256 of the one before (as
    the security event log does). Triggers refuse UPDATE and DELETE from this process and any
    SQLite tool; someone who drops them can edit, and `verify` then shows where. Cutting the
    tail off leaves a valid shorter chain: compare `head()` with one published elsewhere."""

    def __init__(self, path: Path | str, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # one caller at a time, not always on the thread that opened it (NodeAgent.work)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def append(self, kind: str, body: Any) -> Entry:
        """Append one entry; the read of the last hash and the insert are one transaction, so
        two writers cannot both chain to the same entry."""
        text = canonical(body)
        self.db.execute("BEGIN IMMEDIATE")
        try:
            last = self.db.execute(
                "SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
            ts = float(self._clock())
            entry = Entry(seq, ts, kind, text, prev, _digest(seq, ts, kind, text, prev))
            self.db.execute(
                "INSERT INTO ledger (seq, ts, kind, body, prev, hash) VALUES (?, ?, ?, ?, ?, ?)",
                (entry.seq, entry.ts, entry.kind, entry.body, entry.prev, entry.hash),
            )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return entry

    def record(self, settlement: SettlementRecord) -> Entry:
        return self.append("settlement", settlement.model_dump(mode="json"))

    def entries(self) -> list[Entry]:
        rows = self.db.execute("SELECT seq, ts, kind, body, prev, hash FROM ledger ORDER BY rowid")
        return [Entry(*row) for row in rows]

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the last entry: publish it to make a cut-off tail detectable."""
        last = self.db.execute("SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1").fetchone()
        return (int(last[0]), str(last[1])) if last else (0, GENESIS)

    def verify(self, head: str | None = None) -> list[str]:
        return verify_entries(self.entries(), head=head)


def verify_entries(entries: list[Entry], prev: str = GENESIS, head: str | None = None) -> list[str]:
    """What is wrong with the chain (empty when intact): an edited entry no longer matches its
    hash; a removed or reordered one breaks the sequence and the link to the next; with `head`
    (a hash published earlier), a chain that no longer contains it was cut or rewritten."""
    problems = []
    expected = entries[0].seq if entries else 1
    for e in entries:
        if e.seq != expected:
            problems.append(f"entry {e.seq}: expected entry {expected} here")
        if e.prev != prev:
            problems.append(f"entry {e.seq}: does not follow the entry before it")
        if _digest(e.seq, e.ts, e.kind, e.body, e.prev) != e.hash:
            problems.append(f"entry {e.seq}: its content was changed after it was written")
        prev, expected = e.hash, e.seq + 1
    if head is not None and head != GENESIS and all(e.hash != head for e in entries):
        problems.append(f"the published head {head[:12]}… is not in the ledger: cut or rewritten")
    return problems
