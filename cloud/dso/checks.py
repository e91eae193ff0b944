"""Where the DSO keeps its validations (cloud/dso/brain.py `Check`) so that a DSO restarted
mid-round goes on with them: the D-prognoses taken, the requests sent and the offers received,
what was bought. One row per congestion point, day and generation, replaced at every change,
committed before the message that caused it is acknowledged."""

from __future__ import annotations

import json
import sqlite3
from datetime import date
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS checks (
    point TEXT NOT NULL,
    day TEXT NOT NULL,
    generation INTEGER NOT NULL,
    started REAL NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (point, day, generation)
) STRICT;
"""


class CheckStore:
    def __init__(self, path: Path | str) -> None:
        # one caller at a time, not always on the thread that opened it (NodeAgent.work)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def save(self, point: str, day: date, generation: int, started: float, data: Any) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO checks VALUES (?, ?, ?, ?, ?)",
            (point, day.isoformat(), generation, started, json.dumps(data)),
        )

    def since(self, day: date) -> list[Any]:
        """The checks of `day` and later, in the order they began."""
        rows = self._db.execute(
            "SELECT data FROM checks WHERE day >= ? ORDER BY started, generation",
            (day.isoformat(),),
        )
        return [json.loads(data) for (data,) in rows]

    def latest_day(self) -> date | None:
        (day,) = self._db.execute("SELECT max(day) FROM checks").fetchone()
        return None if day is None else date.fromisoformat(day)
