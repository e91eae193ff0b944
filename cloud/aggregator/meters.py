"""The homes' metered PTU energies for the aggregator's settlement, from the history service.

The ingest (cloud/history/) keeps each gateway's PTU energies per device under a pseudonymous
id: the keyed hash of the box name (the home's agent name). The settlement pays real customers,
so it is one of the two users of the pseudonym key (cloud/history/keys.py); it turns a home's
name into its id and reads that box's meter device.

A PTU's energy counts only when it is final: the box aggregates the PTU in progress and sends
it again, a newer item replacing the older, until the PTU is over. So PTU t of a home counts
once the history holds a meter item of a later PTU from that box: the box has moved on, and
the settlement (recorded once) never pays on a PTU half measured. An item the box marked
`estimated` (interpolated over a gap between counter readings) counts: the counters bound it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Protocol

from homeflex.clock import PTU_SECONDS
from homeflex.cloud.history.keys import HistoryKeys
from homeflex.cloud.history.layout import HistoryDir
from homeflex.cloud.history.sqlite import SqliteHistory
from homeflex.cloud.history.store import HistoryStore

PTU_MS = PTU_SECONDS * 1000
DAY_MS = 86_400_000
PTUS = 96


def day_start(day: date) -> float:
    """The day's first instant (Unix seconds): PTU 0 begins here (the agents' days are UTC)."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


class Meters(Protocol):
    def day_kwh(self, homes: Iterable[str], day: date) -> dict[str, dict[int, float]]:
        """Per home, its final metered net import (kWh, negative = export) per PTU of `day`;
        a home without any is left out."""
        ...


class HistoryMeters:
    """Meters read from a history store; `pid` turns a home's name into its history id."""

    def __init__(self, store: HistoryStore, pid: Callable[[str], str], device: str) -> None:
        self.store = store
        self.pid = pid
        self.device = device

    @classmethod
    def open(cls, data_dir: Path, device: str = "meter") -> HistoryMeters:
        """The history in the ingest's data directory `data_dir` (cloud/history/layout.py).
        FileNotFoundError naming the file when the ingest has not made it: new keys would give
        every home another id, so none is created here."""
        data = HistoryDir(data_dir)
        for path in (data.db, data.keys / "pseudonym.key", data.keys / "integrity.key"):
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path}: no such file; `history:` must be the history ingest's data "
                    "directory, and the ingest must have run"
                )
        keys = HistoryKeys.load(data.keys)
        return cls(SqliteHistory(data.db, keys.integrity), keys.pid, device)

    def close(self) -> None:
        self.store.close()

    def day_kwh(self, homes: Iterable[str], day: date) -> dict[str, dict[int, float]]:
        start_ms = round(day_start(day) * 1000)
        out = {}
        for home in homes:
            # the next day too: its first item shows the day's last PTU final
            items = [
                p
                for p in self.store.ptus(self.pid(home), start_ms, start_ms + 2 * DAY_MS)
                if p.device == self.device
            ]
            if not items:
                continue
            last = max(p.ptu_start_ms for p in items)
            kwh = {}
            for p in items:
                t, off = divmod(p.ptu_start_ms - start_ms, PTU_MS)
                if off == 0 and t < PTUS and p.ptu_start_ms < last:
                    kwh[t] = (p.import_wh - p.export_wh) / 1000
            if kwh:
                out[home] = kwh
        return out


class HistoryDirMeters:
    """`HistoryMeters.open(data_dir)` on first use: the platform may start before the ingest has
    made the history; until it has, each use fails with FileNotFoundError (the aggregator logs
    it and tries again later)."""

    def __init__(self, data_dir: Path, device: str = "meter") -> None:
        self.data_dir = data_dir
        self.device = device
        self._meters: HistoryMeters | None = None

    def day_kwh(self, homes: Iterable[str], day: date) -> dict[str, dict[int, float]]:
        if self._meters is None:
            self._meters = HistoryMeters.open(self.data_dir, self.device)
        return self._meters.day_kwh(homes, day)
