"""The store: raw readings, PTU aggregates, duplicates, counter resets, schema versions, errors."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from homeflex.edge.devices.capabilities import Quantity, Reading
from homeflex.edge.store import PtuEnergy, Store, StoreError
from homeflex.edge.store.ptu import PTU_MS, apportion
from homeflex.edge.store.schema import LATEST

Q = Quantity
T = 1_700_000_100.0  # a PTU boundary (1_700_000_100 = 1_888_889 × 900)
PTU = 900.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "store.db")
    yield s
    s.close()


def imp(ts: float, wh: float, device: str = "meter") -> Reading:
    return Reading(device, Q.IMPORT_WH, ts, wh)


def energies(store: Store, device: str = "meter") -> list[tuple[float, float, float, bool]]:
    return [
        (p.ptu_start, p.import_wh, p.export_wh, p.estimated)
        for p in store.ptu_energy(device, 0, 2e9)
    ]


def test_readings_on_boundaries_give_exact_ptu_energies(store: Store) -> None:
    # 10-s steps over three PTUs; counter grows 1 Wh per step in PTU 0, 2 in PTU 1, 3 in PTU 2.
    readings, wh = [imp(T, 1000.0)], 1000.0
    for step in range(1, 271):
        wh += (step - 1) // 90 + 1
        readings.append(imp(T + 10 * step, wh))
    assert store.write(readings) == 271
    assert energies(store) == [
        (T, 90.0, 0.0, False),
        (T + PTU, 180.0, 0.0, False),
        (T + 2 * PTU, 270.0, 0.0, False),
    ]


def test_interval_across_a_boundary_is_apportioned_by_time(store: Store) -> None:
    store.write([imp(T - 300, 0.0), imp(T + 600, 900.0)])  # 900 Wh over 900 s, 300 s before T
    [before, after] = store.ptu_energy("meter", 0, 2e9)
    assert before.ptu_start == T - PTU and after.ptu_start == T
    assert before.import_wh == pytest.approx(300.0, abs=1e-9)
    assert after.import_wh == pytest.approx(600.0, abs=1e-9)
    assert not before.estimated and not after.estimated


def test_duplicates_are_stored_and_counted_once(store: Store) -> None:
    batch = [imp(T, 0.0), imp(T + 10, 5.0), imp(T + 20, 9.0)]
    assert store.write(batch) == 3
    assert store.write(batch) == 0
    # A re-delivery mixed with one new reading, and a duplicate inside the batch itself.
    assert store.write([imp(T + 20, 9.0), imp(T + 30, 12.0), imp(T + 30, 12.0)]) == 1
    assert energies(store) == [(T, 12.0, 0.0, False)]
    assert len(store.readings("meter", Q.IMPORT_WH, 0, 2e9)) == 4


def test_import_and_export_are_kept_apart(store: Store) -> None:
    store.write(
        [
            imp(T, 100.0),
            Reading("meter", Q.EXPORT_WH, T, 50.0),
            imp(T + 60, 103.0),
            Reading("meter", Q.EXPORT_WH, T + 60, 57.5),
        ]
    )
    assert energies(store) == [(T, 3.0, 7.5, False)]


def test_counter_reset_is_not_counted_and_is_recorded(store: Store) -> None:
    store.write([imp(T, 1000.0), imp(T + 10, 1100.0), imp(T + 20, 50.0), imp(T + 30, 80.0)])
    assert energies(store) == [(T, 130.0, 0.0, True)]  # the reset interval's energy is unknown
    [event] = store.events("meter", 0, 2e9)
    assert (event.quantity, event.ts, event.kind, event.value) == (
        Q.IMPORT_WH,
        T + 20,
        "counter_reset",
        50.0,
    )
    assert "1100" in event.detail


def test_long_interval_is_apportioned_and_flagged_estimated(store: Store) -> None:
    # Offline from T+800 to T+2600: 1800 s > 1 PTU, 1800 Wh spread at 1 Wh/s.
    store.write([imp(T + 700, 0.0), imp(T + 800, 100.0), imp(T + 2600, 1900.0)])
    store.write([imp(T + 2700, 2000.0), imp(T + 2710, 2010.0)])  # polling again
    assert energies(store) == [
        (T, pytest.approx(200.0), 0.0, True),
        (T + PTU, pytest.approx(900.0), 0.0, True),
        (T + 2 * PTU, pytest.approx(900.0), 0.0, True),
        (T + 3 * PTU, 10.0, 0.0, False),
    ]


def test_late_reading_is_stored_raw_but_leaves_aggregates(store: Store) -> None:
    store.write([imp(T, 0.0), imp(T + 20, 20.0)])
    assert store.write([imp(T + 10, 15.0)]) == 1
    assert [r.value for r in store.readings("meter", Q.IMPORT_WH, 0, 2e9)] == [0.0, 15.0, 20.0]
    assert energies(store) == [(T, 20.0, 0.0, False)]


def test_mean_power_per_ptu(store: Store) -> None:
    store.write([Reading("meter", Q.POWER_W, T + 10 * i, 100.0 * i) for i in range(3)])
    store.write([Reading("meter", Q.POWER_W, T + PTU, 7.0), Reading("meter", Q.POWER_W, T, 9e9)])
    assert [(p.ptu_start, p.mean_power_w) for p in store.ptu_energy("meter", 0, 2e9)] == [
        (T, 100.0),  # the re-delivered reading at T (another value) is ignored
        (T + PTU, 7.0),
    ]


def test_queries(store: Store) -> None:
    store.write(
        [
            imp(T, 1.0, "b"),
            imp(T + 10, 2.0, "b"),
            Reading("b", Q.POWER_W, T + 5, 300.0),
            imp(T, 7.0, "a"),
        ]
    )
    assert store.devices() == ["a", "b"]
    assert store.latest("b") == [imp(T + 10, 2.0, "b"), Reading("b", Q.POWER_W, T + 5, 300.0)]
    assert store.latest() == [imp(T, 7.0, "a"), *store.latest("b")]
    assert store.readings("b", Q.IMPORT_WH, T, T + 10) == [imp(T, 1.0, "b")]  # end excluded
    assert store.readings("nobody", Q.IMPORT_WH, 0, 2e9) == []
    assert store.ptu_energy("b", T, T + PTU) == [
        PtuEnergy("b", T, 1.0, 0.0, False, 300.0),
    ]
    assert store.ptu_energy("b", T + PTU, T + 2 * PTU) == []


def test_failed_batch_leaves_nothing(store: Store) -> None:
    bad = Reading(None, Q.IMPORT_WH, T + 10, 2.0)  # type: ignore[arg-type]
    with pytest.raises(sqlite3.IntegrityError):
        store.write([imp(T, 1.0, "new"), bad])
    assert store.devices() == []
    assert store.write([imp(T, 1.0, "new"), imp(T + 10, 2.0, "new")]) == 2
    assert energies(store, "new") == [(T, 1.0, 0.0, False)]


def test_new_file_is_created_at_latest_schema_and_reopens_with_its_data(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = Store.open(path)
    store.write([imp(T, 1.0), imp(T + 10, 3.0)])
    store.close()
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone() == (LATEST,)
    assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    raw.close()
    store = Store.open(path)  # re-open: no migration runs again, the data is all there
    assert energies(store) == [(T, 2.0, 0.0, False)]
    store.write([imp(T + 20, 4.0)])  # and the aggregation state carried over
    assert energies(store) == [(T, 3.0, 0.0, False)]
    store.close()


def test_reader_sees_what_the_writer_commits(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    writer = Store.open(path)
    reader = Store.open(path, read_only=True)
    writer.write([imp(T, 1.0, "late-comer")])
    assert reader.latest() == [imp(T, 1.0, "late-comer")]
    with pytest.raises(sqlite3.OperationalError):
        reader.write([imp(T + 10, 2.0)])
    reader.close()
    writer.close()


def test_garbage_file_is_a_clear_error_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    garbage = b"this is not a database\n" * 300
    path.write_bytes(garbage)
    with pytest.raises(StoreError, match=r"store\.db: cannot be used .* left untouched"):
        Store.open(path)
    assert path.read_bytes() == garbage


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    Store.open(path).close()
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {LATEST + 1}")
    raw.commit()
    raw.close()
    with pytest.raises(StoreError, match=f"schema version {LATEST + 1} .* newer"):
        Store.open(path)


def test_foreign_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE recipes (name TEXT)")
    raw.commit()
    raw.close()
    with pytest.raises(StoreError, match=r"other\.db: an SQLite file with other tables"):
        Store.open(path)


def test_missing_directory_or_file(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist; create it"):
        Store.open(tmp_path / "nowhere" / "store.db")
    with pytest.raises(StoreError, match="no store file here"):
        Store.open(tmp_path / "store.db", read_only=True)


@given(
    t0=st.integers(0, 10 * PTU_MS),
    span=st.integers(1, 5 * PTU_MS),
    delta=st.floats(0, 1e7, allow_nan=False),
)
def test_apportioned_shares_sum_to_the_delta(t0: int, span: int, delta: float) -> None:
    shares = apportion(t0, t0 + span, delta)
    assert math.isclose(sum(s for _, s in shares), delta, rel_tol=1e-12, abs_tol=1e-9)
    assert all(s >= 0 for _, s in shares)
    starts = [p for p, _ in shares]
    assert starts == list(range(starts[0], starts[-1] + 1, PTU_MS))
    assert starts[0] <= t0 < starts[0] + PTU_MS and starts[-1] < t0 + span <= starts[-1] + PTU_MS


@settings(max_examples=40, deadline=None)
@given(steps=st.lists(st.tuples(st.integers(1, 3000), st.floats(0, 500)), max_size=40))
def test_ptu_import_sums_to_counter_delta(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[int, float]]
) -> None:
    store = Store.open(tmp_path_factory.mktemp("h") / "store.db")
    ts, wh = T + 123.4, 1000.0
    readings = [imp(ts, wh)]
    for dt, dwh in steps:
        ts, wh = ts + dt, wh + dwh
        readings.append(imp(ts, wh))
    # Two batches: the second is late except possibly for its last reading; either way the
    # aggregates end at the last reading, without gaps or overlaps between intervals.
    store.write(readings[::2])
    store.write(readings[1::2])
    total = sum(p.import_wh for p in store.ptu_energy("meter", 0, 2e9))
    assert math.isclose(total, readings[-1].value - 1000.0, rel_tol=1e-9, abs_tol=1e-6)
    store.close()


def test_empty_existing_file_is_initialised(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    path.touch()  # e.g. created by an installer script
    store = Store.open(path)
    assert store.write([imp(T, 1.0)]) == 1
    store.close()
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone() == (LATEST,)
    raw.close()
