"""The history's data directory, one layout for the ingest, its workers and the commands.

- `history.db`: pseudonymous; can be shared with the aggregator's views and analysts.
- `keys/`: the pseudonym and integrity keys and `identities.db`, mode 0600: the settlement's and
  the operator's only (cloud/history/keys.py).
- `security.log`: the ingest's refusals; `integrity.log`: the integrity check's alarms. Each log
  has one writer process, as its hash chain needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class HistoryDir:
    root: Path

    @property
    def db(self) -> Path:
        return self.root / "history.db"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def identities(self) -> Path:
        return self.keys / "identities.db"

    @property
    def security_log(self) -> Path:
        return self.root / "security.log"

    @property
    def integrity_log(self) -> Path:
        return self.root / "integrity.log"
