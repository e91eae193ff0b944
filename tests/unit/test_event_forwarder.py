"""The forwarder's batches: oldest first, none over its count or byte budget, nothing lost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from homeflex.edge import event_forwarder
from homeflex.edge.event_forwarder import batches
from homeflex.security import SecurityLog, read_events


def test_batches_keep_order_and_stay_under_both_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = SecurityLog(tmp_path / "box.log")
    for n in range(7):
        log.record("denied", "box-9@x", "x" * (3000 if n == 4 else 10))
    monkeypatch.setattr(event_forwarder, "BATCH", 3)
    monkeypatch.setattr(event_forwarder, "BATCH_BYTES", 2000)
    sent = list(batches(read_events(log.path)))
    assert [[e["seq"] for e in b] for b in sent] == [[1, 2, 3], [4], [5], [6, 7]]
    # event 5 alone is over the byte budget: it still goes, on its own
    assert all(len(json.dumps(b).encode()) <= 2000 for i, b in enumerate(sent) if i != 2)
