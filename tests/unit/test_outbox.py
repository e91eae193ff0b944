"""The store's outbox: every new reading queued once, PTUs queued as they close and again when
changed after closing, sequence numbers never reused, thinning past the bound keeps PTUs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from homeflex.edge.devices.capabilities import Quantity, Reading
from homeflex.edge.store import Store

Q = Quantity
T = 1_700_000_100.0  # a PTU boundary
PTU = 900.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "store.db")
    s.enable_outbox()
    yield s
    s.close()


def meter(ts: float, wh: float, w: float = 1000.0) -> list[Reading]:
    return [Reading("meter", Q.IMPORT_WH, ts, wh), Reading("meter", Q.POWER_W, ts, w)]


def test_each_new_reading_is_queued_once_with_increasing_seqs(store: Store) -> None:
    store.write(meter(T + 10, 100.0))
    store.write(meter(T + 10, 100.0))  # redelivered: already stored, not queued again
    store.write(meter(T + 20, 101.0))
    readings, ptus = store.outbox_take(100)
    assert [(r.seq, r.quantity, r.ts_ms, r.value) for r in readings] == [
        (1, "import_wh", 1_700_000_110_000, 100.0),
        (2, "power_w", 1_700_000_110_000, 1000.0),
        (3, "import_wh", 1_700_000_120_000, 101.0),
        (4, "power_w", 1_700_000_120_000, 1000.0),
    ]
    assert ptus == []  # the PTU is still running


def test_a_ptu_is_queued_when_it_closes_with_its_energy(store: Store) -> None:
    store.write(meter(T, 100.0))
    store.write(meter(T + 450, 150.0, 400.0))
    store.write(meter(T + PTU + 90, 260.0, 600.0))  # crosses the PTU boundary
    _, ptus = store.outbox_take(100)
    assert len(ptus) == 1
    p = ptus[0]
    assert p.device == "meter" and p.ptu_start_ms == round(T * 1000)
    # 150 Wh in the PTU's first half, then 110 Wh over 990 s of which 450 s in this PTU
    assert p.import_wh == pytest.approx(50.0 + 110.0 * 450 / 540)
    assert p.mean_power_w == pytest.approx((1000.0 + 400.0) / 2)
    assert not p.estimated


def test_a_late_change_to_a_closed_ptu_queues_it_again(store: Store) -> None:
    store.write([Reading("meter", Q.IMPORT_WH, T, 100.0)])
    store.write([Reading("meter", Q.IMPORT_WH, T + PTU + 60, 160.0)])  # closes the first PTU
    store.write([Reading("meter", Q.EXPORT_WH, T, 5.0)])
    store.write([Reading("meter", Q.EXPORT_WH, T + PTU + 60, 20.0)])  # late: its export share
    _, ptus = store.outbox_take(100)
    first = [p for p in ptus if p.ptu_start_ms == round(T * 1000)]
    assert len(first) == 2 and first[0].seq < first[1].seq
    # both carry the PTU's values as they are now (the later one is what the cloud keeps)
    assert first[1].export_wh == pytest.approx(15.0 * 900 / 960)
    assert first[1].import_wh == pytest.approx(60.0 * 900 / 960)


def test_acknowledged_items_leave_and_seqs_are_never_reused(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = Store.open(path)
    store.enable_outbox()
    store.write(meter(T + 10, 100.0))
    readings, _ = store.outbox_take(100)
    assert store.outbox_delete([r.seq for r in readings]) == 2
    assert store.outbox_size() == 0
    store.close()
    store = Store.open(path)  # a restart (the trigger is the connection's: enable again)
    store.enable_outbox()
    store.write(meter(T + 20, 101.0))
    readings, _ = store.outbox_take(100)
    assert [r.seq for r in readings] == [3, 4]  # not 1 and 2 again: the cloud has those
    store.close()


def test_take_ranges_and_skips_in_flight_spans(store: Store) -> None:
    for i in range(10):
        store.write([Reading("meter", Q.POWER_W, T + i, float(i))])
    readings, _ = store.outbox_take(3, after=2, skip=[(4, 6)])
    assert [r.seq for r in readings] == [3, 7, 8]
    readings, _ = store.outbox_take(100, after=0, upto=4)
    assert [r.seq for r in readings] == [1, 2, 3, 4]


def test_thinning_keeps_one_reading_a_minute_and_every_ptu(store: Store) -> None:
    for s in range(0, 2 * int(PTU), 10):  # two PTUs of readings every 10 s
        store.write(meter(T + s, 100.0 + s / 10))
    store.write(meter(T + 2 * PTU, 280.0))
    before = store.outbox_size()
    ptus_before = store.outbox_take(10_000)[1]
    assert len(ptus_before) == 2
    removed = store.outbox_thin(250)  # the first step (one a minute) is enough for this
    readings, ptus = store.outbox_take(10_000)
    assert removed > 0 and store.outbox_size() == before - removed
    assert ptus == ptus_before  # never thinned
    assert store.outbox_size() <= 250
    # the oldest half of the raw rows is the first PTU's: thinned to a reading a minute
    old = [r for r in readings if r.ts_ms < (T + PTU - 60) * 1000]
    per_minute: dict[tuple[str, int], int] = {}
    for r in old:
        key = (r.quantity, r.ts_ms // 60_000)
        per_minute[key] = per_minute.get(key, 0) + 1
    assert per_minute and max(per_minute.values()) == 1
    # the last reading of each minute is the one kept: the counter value at that instant
    # (T is on a minute; readings every 10 s: the last of each minute is at second 50)
    kept = {r.ts_ms // 1000 % 60 for r in old if r.quantity == "import_wh"}
    assert kept == {50}


def test_without_telemetry_nothing_is_queued(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "plain.db")
    store.write(meter(T, 1.0) + meter(T + PTU + 1, 2.0))
    assert store.outbox_size() == 0
    store.close()
