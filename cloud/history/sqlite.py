"""The history in one SQLite file: per-box raw readings and PTU energies under pseudonymous ids.

Integrity (seed 004 TST-SEC#02): every row carries a MAC (HMAC-SHA256, 128 bits) under the
service's integrity key over all its fields, so an edit made with any SQLite tool shows as a
row whose MAC no longer matches. Deleted or inserted rows show in the totals: each box's row
holds its row count and the XOR of its rows' MACs (updated with every write, so checking it
needs no history), itself MAC'd, and one fleet row does the same over the box rows. Someone
with the key can forge rows; the key lives in a 0600 file apart from the database.
"""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from homeflex.cloud.history.store import (
    HistReading,
    ReplayedBatch,
    Stored,
    Tampering,
)
from homeflex.telemetry import MAX_AGE_S, Batch, PtuItem

SCHEMA = """
CREATE TABLE IF NOT EXISTS boxes (
    pid TEXT PRIMARY KEY,
    rows INTEGER NOT NULL,
    digest BLOB NOT NULL,
    duplicates INTEGER NOT NULL,
    replays INTEGER NOT NULL,
    mac BLOB NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS fleet (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    boxes INTEGER NOT NULL,
    digest BLOB NOT NULL,
    mac BLOB NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS devices (
    pid TEXT NOT NULL,
    device TEXT NOT NULL,
    poll_s REAL NOT NULL,
    PRIMARY KEY (pid, device)
) STRICT;
CREATE TABLE IF NOT EXISTS readings (
    pid TEXT NOT NULL,
    seq INTEGER NOT NULL,
    device TEXT NOT NULL,
    quantity TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    value REAL NOT NULL,
    stored_ms INTEGER NOT NULL,
    latency_ms INTEGER NOT NULL,
    mac BLOB NOT NULL,
    PRIMARY KEY (pid, seq)
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS readings_by_time ON readings (pid, ts_ms);
CREATE TABLE IF NOT EXISTS ptu (
    pid TEXT NOT NULL,
    device TEXT NOT NULL,
    ptu_start_ms INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    import_wh REAL NOT NULL,
    export_wh REAL NOT NULL,
    estimated INTEGER NOT NULL,
    mean_power_w REAL,
    stored_ms INTEGER NOT NULL,
    mac BLOB NOT NULL,
    PRIMARY KEY (pid, device, ptu_start_ms)
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS batches (
    pid TEXT NOT NULL,
    id TEXT NOT NULL,
    stored_ms INTEGER NOT NULL,
    items INTEGER NOT NULL,
    new INTEGER NOT NULL,
    PRIMARY KEY (pid, id)
) STRICT, WITHOUT ROWID;
"""

SEP = "\x1f"  # the unit separator: cannot occur in names (checked at decoding) or numbers
ZERO = bytes(16)


BUSY_MS = 60_000


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a) ^ int.from_bytes(b)).to_bytes(16)


class SqliteHistory:
    """One connection, for one thread at a time. Several processes may write the same file
    (the ingest's workers): each write is one `BEGIN IMMEDIATE` transaction that reads the
    replay check and the totals it updates inside it, and a writer waits for another's commit
    (up to BUSY_MS; the retention's deletes are the longest)."""

    def __init__(self, path: Path, integrity_key: bytes) -> None:
        self.path = path
        self._key = integrity_key
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")  # WAL: a crash loses no commit
        self._db.execute(f"PRAGMA busy_timeout = {BUSY_MS}")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    # --- MACs ------------------------------------------------------------------------------

    def _mac(self, *fields: object) -> bytes:
        text = SEP.join(repr(f) if isinstance(f, float) else str(f) for f in fields)
        return hmac.new(self._key, text.encode(), hashlib.sha256).digest()[:16]

    def _reading_mac(self, pid: str, seq: int, dev: str, q: str, ts: int, v: float,
                     stored: int, lat: int) -> bytes:  # fmt: skip
        return self._mac("r", pid, seq, dev, q, ts, float(v), stored, lat)

    def _ptu_mac(self, pid: str, dev: str, start: int, seq: int, imp: float, exp: float,
                 est: int, mean: float | None, stored: int) -> bytes:  # fmt: skip
        return self._mac("p", pid, dev, start, seq, float(imp), float(exp), est,
                         None if mean is None else float(mean), stored)  # fmt: skip

    def _box_mac(self, pid: str, rows: int, digest: bytes, dup: int, rep: int) -> bytes:
        return self._mac("b", pid, rows, digest.hex(), dup, rep)

    def _fleet_mac(self, boxes: int, digest: bytes) -> bytes:
        return self._mac("f", boxes, digest.hex())

    # --- writing ---------------------------------------------------------------------------

    def add(self, pid: str, batch: Batch, received: float) -> Stored:
        (result,) = self.add_many([(pid, batch, received)])
        if isinstance(result, ReplayedBatch):
            raise result
        return result

    def add_many(self, items: Sequence[tuple[str, Batch, float]]) -> list[Stored | ReplayedBatch]:
        """Several batches in one transaction (one commit for many small batches is most of
        what the ingest's throughput is made of); a replayed one is answered, not stored."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            results = [self._add(pid, batch, received) for pid, batch, received in items]
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return results

    def _add(self, pid: str, batch: Batch, received: float) -> Stored | ReplayedBatch:
        stored_ms = round(received * 1000)
        db = self._db
        if db.execute("SELECT 1 FROM batches WHERE pid = ? AND id = ?", (pid, batch.id)).fetchone():
            return ReplayedBatch(f"batch {batch.id} was stored before")
        rows, digest, dup, rep = self._box(pid)
        new_macs: list[bytes] = []
        duplicates = 0
        if batch.readings:
            lo = min(r.seq for r in batch.readings)
            hi = max(r.seq for r in batch.readings)
            have = {
                s
                for (s,) in db.execute(
                    "SELECT seq FROM readings WHERE pid = ? AND seq BETWEEN ? AND ?",
                    (pid, lo, hi),
                )
            }
            transit = received - batch.sent
            insert = []
            for r in batch.readings:
                if r.seq in have:
                    duplicates += 1
                    continue
                lat = max(0, round((batch.clock - r.ts_ms / 1000 + transit) * 1000))
                mac = self._reading_mac(
                    pid, r.seq, r.device, r.quantity, r.ts_ms, r.value, stored_ms, lat
                )
                new_macs.append(mac)
                insert.append(
                    (pid, r.seq, r.device, r.quantity, r.ts_ms, r.value, stored_ms, lat, mac)
                )
            db.executemany("INSERT INTO readings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", insert)
        for p in batch.ptus:
            old = db.execute(
                "SELECT seq, mac FROM ptu WHERE pid = ? AND device = ? AND ptu_start_ms = ?",
                (pid, p.device, p.ptu_start_ms),
            ).fetchone()
            if old is not None and old[0] >= p.seq:
                duplicates += 1  # this version, or a newer one, is stored
                continue
            est = int(p.estimated)
            mac = self._ptu_mac(
                pid, p.device, p.ptu_start_ms, p.seq, p.import_wh, p.export_wh, est,
                p.mean_power_w, stored_ms,
            )  # fmt: skip
            db.execute(
                "INSERT OR REPLACE INTO ptu VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (pid, p.device, p.ptu_start_ms, p.seq, p.import_wh, p.export_wh, est,
                 p.mean_power_w, stored_ms, mac),
            )  # fmt: skip
            if old is None:
                new_macs.append(mac)
            else:
                digest = _xor(_xor(digest, old[1]), mac)  # the row replaced, not added
        for mac in new_macs:
            digest = _xor(digest, mac)
        db.executemany(
            "INSERT INTO devices VALUES (?, ?, ?)"
            " ON CONFLICT DO UPDATE SET poll_s = excluded.poll_s",
            [(pid, d, s) for d, s in batch.poll_s.items()],
        )
        db.execute(
            "INSERT INTO batches VALUES (?, ?, ?, ?, ?)",
            (pid, batch.id, stored_ms, len(batch), len(new_macs)),
        )
        self._set_box(pid, rows + len(new_macs), digest, dup + duplicates, rep)
        return Stored(len(new_macs), duplicates)

    def _box(self, pid: str) -> tuple[int, bytes, int, int]:
        row = self._db.execute(
            "SELECT rows, digest, duplicates, replays FROM boxes WHERE pid = ?", (pid,)
        ).fetchone()
        return (0, ZERO, 0, 0) if row is None else (row[0], row[1], row[2], row[3])

    def _set_box(self, pid: str, rows: int, digest: bytes, dup: int, rep: int) -> None:
        db = self._db
        old = db.execute("SELECT mac FROM boxes WHERE pid = ?", (pid,)).fetchone()
        mac = self._box_mac(pid, rows, digest, dup, rep)
        db.execute(
            "INSERT OR REPLACE INTO boxes VALUES (?, ?, ?, ?, ?, ?)",
            (pid, rows, digest, dup, rep, mac),
        )
        fleet = db.execute("SELECT boxes, digest FROM fleet WHERE id = 1").fetchone()
        boxes, fleet_digest = (0, ZERO) if fleet is None else fleet
        if old is None:
            boxes += 1
        else:
            fleet_digest = _xor(fleet_digest, old[0])
        fleet_digest = _xor(fleet_digest, mac)
        db.execute(
            "INSERT OR REPLACE INTO fleet VALUES (1, ?, ?, ?)",
            (boxes, fleet_digest, self._fleet_mac(boxes, fleet_digest)),
        )

    def count_replay(self, pid: str) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            rows, digest, dup, rep = self._box(pid)
            self._set_box(pid, rows, digest, dup, rep + 1)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def apply_retention(self, now: float, raw_days: float, ptu_days: float) -> int:
        """Delete raw readings older than raw_days, PTU rows older than ptu_days and batch ids
        past the replay window; the box totals follow. Returns the rows deleted."""
        db = self._db
        raw_before = round((now - raw_days * 86_400) * 1000)
        ptu_before = round((now - ptu_days * 86_400) * 1000)
        db.execute("BEGIN IMMEDIATE")
        try:
            gone: dict[str, list[bytes]] = {}
            for pid, mac in (
                db.execute(
                    "SELECT pid, mac FROM readings WHERE ts_ms < ?", (raw_before,)
                ).fetchall()
                + db.execute(
                    "SELECT pid, mac FROM ptu WHERE ptu_start_ms < ?", (ptu_before,)
                ).fetchall()
            ):
                gone.setdefault(pid, []).append(mac)
            db.execute("DELETE FROM readings WHERE ts_ms < ?", (raw_before,))
            db.execute("DELETE FROM ptu WHERE ptu_start_ms < ?", (ptu_before,))
            db.execute(
                "DELETE FROM batches WHERE stored_ms < ?", (round((now - MAX_AGE_S) * 1000),)
            )
            for pid, macs in gone.items():
                rows, digest, dup, rep = self._box(pid)
                for mac in macs:
                    digest = _xor(digest, mac)
                self._set_box(pid, rows - len(macs), digest, dup, rep)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return sum(len(m) for m in gone.values())

    # --- reading ---------------------------------------------------------------------------

    def boxes(self) -> list[str]:
        return [pid for (pid,) in self._db.execute("SELECT pid FROM boxes ORDER BY pid")]

    def poll_s(self, pid: str) -> dict[str, float]:
        return dict(
            self._db.execute("SELECT device, poll_s FROM devices WHERE pid = ?", (pid,)).fetchall()
        )

    def readings(self, pid: str, start_ms: int, end_ms: int) -> list[HistReading]:
        return [
            HistReading(*row)
            for row in self._db.execute(
                "SELECT device, quantity, ts_ms, value, latency_ms FROM readings"
                " WHERE pid = ? AND ts_ms >= ? AND ts_ms < ? ORDER BY ts_ms, seq",
                (pid, start_ms, end_ms),
            )
        ]

    def ptus(self, pid: str, start_ms: int, end_ms: int) -> list[PtuItem]:
        """The PTU energies kept, each as the latest item the box sent for it."""
        return [
            PtuItem(seq, dev, start, imp, exp, bool(est), mean)
            for seq, dev, start, imp, exp, est, mean in self._db.execute(
                "SELECT seq, device, ptu_start_ms, import_wh, export_wh, estimated, mean_power_w"
                " FROM ptu WHERE pid = ? AND ptu_start_ms >= ? AND ptu_start_ms < ?"
                " ORDER BY device, ptu_start_ms",
                (pid, start_ms, end_ms),
            )
        ]

    def counts(self, pid: str) -> dict[str, int]:
        one = self._db.execute
        _, _, dup, rep = self._box(pid)
        return {
            "readings": one("SELECT COUNT(*) FROM readings WHERE pid = ?", (pid,)).fetchone()[0],
            "ptus": one("SELECT COUNT(*) FROM ptu WHERE pid = ?", (pid,)).fetchone()[0],
            "batches": one("SELECT COUNT(*) FROM batches WHERE pid = ?", (pid,)).fetchone()[0],
            "duplicates": dup,
            "replays": rep,
        }

    # --- integrity -------------------------------------------------------------------------

    def check_integrity(self) -> list[Tampering]:
        """Every row against its MAC, every box's totals against its rows, the fleet row
        against the boxes. Reads the whole history: run it from a reader, not the ingest."""
        found: list[Tampering] = []
        db = self._db
        fleet_digest, n_boxes = ZERO, 0
        for pid, rows, digest, dup, rep, mac in db.execute("SELECT * FROM boxes").fetchall():
            n_boxes += 1
            fleet_digest = _xor(fleet_digest, mac)
            if not hmac.compare_digest(mac, self._box_mac(pid, rows, digest, dup, rep)):
                found.append(Tampering(pid, "boxes", pid, "the box's totals were changed"))
            seen, xor = 0, ZERO
            for seq, dev, q, ts, v, stored, lat, rmac in db.execute(
                "SELECT seq, device, quantity, ts_ms, value, stored_ms, latency_ms, mac"
                " FROM readings WHERE pid = ?",
                (pid,),
            ):
                seen, xor = seen + 1, _xor(xor, rmac)
                if not hmac.compare_digest(
                    rmac, self._reading_mac(pid, seq, dev, q, ts, v, stored, lat)
                ):
                    found.append(
                        Tampering(pid, "readings", f"seq {seq}", f"{dev}.{q} at {ts} changed")
                    )
            for dev, start, seq, imp, exp, est, mean, stored, pmac in db.execute(
                "SELECT device, ptu_start_ms, seq, import_wh, export_wh, estimated,"
                " mean_power_w, stored_ms, mac FROM ptu WHERE pid = ?",
                (pid,),
            ):
                seen, xor = seen + 1, _xor(xor, pmac)
                if not hmac.compare_digest(
                    pmac, self._ptu_mac(pid, dev, start, seq, imp, exp, est, mean, stored)
                ):
                    found.append(Tampering(pid, "ptu", f"{dev} {start}", "PTU energy changed"))
            if seen != rows or xor != digest:
                found.append(
                    Tampering(
                        pid,
                        "boxes",
                        pid,
                        f"rows deleted or added: the totals say {rows}, the tables hold {seen}",
                    )
                )
        fleet = db.execute("SELECT boxes, digest, mac FROM fleet WHERE id = 1").fetchone()
        if fleet is not None or n_boxes:
            boxes, digest, mac = fleet if fleet is not None else (0, ZERO, ZERO)
            if (
                not hmac.compare_digest(mac, self._fleet_mac(boxes, digest))
                or boxes != n_boxes
                or digest != fleet_digest
            ):
                found.append(
                    Tampering("*", "fleet", "fleet", "boxes were deleted, added or changed")
                )
        return found
