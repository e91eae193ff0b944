"""The history service's secrets and the one place box names and pseudonyms meet.

- `pseudonym.key`: the key of the keyed hash that turns a box name into the pseudonymous id the
  history is kept under. Without it nobody can link a history id to a box, not even by trying
  every known box name.
- `integrity.key`: the key of the MAC every history row carries (cloud/history/sqlite.py).
- `identities.db`: pseudonym → box name, written by the ingest as boxes appear. It lives in its
  own file, mode 0600, apart from the history: analysts and the aggregator's views get the
  history file; only the settlement (which pays a real customer) and the operator get this one.

All three are created on first use with mode 0600 and never overwritten.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from homeflex.pki.keys import write_private

KEY_BYTES = 32


def _load_or_create(path: Path) -> bytes:
    if not path.exists():
        # another process may create it first: then use theirs
        with contextlib.suppress(FileExistsError):
            write_private(path, secrets.token_bytes(KEY_BYTES))
    data = path.read_bytes()
    if len(data) != KEY_BYTES:
        raise ValueError(f"{path}: {len(data)} bytes, a history key is {KEY_BYTES}; restore it")
    return data


@dataclass(frozen=True)
class HistoryKeys:
    pseudonym: bytes
    integrity: bytes

    @classmethod
    def load(cls, directory: Path) -> HistoryKeys:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        return cls(
            _load_or_create(directory / "pseudonym.key"),
            _load_or_create(directory / "integrity.key"),
        )

    def pid(self, box: str) -> str:
        """The pseudonymous id of `box` in the history: 'h' and 128 bits of HMAC-SHA256."""
        return "h" + hmac.new(self.pseudonym, box.encode(), hashlib.sha256).hexdigest()[:32]


class Identities:
    """pseudonym → box name, in its own 0600 file."""

    def __init__(self, path: Path) -> None:
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
            os.close(fd)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS identities (pid TEXT PRIMARY KEY, box TEXT NOT NULL)"
        )
        self._db.commit()
        self._known: set[str] = {pid for (pid,) in self._db.execute("SELECT pid FROM identities")}

    def remember(self, pid: str, box: str) -> None:
        if pid in self._known:
            return
        with self._db:
            self._db.execute("INSERT OR IGNORE INTO identities VALUES (?, ?)", (pid, box))
        self._known.add(pid)

    def box(self, pid: str) -> str | None:
        row = self._db.execute("SELECT box FROM identities WHERE pid = ?", (pid,)).fetchone()
        return None if row is None else str(row[0])

    def close(self) -> None:
        self._db.close()
