"""Retention: raw readings become 1-minute mean/min/max rows, then go; PTU energies stay."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from homeflex.edge.config import RetentionConfig
from homeflex.edge.devices.capabilities import Quantity, Reading
from homeflex.edge.store import MinuteStats, Store

Q = Quantity
T = 1_700_000_100.0  # a PTU boundary and a minute boundary
DAY = 86_400.0
RETENTION = RetentionConfig(raw_days=2, downsampled_days=10)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "store.db")
    # Power every 10 s for 3 minutes: 0, 10, ..., 170 W; counter +1 Wh per step.
    s.write([Reading("m", Q.POWER_W, T + 10 * i, 10.0 * i) for i in range(18)])
    s.write([Reading("m", Q.IMPORT_WH, T + 10 * i, 100.0 + i) for i in range(18)])
    yield s
    s.close()


EXPECTED_POWER = [
    MinuteStats("m", Q.POWER_W, T, 25.0, 0.0, 50.0, 6),
    MinuteStats("m", Q.POWER_W, T + 60, 85.0, 60.0, 110.0, 6),
    MinuteStats("m", Q.POWER_W, T + 120, 145.0, 120.0, 170.0, 6),
]


def test_nothing_happens_before_raw_days(store: Store) -> None:
    assert store.apply_retention(T + 2 * DAY, RETENTION, max_rows=1000) == 0
    assert len(store.readings("m", Q.POWER_W, 0, 2e9)) == 18


def test_old_raw_readings_become_minute_stats(store: Store) -> None:
    ptus = store.ptu_energy("m", 0, 2e9)
    # Only the first 2 minutes are past raw retention (cut-off at T + 120).
    assert store.apply_retention(T + 120 + 2 * DAY, RETENTION, max_rows=1000) == 24
    assert store.downsampled("m", Q.POWER_W, 0, 2e9) == EXPECTED_POWER[:2]
    assert store.downsampled("m", Q.IMPORT_WH, T + 60, T + 61) == [
        MinuteStats("m", Q.IMPORT_WH, T + 60, 108.5, 106.0, 111.0, 6)
    ]
    assert [r.ts for r in store.readings("m", Q.POWER_W, 0, 2e9)] == [
        T + 120 + 10 * i for i in range(6)
    ]
    assert store.ptu_energy("m", 0, 2e9) == ptus


def test_small_chunks_give_the_same_stats(store: Store) -> None:
    done = []
    while n := store.apply_retention(T + 3 * DAY, RETENTION, max_rows=4):
        assert n <= 4
        done.append(n)
    assert sum(done) == 36
    assert store.downsampled("m", Q.POWER_W, 0, 2e9) == EXPECTED_POWER


def test_old_minute_stats_are_deleted_but_ptu_energies_kept(store: Store) -> None:
    ptus = store.ptu_energy("m", 0, 2e9)
    assert ptus[0].import_wh == 17.0
    assert store.apply_retention(T + 3 * DAY, RETENTION, max_rows=1000) == 36
    assert store.apply_retention(T + 60 + 10 * DAY, RETENTION, max_rows=1000) == 2
    assert store.downsampled("m", Q.POWER_W, 0, 2e9) == EXPECTED_POWER[1:]
    assert store.apply_retention(T + 11 * DAY, RETENTION, max_rows=1000) == 4
    assert store.downsampled("m", Q.POWER_W, 0, 2e9) == []
    assert store.ptu_energy("m", 0, 2e9) == ptus


def test_late_reading_into_a_downsampled_minute_is_merged(store: Store) -> None:
    store.apply_retention(T + 3 * DAY, RETENTION, max_rows=1000)
    store.write([Reading("m", Q.POWER_W, T + 5, 200.0)])  # arrives very late
    assert store.apply_retention(T + 3 * DAY, RETENTION, max_rows=1000) == 1
    [first] = store.downsampled("m", Q.POWER_W, T, T + 1)
    assert first == MinuteStats("m", Q.POWER_W, T, (150.0 + 200.0) / 7, 0.0, 200.0, 7)
