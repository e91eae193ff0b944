"""The store's tables, versioned by `PRAGMA user_version`: one migration function per step.

To change the schema, append a function that takes version N-1 to N; never edit a released one.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlite_utils import Database


def _v1_initial(db: Database) -> None:
    # Names become small integers once (devices, series) so the big tables hold only numbers;
    # WITHOUT ROWID clusters raw readings by (series, ts_ms), the order every query reads them in.
    for statement in (
        """CREATE TABLE devices (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE
        ) STRICT""",
        """CREATE TABLE series (
            id INTEGER PRIMARY KEY,
            device INTEGER NOT NULL REFERENCES devices(id),
            quantity TEXT NOT NULL,
            UNIQUE (device, quantity)
        ) STRICT""",
        """CREATE TABLE readings (
            series INTEGER NOT NULL REFERENCES series(id),
            ts_ms INTEGER NOT NULL,
            value REAL NOT NULL,
            PRIMARY KEY (series, ts_ms)
        ) STRICT, WITHOUT ROWID""",
        # The last reading taken into the aggregates, per counter and power series.
        """CREATE TABLE series_state (
            series INTEGER PRIMARY KEY REFERENCES series(id),
            ts_ms INTEGER NOT NULL,
            value REAL NOT NULL
        ) STRICT""",
        """CREATE TABLE ptu (
            device INTEGER NOT NULL REFERENCES devices(id),
            ptu_start_ms INTEGER NOT NULL,
            import_wh REAL NOT NULL DEFAULT 0,
            export_wh REAL NOT NULL DEFAULT 0,
            estimated INTEGER NOT NULL DEFAULT 0,
            power_sum_w REAL NOT NULL DEFAULT 0,
            power_count INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (device, ptu_start_ms)
        ) STRICT, WITHOUT ROWID""",
        """CREATE TABLE downsampled (
            series INTEGER NOT NULL REFERENCES series(id),
            minute_ms INTEGER NOT NULL,
            mean REAL NOT NULL,
            min REAL NOT NULL,
            max REAL NOT NULL,
            count INTEGER NOT NULL,
            PRIMARY KEY (series, minute_ms)
        ) STRICT, WITHOUT ROWID""",
        """CREATE TABLE quality_events (
            id INTEGER PRIMARY KEY,
            series INTEGER NOT NULL REFERENCES series(id),
            ts_ms INTEGER NOT NULL,
            kind TEXT NOT NULL,
            value REAL,
            detail TEXT NOT NULL
        ) STRICT""",
        "CREATE INDEX quality_events_by_series_ts ON quality_events (series, ts_ms)",
    ):
        db.execute(statement)


def _v2_outbox(db: Database) -> None:
    # What waits to be sent to the cloud, in the order it is to be sent. AUTOINCREMENT: a
    # sequence number is never given twice, even after the newest rows were sent and deleted,
    # because the cloud takes (box, seq) as the identity of an item. A row is a raw reading
    # (series, ts_ms, value) or a PTU aggregate to send (device, ts_ms = PTU start; its values
    # are read from `ptu` when sent, so a PTU queued twice sends its latest values twice).
    db.execute(
        """CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            series INTEGER REFERENCES series(id),
            device INTEGER REFERENCES devices(id),
            ts_ms INTEGER NOT NULL,
            value REAL,
            CHECK ((series IS NULL) != (device IS NULL))
        ) STRICT"""
    )


def _v3_prices(db: Database) -> None:
    # The prices each PTU had when it began (€/kWh), as the box knew them: the price file is
    # replaced day by day, and the History's costs must not change with it.
    db.execute(
        """CREATE TABLE prices (
            ptu_start_ms INTEGER PRIMARY KEY,
            import_eur_kwh REAL NOT NULL,
            export_eur_kwh REAL NOT NULL
        ) STRICT"""
    )


MIGRATIONS: list[Callable[[Database], None]] = [_v1_initial, _v2_outbox, _v3_prices]
"""MIGRATIONS[i] takes the schema from version i to version i + 1."""

LATEST = len(MIGRATIONS)


def user_version(db: Database) -> int:
    version: int = db.execute("PRAGMA user_version").fetchone()[0]
    return version


def migrate(db: Database) -> None:
    """Bring `db` to LATEST, each step in its own transaction together with its version number,
    so an interrupted upgrade resumes at the step it stopped in."""
    for version in range(user_version(db), LATEST):
        with db.atomic():
            MIGRATIONS[version](db)
            db.execute(f"PRAGMA user_version = {version + 1}")
