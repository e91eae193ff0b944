"""The outbox: readings and PTU aggregates waiting to be sent to the cloud (edge/uplink.py).

A raw reading enters the outbox in the transaction that stores it (a trigger, so a reading the
store already had does not enter twice); a PTU aggregate enters when the PTU closes and again
whenever a late reading changes a closed PTU. Rows leave only when the cloud's ingest has
acknowledged the batch that carried them.

Bound: the outbox holds at most `max_rows` rows. Past it, the oldest raw readings are thinned to
the last reading of each series per minute, then per PTU: a counter keeps its exact value at
those instants (energy is cumulative, so no energy is lost, only resolution), a power series
keeps a sample. PTU aggregates are never thinned or dropped. At 15 devices polled each second a
day is about 5 million raw rows (~150 MB); the default bound keeps a week of one-minute data.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlite_utils import Database

from homeflex.telemetry import PtuItem, ReadingItem

# TEMP: only the gateway's own connection feeds the outbox, and only with telemetry configured
# (a trigger body may not name main.outbox; the unqualified name finds it in main).
TRIGGER = """CREATE TEMP TRIGGER IF NOT EXISTS readings_to_outbox AFTER INSERT ON main.readings
BEGIN
    INSERT INTO outbox (series, ts_ms, value) VALUES (NEW.series, NEW.ts_ms, NEW.value);
END"""

Span = tuple[int, int]  # lo <= seq <= hi
THIN_STEPS_MS = (60_000, 900_000)  # keep one raw reading per series per minute, then per PTU


def take(
    db: Database, limit: int, *, after: int = 0, upto: int | None = None, skip: Sequence[Span] = ()
) -> tuple[list[ReadingItem], list[PtuItem]]:
    """Up to `limit` items with after < seq <= upto, oldest first, leaving out the seq spans in
    `skip` (batches in flight)."""
    where = ["o.seq > ?"] + ["o.seq NOT BETWEEN ? AND ?" for _ in skip]
    params: list[int] = [after, *(bound for span in skip for bound in span)]
    if upto is not None:
        where.append("o.seq <= ?")
        params.append(upto)
    rows = db.execute(
        f"""SELECT o.seq, o.ts_ms, o.value,
                   COALESCE(dr.name, dp.name), s.quantity,
                   p.import_wh, p.export_wh, p.estimated, p.power_sum_w, p.power_count
            FROM outbox o
            LEFT JOIN series s ON s.id = o.series
            LEFT JOIN devices dr ON dr.id = s.device
            LEFT JOIN devices dp ON dp.id = o.device
            LEFT JOIN ptu p ON p.device = o.device AND p.ptu_start_ms = o.ts_ms
            WHERE {" AND ".join(where)} ORDER BY o.seq LIMIT ?""",
        [*params, limit],
    ).fetchall()
    readings: list[ReadingItem] = []
    ptus: list[PtuItem] = []
    for seq, ts_ms, value, device, quantity, imp, exp, est, psum, pcount in rows:
        if quantity is not None:
            readings.append(ReadingItem(seq, device, quantity, ts_ms, value))
        else:
            ptus.append(
                PtuItem(seq, device, ts_ms, imp, exp, bool(est), psum / pcount if pcount else None)
            )
    return readings, ptus


def delete(db: Database, seqs: Iterable[int]) -> int:
    """Remove the rows with these sequence numbers (a batch the cloud acknowledged)."""
    return db.conn.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs]).rowcount


def clear(db: Database) -> int:
    """Remove every row (the owner withdrew consent: what waited is not to leave)."""
    return db.conn.execute("DELETE FROM outbox").rowcount


def last_seq(db: Database) -> int:
    """The highest sequence number given so far (0 before the first)."""
    row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
    return int(row[0]) if row else 0


def size(db: Database) -> int:
    count: int = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    return count


def thin(db: Database, max_rows: int) -> int:
    """Bring the outbox under `max_rows` by thinning its oldest half of raw readings, step by
    step (THIN_STEPS_MS); returns the rows removed. Stops, over the bound, when only PTU rows
    and fully thinned readings are left."""
    removed = 0
    for step in THIN_STEPS_MS:
        excess = size(db) - max_rows
        if excess <= 0:
            break
        oldest_half = db.execute(
            "SELECT seq FROM outbox WHERE series IS NOT NULL ORDER BY seq"
            " LIMIT 1 OFFSET (SELECT COUNT(*) / 2 FROM outbox WHERE series IS NOT NULL)"
        ).fetchone()
        if oldest_half is None:
            break
        # within the oldest half keep, per series and step, the reading with the highest seq
        removed += db.execute(
            """DELETE FROM outbox WHERE series IS NOT NULL AND seq < :upto AND seq NOT IN (
                   SELECT MAX(seq) FROM outbox WHERE series IS NOT NULL AND seq < :upto
                   GROUP BY series, ts_ms / :step)""",
            {"upto": oldest_half[0], "step": step},
        ).rowcount
    return removed
