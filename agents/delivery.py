"""Delivery that does not depend on XMPP: a message that matters waits here until its recipient
acknowledges it, and is sent again until then.

SPADE hands a message to an offline agent's server and forgets it; the server may drop it (no
offline storage for our agents, or the recipient restarts mid-round). So the sender keeps each
such message under a delivery key, sends it, and sends it again 2, 4, 8 … up to RETRY_MAX_S
seconds later until the recipient's `ack` arrives or the message's own expiry passes (then it
is reported as failed: the round goes on without that answer). Each attempt is a new envelope
with a new id, because the receiver's replay cache rightly refuses an envelope seen before; the
acknowledgement names the attempt it answers (`in_reply_to`), and any attempt's acknowledgement
delivers the message. The receiver's side is idempotence: handling the same delivery key twice
has the effect of once, and it acknowledges again, as the first ack may be what was lost.

Kept in SQLite, so an agent restarted mid-round resends what was still unacknowledged.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

RETRY_FIRST_S = 2.0
RETRY_MAX_S = 60.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    key TEXT PRIMARY KEY,
    recipient TEXT NOT NULL,
    type TEXT NOT NULL,
    payload BLOB NOT NULL,
    tries INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    expires_at REAL NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS attempts (
    envelope_id TEXT PRIMARY KEY,
    key TEXT NOT NULL REFERENCES deliveries(key) ON DELETE CASCADE
) STRICT;
CREATE INDEX IF NOT EXISTS attempts_by_key ON attempts(key);
"""


@dataclass(frozen=True)
class Pending:
    key: str
    recipient: str
    type: str
    payload: bytes
    tries: int
    expires_at: float


class Deliveries:
    """One agent's messages awaiting acknowledgement. One thread at a time (the agent's loop)."""

    def __init__(self, path: Path | str) -> None:
        # one caller at a time, not always on the thread that opened it (NodeAgent.work)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA foreign_keys = ON")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def add(
        self, key: str, recipient: str, type: str, payload: bytes, now: float, ttl_s: float
    ) -> bool:
        """Keep a message for delivery, due at once. False (and nothing changes) when the key is
        pending already: adding the same message twice sends it once."""
        cur = self._db.execute(
            "INSERT OR IGNORE INTO deliveries (key, recipient, type, payload, next_at, expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (key, recipient, type, payload, now, now + ttl_s),
        )
        return cur.rowcount == 1

    def due(self, now: float) -> list[Pending]:
        """The messages to send now (oldest expiry first), each counted as tried and given its
        next time; the caller sends each and records the envelope with `sent`."""
        rows = self._db.execute(
            "SELECT key, recipient, type, payload, tries, expires_at FROM deliveries"
            " WHERE next_at <= ? AND expires_at > ? ORDER BY expires_at, key",
            (now, now),
        ).fetchall()
        out = []
        with self._db:
            self._db.execute("BEGIN")
            for key, recipient, type_, payload, tries, expires_at in rows:
                wait = min(RETRY_MAX_S, RETRY_FIRST_S * 2**tries)
                self._db.execute(
                    "UPDATE deliveries SET tries = tries + 1, next_at = ? WHERE key = ?",
                    (now + wait, key),
                )
                out.append(Pending(key, recipient, type_, bytes(payload), tries + 1, expires_at))
        return out

    def sent(self, key: str, envelope_id: str) -> None:
        """An attempt of `key` left in the envelope `envelope_id`."""
        self._db.execute("INSERT OR IGNORE INTO attempts VALUES (?, ?)", (envelope_id, key))

    def acked(self, envelope_id: str, sender: str) -> str | None:
        """The acknowledgement of attempt `envelope_id` from `sender`: the delivery key it
        completes, or None when no pending message has that attempt for that recipient (a late
        second ack, or not ours)."""
        row = self._db.execute(
            "SELECT d.key FROM attempts a JOIN deliveries d ON d.key = a.key"
            " WHERE a.envelope_id = ? AND d.recipient = ?",
            (envelope_id, sender),
        ).fetchone()
        if row is None:
            return None
        self._db.execute("DELETE FROM deliveries WHERE key = ?", (row[0],))
        return str(row[0])

    def expired(self, now: float) -> list[Pending]:
        """Messages past their expiry without an acknowledgement, removed: failures to report."""
        rows = self._db.execute(
            "SELECT key, recipient, type, payload, tries, expires_at FROM deliveries"
            " WHERE expires_at <= ? ORDER BY expires_at, key",
            (now,),
        ).fetchall()
        self._db.execute("DELETE FROM deliveries WHERE expires_at <= ?", (now,))
        return [Pending(k, r, t, bytes(p), n, e) for k, r, t, p, n, e in rows]

    def pending(self) -> list[str]:
        return [k for (k,) in self._db.execute("SELECT key FROM deliveries ORDER BY key")]
