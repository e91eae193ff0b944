"""The aggregator's side of a round (USEF Plan phase): whom it asked, by when, and what came
back, kept so that a restarted aggregator resumes the round where it was.

A round asks a set of homes for their P-plan and flexibility offer by `answer_by`. Answers are
taken idempotently: the same P-plan revision or the same offer again is acknowledged and changes
nothing (the home resends until it sees an ack); a higher revision replaces a lower one; a home
not asked, another round's answer, or a first answer after the round closed is refused with a
reason, so the home stops resending and keeps its own plan. The round closes when every home has
answered both, or at its deadline without those that did not: one silent home never holds up
its neighbourhood. The A-plan is the sum of the P-plans received. After the close, a home that
answered in time still sends higher revisions as it re-plans during the day (USEF Operate):
they are taken, so the A-plan stays the portfolio's current plan (cloud/aggregator/operate.py).

Besides the answers, the store keeps records of what the aggregator did with a round (its
D-prognosis, the orders it took and sent), as JSON its owner reads back after a restart.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from homeflex.agents.messages import Ack, FlexOffer, Payload, PPlan, decode, encode

PTUS = 96

SCHEMA = """
CREATE TABLE IF NOT EXISTS rounds (
    id TEXT PRIMARY KEY,
    day TEXT NOT NULL,
    homes TEXT NOT NULL,
    answer_by REAL NOT NULL,
    closed_at REAL
) STRICT;
CREATE TABLE IF NOT EXISTS answers (
    round TEXT NOT NULL REFERENCES rounds(id),
    home TEXT NOT NULL,
    type TEXT NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (round, home, type)
) STRICT;
CREATE TABLE IF NOT EXISTS records (
    round TEXT NOT NULL REFERENCES rounds(id),
    key TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (round, key)
) STRICT;
"""


@dataclass
class Round:
    id: str
    day: date
    homes: frozenset[str]
    answer_by: float
    closed_at: float | None = None
    plans: dict[str, PPlan] = field(default_factory=dict)
    offers: dict[str, FlexOffer] = field(default_factory=dict)

    def take(self, home: str, answer: Payload, now: float) -> tuple[Ack, bool]:
        """The acknowledgement of a home's P-plan or offer, and whether it changed the round
        (the caller stores it then). An answer taken before is acknowledged as such even after
        the round closed: the home resends only because it missed that acknowledgement."""
        refused = self._refusal(home, answer)
        if refused:
            return Ack(status="refused", detail=refused), False
        assert isinstance(answer, PPlan | FlexOffer)
        had_plan = self.plans.get(home)
        if isinstance(answer, PPlan) and had_plan and had_plan.revision >= answer.revision:
            return Ack(status="ok", detail=f"revision {had_plan.revision} was taken"), False
        if isinstance(answer, FlexOffer) and self.offers.get(home) == answer:
            return Ack(status="ok", detail=f"offer {answer.id} was taken"), False
        if self.closed_at is not None or now > self.answer_by:
            if isinstance(answer, PPlan) and had_plan:  # a re-plan of a plan taken in time
                self.plans[home] = answer
                return Ack(status="ok"), True
            closed = self.closed_at if self.closed_at is not None else self.answer_by
            detail = f"round {self.id} closed at {closed:.0f} (unix time)"
            return Ack(status="refused", detail=detail), False
        if isinstance(answer, PPlan):
            self.plans[home] = answer
        else:
            self.offers[home] = answer  # a home's newer offer replaces its earlier one
        return Ack(status="ok"), True

    def _refusal(self, home: str, answer: Payload) -> str | None:
        """Why an answer does not belong to this round at all, if it does not."""
        if not isinstance(answer, PPlan | FlexOffer):
            return f"a round takes P-plans and offers, not {type(answer).__name__}"
        if answer.round != self.id:
            return f"answer for round {answer.round!r}, this is {self.id!r}"
        if home not in self.homes:
            return f"{home} was not asked in round {self.id}"
        if answer.day != self.day:
            return f"answer for {answer.day}, round {self.id} is for {self.day}"
        return None

    @property
    def complete(self) -> bool:
        return all(h in self.plans and h in self.offers for h in self.homes)

    def close_if_due(self, now: float) -> bool:
        """Close when every home answered or the deadline passed; True when closed now."""
        if self.closed_at is None and (self.complete or now >= self.answer_by):
            self.closed_at = now
            return True
        return False

    def missing(self) -> list[str]:
        """Homes without a P-plan or an offer: left out of the clearing."""
        return sorted(h for h in self.homes if h not in self.plans or h not in self.offers)

    def a_plan(self) -> list[float]:
        """The A-plan: the P-plans received, summed per PTU of the day (kW)."""
        total = [0.0] * PTUS
        for plan in self.plans.values():
            for n, kw in enumerate(plan.net_kw):
                total[plan.first_ptu + n] += kw
        return total


class RoundStore:
    """Rounds and their answers in SQLite: every change is committed before it is acknowledged,
    so an acknowledged answer survives a crash."""

    def __init__(self, path: Path | str) -> None:
        # one caller at a time, not always on the thread that opened it (NodeAgent.work)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def open_round(self, r: Round) -> None:
        self._db.execute(
            "INSERT INTO rounds VALUES (?, ?, ?, ?, ?)",
            (r.id, r.day.isoformat(), json.dumps(sorted(r.homes)), r.answer_by, r.closed_at),
        )

    def save_answer(self, r: Round, home: str, answer: Payload) -> None:
        type_, payload = encode(answer)
        self._db.execute(
            "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?)", (r.id, home, type_, payload)
        )

    def save_closed(self, r: Round) -> None:
        self._db.execute("UPDATE rounds SET closed_at = ? WHERE id = ?", (r.closed_at, r.id))

    def load(self, round_id: str) -> Round | None:
        row = self._db.execute(
            "SELECT day, homes, answer_by, closed_at FROM rounds WHERE id = ?", (round_id,)
        ).fetchone()
        if row is None:
            return None
        day, homes, answer_by, closed_at = row
        r = Round(round_id, date.fromisoformat(day), frozenset(json.loads(homes)), answer_by)
        r.closed_at = closed_at
        for home, type_, payload in self._db.execute(
            "SELECT home, type, payload FROM answers WHERE round = ?", (round_id,)
        ):
            answer = decode(type_, bytes(payload))
            if isinstance(answer, PPlan):
                r.plans[home] = answer
            elif isinstance(answer, FlexOffer):
                r.offers[home] = answer
        return r

    def save_record(self, round_id: str, key: str, data: Mapping[str, Any]) -> None:
        """Keep `data` (JSON) under `key` for the round, replacing what was there."""
        self._db.execute(
            "INSERT OR REPLACE INTO records VALUES (?, ?, ?)", (round_id, key, json.dumps(data))
        )

    def records(self, round_id: str) -> dict[str, Any]:
        """The round's records, by key."""
        rows = self._db.execute("SELECT key, data FROM records WHERE round = ?", (round_id,))
        return {key: json.loads(data) for key, data in rows}

    def rounds_with(self, day: date, key: str) -> dict[str, Any]:
        """The rounds of `day` that hold a record under `key`: round id → that record."""
        rows = self._db.execute(
            "SELECT r.id, c.data FROM rounds r JOIN records c ON c.round = r.id"
            " WHERE r.day = ? AND c.key = ?",
            (day.isoformat(), key),
        )
        return {rid: json.loads(data) for rid, data in rows}

    def days_with(self, prefix: str, since: date) -> list[date]:
        """The days from `since` on whose rounds hold a record with a key beginning `prefix`."""
        rows = self._db.execute(
            "SELECT DISTINCT r.day FROM rounds r JOIN records c ON c.round = r.id"
            " WHERE r.day >= ? AND substr(c.key, 1, ?) = ? ORDER BY r.day",
            (since.isoformat(), len(prefix), prefix),
        )
        return [date.fromisoformat(d) for (d,) in rows]

    def open_rounds(self) -> list[str]:
        """Rounds not closed yet: what a restarted aggregator resumes."""
        return [i for (i,) in self._db.execute("SELECT id FROM rounds WHERE closed_at IS NULL")]

    def summaries(self) -> list[dict[str, Any]]:
        """Every round, oldest first: id, day, deadline, when it closed, homes asked and how
        many P-plans came (for the operator's status)."""
        rows = self._db.execute(
            "SELECT r.id, r.day, r.homes, r.answer_by, r.closed_at,"
            " (SELECT COUNT(*) FROM answers a WHERE a.round = r.id AND a.type = 'p-plan')"
            " FROM rounds r ORDER BY r.answer_by"
        )
        return [
            {"id": rid, "day": day, "asked": len(json.loads(homes)), "answer_by": answer_by,
             "closed_at": closed_at, "answers": answers}
            for rid, day, homes, answer_by, closed_at, answers in rows
        ]  # fmt: skip
