"""Retention: raw readings past raw_days become 1-minute mean/min/max rows, which are deleted
past downsampled_days. Work is bounded per call so the writer never stalls for long."""

from __future__ import annotations

from sqlite_utils import Database

from homeflex.edge.config import RetentionConfig

MINUTE_MS = 60_000
DAY_MS = 86_400_000


def apply(db: Database, now: float, retention: RetentionConfig, max_rows: int) -> int:
    """Process at most `max_rows` rows (raw readings downsampled plus downsampled rows deleted),
    oldest first per series; returns how many. Call inside a transaction."""
    if max_rows <= 0:
        raise ValueError(f"max_rows must be positive, got {max_rows}")
    now_ms = round(now * 1000)
    raw_cutoff = now_ms - round(retention.raw_days * DAY_MS)
    downsampled_cutoff = now_ms - round(retention.downsampled_days * DAY_MS)
    budget = max_rows
    conn = db.conn
    series_ids = [series for (series,) in conn.execute("SELECT id FROM series ORDER BY id")]
    for series in series_ids:
        if budget == 0:
            break
        rows = conn.execute(
            "SELECT ts_ms, value FROM readings WHERE series = ? AND ts_ms < ?"
            " ORDER BY ts_ms LIMIT ?",
            [series, raw_cutoff, budget],
        ).fetchall()
        if not rows:
            continue
        conn.executemany(
            # A minute can be split between two calls (the row budget, or a late reading): merge
            # into the existing row, weighting the means by their counts.
            """INSERT INTO downsampled (series, minute_ms, mean, min, max, count)
               VALUES (?, ?, ?, ?, ?, ?)
               ON CONFLICT (series, minute_ms) DO UPDATE SET
                 mean = (mean * count + excluded.mean * excluded.count) / (count + excluded.count),
                 min = MIN(min, excluded.min),
                 max = MAX(max, excluded.max),
                 count = count + excluded.count""",
            _minutes(series, rows),
        )
        # The selected rows are exactly those of this series from the first to the last selected.
        conn.execute(
            "DELETE FROM readings WHERE series = ? AND ts_ms BETWEEN ? AND ?",
            [series, rows[0][0], rows[-1][0]],
        )
        budget -= len(rows)
    for series in series_ids:
        if budget == 0:
            break
        minutes = conn.execute(
            "SELECT minute_ms FROM downsampled WHERE series = ? AND minute_ms < ?"
            " ORDER BY minute_ms LIMIT ?",
            [series, downsampled_cutoff, budget],
        ).fetchall()
        if minutes:
            conn.execute(
                "DELETE FROM downsampled WHERE series = ? AND minute_ms <= ?",
                [series, minutes[-1][0]],
            )
            budget -= len(minutes)
    return max_rows - budget


def _minutes(
    series: int, rows: list[tuple[int, float]]
) -> list[tuple[int, int, float, float, float, int]]:
    """(series, minute start, mean, min, max, count) of (ts_ms, value) rows."""
    groups: dict[int, list[float]] = {}
    for ts_ms, value in rows:
        groups.setdefault(ts_ms - ts_ms % MINUTE_MS, []).append(value)
    return [(series, m, sum(v) / len(v), min(v), max(v), len(v)) for m, v in groups.items()]
