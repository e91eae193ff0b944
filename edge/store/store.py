"""The gateway's measurement store: raw readings, PTU energy aggregates and data-quality events in
one SQLite file (WAL, synchronous=FULL), written by the gateway alone and readable by others."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlite_utils import Database

from homeflex.clock import PTU_SECONDS
from homeflex.edge.config import RetentionConfig
from homeflex.edge.devices.capabilities import Quantity, Reading
from homeflex.edge.store import outbox as _outbox
from homeflex.edge.store import retention as _retention
from homeflex.edge.store.ptu import PTU_MS, apportion, ptu_start_ms
from homeflex.edge.store.schema import LATEST, migrate, user_version
from homeflex.telemetry import PtuItem, ReadingItem

BUSY_TIMEOUT_MS = 5000
COUNTERS = (Quantity.IMPORT_WH, Quantity.EXPORT_WH)


class StoreError(Exception):
    """The store file cannot be used; the message names the file and what to do."""


@dataclass(frozen=True, slots=True)
class PtuEnergy:
    """Energy of one device in one PTU; `estimated` when part of it was interpolated over a long
    gap between readings or lost to a counter reset. `mean_power_w` is None without power_w."""

    device: str
    ptu_start: float
    import_wh: float
    export_wh: float
    estimated: bool
    mean_power_w: float | None = None


@dataclass(frozen=True, slots=True)
class MinuteStats:
    """Raw readings of one minute after downsampling."""

    device: str
    quantity: Quantity
    minute_start: float
    mean: float
    min: float
    max: float
    count: int


@dataclass(frozen=True, slots=True)
class QualityEvent:
    """Something found wrong with the data at ingest, e.g. kind `counter_reset`."""

    device: str
    quantity: Quantity
    ts: float
    kind: str
    value: float | None
    detail: str


# Queries look names up in SQL, not in the writer's caches: a read-only Store sees new devices.
_SERIES_BY_NAME = (
    "(SELECT s.id FROM series s JOIN devices d ON d.id = s.device"
    " WHERE d.name = ? AND s.quantity = ?)"
)


def _ms(ts: float) -> int:
    return round(ts * 1000)


class _PtuDelta:
    """What one write() adds to one (device, PTU) row."""

    __slots__ = ("estimated", "export_wh", "import_wh", "power_count", "power_sum_w")

    def __init__(self) -> None:
        self.import_wh = 0.0
        self.export_wh = 0.0
        self.estimated = False
        self.power_sum_w = 0.0
        self.power_count = 0


class Store:
    """Open with Store.open(path). Not safe for concurrent use from several threads at once; the
    connection may move between threads (e.g. asyncio.to_thread), one call at a time."""

    def __init__(self, db: Database, path: Path, estimate_after_s: float) -> None:
        self._db = db
        self._path = path
        self._estimate_after_ms = _ms(estimate_after_s)
        self._outbox = False
        self._load_caches()

    @classmethod
    def open(
        cls, path: Path, *, read_only: bool = False, estimate_after_s: float = PTU_SECONDS
    ) -> Store:
        """Open (creating or migrating if needed) the store at `path`. `read_only` is for other
        processes reading while the gateway writes; it never creates or migrates. Intervals
        between counter readings longer than `estimate_after_s` mark their PTUs `estimated`."""
        if read_only and not path.is_file():
            raise StoreError(f"{path}: no store file here; check the path in the configuration")
        if not read_only and not path.parent.is_dir():
            raise StoreError(f"{path}: directory {path.parent} does not exist; create it first")
        if read_only:
            conn = sqlite3.connect(
                path.resolve().as_uri() + "?mode=ro", uri=True, check_same_thread=False
            )
        else:
            conn = sqlite3.connect(path, check_same_thread=False)
        try:
            db = Database(conn, execute_plugins=False)
            version = user_version(db)  # the first read: fails here on a file that is not SQLite
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            db.execute("PRAGMA foreign_keys = ON")
            if version > LATEST:
                raise StoreError(
                    f"{path}: schema version {version} was written by a newer Homeflex (this one "
                    f"knows up to {LATEST}); upgrade Homeflex, the file is left untouched"
                )
            if read_only:
                if version != LATEST:
                    raise StoreError(
                        f"{path}: schema version {version}, expected {LATEST}; "
                        "start the gateway once so it migrates the store"
                    )
            else:
                if version == 0 and db.table_names():
                    raise StoreError(
                        f"{path}: an SQLite file with other tables, not a Homeflex store; "
                        "point the configuration at another file, this one is left untouched"
                    )
                db.enable_wal()
                # FULL: a commit survives a power cut, not only a crash of this process.
                db.execute("PRAGMA synchronous = FULL")
                migrate(db)
            return cls(db, path, estimate_after_s)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(
                f"{path}: cannot be used as a Homeflex store ({exc}); the file is left untouched: "
                "move it aside (keep it for recovery) and restart to begin a new store, "
                "or restore a backup"
            ) from exc
        except BaseException:
            conn.close()
            raise

    @property
    def path(self) -> Path:
        return self._path

    def close(self) -> None:
        self._db.close()

    # --- the outbox (what the uplink sends to the cloud) ----------------------------------------

    def enable_outbox(self) -> None:
        """From now on every new reading, and every PTU as it closes or changes after closing,
        is queued in the outbox (the gateway does this when telemetry is configured)."""
        self._db.execute(_outbox.TRIGGER)
        self._outbox = True

    def outbox_take(
        self,
        limit: int,
        *,
        after: int = 0,
        upto: int | None = None,
        skip: Sequence[tuple[int, int]] = (),
    ) -> tuple[list[ReadingItem], list[PtuItem]]:
        """Up to `limit` queued items with after < seq <= upto, oldest first, outside `skip`."""
        return _outbox.take(self._db, limit, after=after, upto=upto, skip=skip)

    def outbox_delete(self, seqs: Sequence[int]) -> int:
        """Remove acknowledged items; the number removed."""
        with self._transaction():
            return _outbox.delete(self._db, seqs)

    def outbox_clear(self) -> int:
        with self._transaction():
            return _outbox.clear(self._db)

    def outbox_last_seq(self) -> int:
        return _outbox.last_seq(self._db)

    def outbox_size(self) -> int:
        return _outbox.size(self._db)

    def outbox_thin(self, max_rows: int) -> int:
        with self._transaction():
            return _outbox.thin(self._db, max_rows)

    # --- writing -------------------------------------------------------------------------------

    def _load_caches(self) -> None:
        """Names↔ids and aggregation state, kept in memory: this process is the only writer."""
        self._device_ids: dict[str, int] = {
            name: id_ for id_, name in self._db.execute("SELECT id, name FROM devices")
        }
        self._series: dict[tuple[str, str], int] = {}
        self._series_info: dict[int, tuple[int, str, Quantity]] = {}
        for id_, device, name, quantity in self._db.execute(
            "SELECT s.id, s.device, d.name, s.quantity"
            " FROM series s JOIN devices d ON d.id = s.device"
        ):
            self._series[(name, quantity)] = id_
            self._series_info[id_] = (device, name, Quantity(quantity))
        self._state: dict[int, tuple[int, float]] = {
            series: (ts_ms, value)
            for series, ts_ms, value in self._db.execute("SELECT * FROM series_state")
        }

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        try:
            with self._db.atomic():
                yield
        except BaseException:
            self._load_caches()  # the rollback may have undone ids or state the caches hold
            raise

    def _series_id(self, device: str, quantity: Quantity) -> int:
        key = (device, str(quantity))
        series = self._series.get(key)
        if series is None:
            device_id = self._device_ids.get(device)
            if device_id is None:
                cur = self._db.execute("INSERT INTO devices (name) VALUES (?)", [device])
                device_id = self._device_ids[device] = int(cur.lastrowid or 0)
            cur = self._db.execute(
                "INSERT INTO series (device, quantity) VALUES (?, ?)", [device_id, str(quantity)]
            )
            series = self._series[key] = int(cur.lastrowid or 0)
            self._series_info[series] = (device_id, device, quantity)
        return series

    def write(self, readings: Sequence[Reading]) -> int:
        """Store a batch and fold it into the PTU aggregates, all in one transaction; returns after
        the commit (the acknowledgement) the number of readings that were new. A reading already
        stored (same device, quantity, ts) is ignored."""
        if not readings:
            return 0
        with self._transaction():
            rows = [(self._series_id(r.device, r.quantity), _ms(r.ts), r.value) for r in readings]
            cur = self._db.conn.executemany(
                "INSERT OR IGNORE INTO readings (series, ts_ms, value) VALUES (?, ?, ?)", rows
            )
            new = cur.rowcount
            self._aggregate(rows)
        return new

    def _aggregate(self, rows: list[tuple[int, int, float]]) -> None:
        # Stable sort: of two readings with the same ts in one batch, the first is the one stored
        # and the one aggregated; the second is skipped as not later than the state.
        wanted = [
            row
            for row in rows
            if self._series_info[row[0]][2] in COUNTERS
            or self._series_info[row[0]][2] == Quantity.POWER_W
        ]
        wanted.sort(key=lambda row: (row[0], row[1]))
        ptus: dict[tuple[int, int], _PtuDelta] = {}
        changed: dict[int, tuple[int, float]] = {}
        before = self._device_times() if self._outbox else {}
        events: list[tuple[int, int, str, float, str]] = []
        for series, ts_ms, value in wanted:
            device_id, _, quantity = self._series_info[series]
            last = self._state.get(series)
            # A reading not later than the state (late, out of order, or re-delivered) is stored
            # raw but leaves the aggregates alone: they only ever move forward in time.
            if last is not None and ts_ms <= last[0]:
                continue
            self._state[series] = changed[series] = (ts_ms, value)
            if quantity == Quantity.POWER_W:
                delta_row = ptus.setdefault((device_id, ptu_start_ms(ts_ms)), _PtuDelta())
                delta_row.power_sum_w += value
                delta_row.power_count += 1
                continue
            if last is None:
                continue  # the first reading of a counter only sets its start
            last_ms, last_value = last
            delta = value - last_value
            if delta < 0:
                # Reset, rollover or replaced meter: the energy of this interval is unknown.
                events.append(
                    (
                        series,
                        ts_ms,
                        "counter_reset",
                        value,
                        f"{quantity} fell from {last_value} to {value}; energy between "
                        f"{last_ms / 1000} and {ts_ms / 1000} not counted",
                    )
                )
                for start, _ in apportion(last_ms, ts_ms, 0.0):
                    ptus.setdefault((device_id, start), _PtuDelta()).estimated = True
                continue
            long_gap = ts_ms - last_ms > self._estimate_after_ms
            for start, share in apportion(last_ms, ts_ms, delta):
                delta_row = ptus.setdefault((device_id, start), _PtuDelta())
                if quantity == Quantity.IMPORT_WH:
                    delta_row.import_wh += share
                else:
                    delta_row.export_wh += share
                delta_row.estimated |= long_gap
        conn = self._db.conn
        conn.executemany(
            """INSERT INTO ptu (device, ptu_start_ms, import_wh, export_wh, estimated,
                                power_sum_w, power_count)
               VALUES (?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (device, ptu_start_ms) DO UPDATE SET
                 import_wh = import_wh + excluded.import_wh,
                 export_wh = export_wh + excluded.export_wh,
                 estimated = estimated OR excluded.estimated,
                 power_sum_w = power_sum_w + excluded.power_sum_w,
                 power_count = power_count + excluded.power_count""",
            [
                (dev, ptu, d.import_wh, d.export_wh, d.estimated, d.power_sum_w, d.power_count)
                for (dev, ptu), d in ptus.items()
            ],
        )
        conn.executemany(
            "INSERT OR REPLACE INTO series_state (series, ts_ms, value) VALUES (?, ?, ?)",
            [(series, ts_ms, value) for series, (ts_ms, value) in changed.items()],
        )
        conn.executemany(
            "INSERT INTO quality_events (series, ts_ms, kind, value, detail)"
            " VALUES (?, ?, ?, ?, ?)",
            events,
        )
        if self._outbox:
            self._queue_closed_ptus(before, self._device_times(), ptus)

    def _device_times(self) -> dict[int, int]:
        """The newest aggregated reading time of each device (over its series)."""
        times: dict[int, int] = {}
        for series, (ts_ms, _) in self._state.items():
            device = self._series_info[series][0]
            times[device] = max(ts_ms, times.get(device, ts_ms))
        return times

    def _queue_closed_ptus(
        self,
        before: dict[int, int],
        after: dict[int, int],
        touched: dict[tuple[int, int], _PtuDelta],
    ) -> None:
        """Queue the PTUs this write closed (a device's readings moved past their end) and the
        closed PTUs it changed (a late interval apportioned into them), in time order."""
        queued: set[tuple[int, int]] = set()
        for device, now_ms in after.items():
            was_ms = before.get(device)
            first = ptu_start_ms(was_ms) if was_ms is not None else None
            last = ptu_start_ms(now_ms)  # the PTU now running stays open
            if first is None:
                starts = [s for d, s in touched if d == device]
                first = min(starts, default=last)
            rows = self._db.conn.execute(
                "SELECT ptu_start_ms FROM ptu WHERE device = ? AND ptu_start_ms >= ?"
                " AND ptu_start_ms < ?",
                [device, first, last],
            )
            queued.update((device, int(start)) for (start,) in rows)
        for device, start in touched:
            was_ms = before.get(device)
            if was_ms is not None and start + PTU_MS <= was_ms:
                queued.add((device, start))
        in_time_order = sorted((start, device) for device, start in queued)
        self._db.conn.executemany("INSERT INTO outbox (ts_ms, device) VALUES (?, ?)", in_time_order)

    def apply_retention(self, now: float, retention: RetentionConfig, max_rows: int) -> int:
        """Downsample raw readings older than raw_days to 1-minute stats and delete those older
        than downsampled_days, touching at most `max_rows` rows in one transaction (call it
        periodically; a result equal to max_rows means there is more to do). PTU rows are kept."""
        with self._transaction():
            return _retention.apply(self._db, now, retention, max_rows)

    # --- reading -------------------------------------------------------------------------------

    def devices(self) -> list[str]:
        return [name for (name,) in self._db.execute("SELECT name FROM devices ORDER BY name")]

    def latest(self, device: str | None = None) -> list[Reading]:
        """The newest raw reading of every quantity (of one device, or of all)."""
        sql = """SELECT d.name, s.quantity, r.ts_ms, r.value
                 FROM series s JOIN devices d ON d.id = s.device
                 JOIN readings r ON r.series = s.id
                   AND r.ts_ms = (SELECT MAX(ts_ms) FROM readings WHERE series = s.id)"""
        params: list[str] = []
        if device is not None:
            sql += " WHERE d.name = ?"
            params.append(device)
        sql += " ORDER BY d.name, s.quantity"
        return [
            Reading(name, Quantity(quantity), ts_ms / 1000, value)
            for name, quantity, ts_ms, value in self._db.execute(sql, params)
        ]

    def readings(self, device: str, quantity: Quantity, start: float, end: float) -> list[Reading]:
        """Raw readings with start <= ts < end, oldest first (older ones are in downsampled())."""
        return [
            Reading(device, quantity, ts_ms / 1000, value)
            for ts_ms, value in self._db.execute(
                f"SELECT ts_ms, value FROM readings WHERE series = {_SERIES_BY_NAME}"
                " AND ts_ms >= ? AND ts_ms < ? ORDER BY ts_ms",
                [device, str(quantity), _ms(start), _ms(end)],
            )
        ]

    def downsampled(
        self, device: str, quantity: Quantity, start: float, end: float
    ) -> list[MinuteStats]:
        """1-minute stats of readings past raw retention, minute starts in [start, end)."""
        return [
            MinuteStats(device, quantity, minute_ms / 1000, mean, min_, max_, count)
            for minute_ms, mean, min_, max_, count in self._db.execute(
                "SELECT minute_ms, mean, min, max, count FROM downsampled"
                f" WHERE series = {_SERIES_BY_NAME} AND minute_ms >= ? AND minute_ms < ?"
                " ORDER BY minute_ms",
                [device, str(quantity), _ms(start), _ms(end)],
            )
        ]

    def ptu_energy(self, device: str, start: float, end: float) -> list[PtuEnergy]:
        """PTU rows of `device` with start <= ptu_start < end, oldest first. A PTU without any
        counter or power reading has no row."""
        return [
            PtuEnergy(
                device,
                ptu_ms / 1000,
                import_wh,
                export_wh,
                bool(estimated),
                power_sum / power_count if power_count else None,
            )
            for ptu_ms, import_wh, export_wh, estimated, power_sum, power_count in self._db.execute(
                "SELECT ptu_start_ms, import_wh, export_wh, estimated, power_sum_w, power_count"
                " FROM ptu WHERE device = (SELECT id FROM devices WHERE name = ?)"
                " AND ptu_start_ms >= ? AND ptu_start_ms < ? ORDER BY ptu_start_ms",
                [device, _ms(start), _ms(end)],
            )
        ]

    def ptu_rows(
        self, device: str, start: float, end: float
    ) -> list[tuple[int, float, float, int]]:
        """The rows of ptu_energy as plain tuples (ptu_start_ms, import_wh, export_wh,
        estimated): for reading a year at once (the History page), where building an object
        per row costs more than the query."""
        rows: list[tuple[int, float, float, int]] = self._db.execute(
            "SELECT ptu_start_ms, import_wh, export_wh, estimated FROM ptu"
            " WHERE device = (SELECT id FROM devices WHERE name = ?)"
            " AND ptu_start_ms >= ? AND ptu_start_ms < ? ORDER BY ptu_start_ms",
            [device, _ms(start), _ms(end)],
        ).fetchall()
        return rows

    def record_prices(self, ptu_start: float, import_eur: float, export_eur: float) -> None:
        """The prices of the PTU from `ptu_start`, as in force when it began (kept: a later price
        file does not change what that PTU cost)."""
        with self._transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO prices VALUES (?, ?, ?)",
                [_ms(ptu_start), import_eur, export_eur],
            )

    def prices(self, start: float, end: float) -> dict[int, tuple[float, float]]:
        """ptu_start_ms → (import, export) €/kWh of the PTUs recorded in [start, end)."""
        return {
            ms: (imp, exp)
            for ms, imp, exp in self._db.execute(
                "SELECT ptu_start_ms, import_eur_kwh, export_eur_kwh FROM prices"
                " WHERE ptu_start_ms >= ? AND ptu_start_ms < ?",
                [_ms(start), _ms(end)],
            )
        }

    def events(self, device: str, start: float, end: float) -> list[QualityEvent]:
        """Data-quality events of `device` with start <= ts < end, oldest first."""
        return [
            QualityEvent(device, Quantity(quantity), ts_ms / 1000, kind, value, detail)
            for quantity, ts_ms, kind, value, detail in self._db.execute(
                """SELECT s.quantity, e.ts_ms, e.kind, e.value, e.detail
                   FROM quality_events e JOIN series s ON s.id = e.series
                   JOIN devices d ON d.id = s.device
                   WHERE d.name = ? AND e.ts_ms >= ? AND e.ts_ms < ? ORDER BY e.ts_ms, e.id""",
                [device, _ms(start), _ms(end)],
            )
        ]
