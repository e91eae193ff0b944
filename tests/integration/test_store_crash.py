"""SIGKILL the store's writer at random moments: no acknowledged batch is lost, no batch is half
stored, and the PTU aggregates equal a recomputation from the raw readings."""

from __future__ import annotations

import bisect
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from homeflex.edge.devices.capabilities import Quantity
from homeflex.edge.store import Store
from homeflex.edge.store.ptu import PTU_MS

sys.path.insert(0, str(Path(__file__).parent))
import store_writer as writer

KILLS = 24
PTU_S = PTU_MS / 1000


def run_and_kill(db: Path, rng: random.Random) -> list[int]:
    """Start the writer, SIGKILL it at a random moment, return the batch numbers it acknowledged."""
    proc = subprocess.Popen(
        [sys.executable, writer.__file__, str(db)], stdout=subprocess.PIPE, text=True
    )
    acked: list[int] = []
    first = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            acked.append(int(line))
            first.set()

    reader = threading.Thread(target=read)
    reader.start()
    try:
        # Mostly kill mid-ingest; sometimes during start-up (opening, migrating, resuming).
        if rng.random() < 0.2:
            time.sleep(rng.uniform(0.0, 0.4))
        else:
            assert first.wait(20), "the writer acknowledged nothing within 20 s"
            time.sleep(rng.uniform(0.0, 0.25))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        reader.join()
    return acked


def interpolate(points: list[tuple[float, float]], t: float) -> float:
    """The counter at `t`, linear between readings, constant outside them."""
    times = [p[0] for p in points]
    if t <= times[0]:
        return points[0][1]
    if t >= times[-1]:
        return points[-1][1]
    i = bisect.bisect_right(times, t)
    (t0, v0), (t1, v1) = points[i - 1], points[i]
    return v0 + (v1 - v0) * (t - t0) / (t1 - t0)


@pytest.mark.slow
def test_store_survives_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    acked: list[int] = []
    for _ in range(KILLS):
        acked += run_and_kill(db, rng)
    assert acked, f"seed {seed}: no batch was ever acknowledged"

    raw = sqlite3.connect(db)
    assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)], f"seed {seed}"
    raw.close()

    store = Store.open(db, read_only=True)
    per_batch = len(writer.batch(0))
    stored = sum(
        len(store.readings(d, q, 0, 2e9))
        for d in writer.DEVICES
        for q in (Quantity.IMPORT_WH, Quantity.EXPORT_WH, Quantity.POWER_W)
    )
    # All or nothing: whole batches only, and at least every acknowledged one.
    assert stored % per_batch == 0, f"seed {seed}: {stored} readings is not whole batches"
    batches = stored // per_batch
    assert batches > max(acked), f"seed {seed}: acknowledged batch {max(acked)} is missing"
    steps = batches * writer.STEPS_PER_BATCH
    print(f"seed {seed}: {KILLS} kills, {len(set(acked))} acknowledged, {batches} batches stored")

    for d, name in enumerate(writer.DEVICES):
        imports = [(r.ts, r.value) for r in store.readings(name, Quantity.IMPORT_WH, 0, 2e9)]
        exports = [(r.ts, r.value) for r in store.readings(name, Quantity.EXPORT_WH, 0, 2e9)]
        powers = store.readings(name, Quantity.POWER_W, 0, 2e9)
        assert imports == [
            (writer.T0 + writer.STEP_S * s, writer.import_wh(d, s)) for s in range(steps)
        ]
        assert [p.value for p in powers] == [writer.power_w(d, s) for s in range(steps)]

        rows = store.ptu_energy(name, 0, 2e9)
        first_ptu = imports[0][0] - imports[0][0] % PTU_S
        expected_ptus = [p for p in range(int(first_ptu), int(imports[-1][0]), int(PTU_S))]
        assert [r.ptu_start for r in rows][: len(expected_ptus)] == expected_ptus
        for row in rows:
            end = row.ptu_start + PTU_S
            assert row.import_wh == pytest.approx(
                interpolate(imports, end) - interpolate(imports, row.ptu_start), rel=1e-9
            ), f"seed {seed}: {name} PTU {row.ptu_start} import"
            assert row.export_wh == pytest.approx(
                interpolate(exports, end) - interpolate(exports, row.ptu_start), rel=1e-9
            ), f"seed {seed}: {name} PTU {row.ptu_start} export"
            in_ptu = [p.value for p in powers if row.ptu_start <= p.ts < end]
            assert row.mean_power_w == pytest.approx(sum(in_ptu) / len(in_ptu), rel=1e-12)
            assert not row.estimated
        total = sum(r.import_wh for r in rows)
        assert total == pytest.approx(imports[-1][1] - imports[0][1], rel=1e-12)
    store.close()
