"""The replay cache: which messages were already accepted, kept in a SQLite file so a restart
does not make an old message acceptable again.

It holds (sender, message id, expiry) until the expiry has passed. The receiver refuses a
message outside its freshness window as stale *before* asking the cache, so nothing older than
the window ever needs to be remembered and the file stays bounded: at most (messages per second
x (longest TTL + clock skew)) rows."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

PRUNE_EVERY_S = 60.0  # clock seconds between deletions of expired rows


class ReplayCache:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # one connection used under a lock: agents may call from a thread pool
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives the process dying (the restart we guard
        # against); a power cut may lose the last moments, whose envelopes are still fresh and
        # so replayable for at most their TTL. FULL would fsync every message (~100x slower).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS seen (sender TEXT NOT NULL, id TEXT NOT NULL,"
            " expires REAL NOT NULL, PRIMARY KEY (sender, id)) WITHOUT ROWID"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS seen_expires ON seen (expires)")
        self._lock = threading.Lock()
        self._pruned_at = float("-inf")

    def first_time(self, sender: str, id: str, expires: float, now: float) -> bool:
        """Record the message; True when it was not seen before (atomic: two deliveries of the
        same message racing each other get one True)."""
        with self._lock:
            if now - self._pruned_at >= PRUNE_EVERY_S:
                self._db.execute("DELETE FROM seen WHERE expires < ?", (now,))
                self._pruned_at = now
            cur = self._db.execute(
                "INSERT OR IGNORE INTO seen (sender, id, expires) VALUES (?, ?, ?)",
                (sender, id, expires),
            )
            return cur.rowcount == 1

    def __len__(self) -> int:
        with self._lock:
            (n,) = self._db.execute("SELECT count(*) FROM seen").fetchone()
            return int(n)

    def prune(self, now: float) -> int:
        """Forget messages whose expiry has passed; how many."""
        with self._lock:
            cur = self._db.execute("DELETE FROM seen WHERE expires < ?", (now,))
            self._pruned_at = now
            return cur.rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()
