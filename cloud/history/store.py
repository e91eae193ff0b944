"""The historical data service's storage, behind one small interface.

`HistoryStore` is all the ingest, the report and the settlement use. `SqliteHistory`
(cloud/history/sqlite.py) is the embedded default; a fleet that outgrows one machine gets
another implementation of the same methods (see the README's design notes), not a rewrite.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from homeflex.telemetry import Batch, PtuItem


@dataclass(frozen=True)
class Stored:
    """What one batch added: items new to the history, and items it already had."""

    new: int
    duplicates: int


@dataclass(frozen=True)
class HistReading:
    device: str
    quantity: str
    ts_ms: int
    value: float
    latency_ms: int


@dataclass(frozen=True)
class Tampering:
    """A row, or a box's totals, that no longer match their MAC: changed behind our back."""

    pid: str
    table: str
    key: str
    detail: str


class ReplayedBatch(Exception):
    """The batch id was stored before: a replay (or the broker delivering it twice)."""


class HistoryStore(Protocol):
    def add(self, pid: str, batch: Batch, received: float) -> Stored:
        """Store a verified batch; ReplayedBatch when its id was seen. Items already stored
        (same pid and seq) are counted as duplicates and left as they are; a PTU item replaces
        the stored one of the same PTU only when its seq is higher."""
        ...

    def add_many(self, items: Sequence[tuple[str, Batch, float]]) -> list[Stored | ReplayedBatch]:
        """`add` for several batches in one transaction; a replayed one is answered with the
        ReplayedBatch instead of raising."""
        ...

    def boxes(self) -> list[str]: ...

    def poll_s(self, pid: str) -> dict[str, float]: ...

    def readings(self, pid: str, start_ms: int, end_ms: int) -> list[HistReading]: ...

    def ptus(self, pid: str, start_ms: int, end_ms: int) -> list[PtuItem]: ...

    def counts(self, pid: str) -> dict[str, int]:
        """readings, ptus, batches, duplicates, replays of one box."""
        ...

    def count_replay(self, pid: str) -> None: ...

    def check_integrity(self) -> list[Tampering]: ...

    def apply_retention(self, now: float, raw_days: float, ptu_days: float) -> int: ...

    def close(self) -> None: ...
