"""Data-quality report: gaps, outliers and effectiveness on synthetic series with known faults."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from homeflex.edge.devices.capabilities import Quantity, Reading
from homeflex.edge.quality import Gap, QualityLimits, analyse, quality_report
from homeflex.edge.store import Store

Q = Quantity
T = 1_700_000_100.0
STEP = 10.0
N = 360  # one hour of 10-s polls


def load(i: int) -> float:
    """A household load: noisy base, a 2 kW kettle for 3 minutes, a 7 kW cooker for 10 minutes."""
    watts = 300.0 + 40.0 * math.sin(i * 1.7)
    if 60 <= i < 78:
        watts += 2000.0
    if 150 <= i < 210:
        watts += 7000.0
    return watts


def meter_series(
    skip: range = range(0),
    spike: int | None = None,
    jump: int | None = None,
    backwards: int | None = None,
    bad_voltage: int | None = None,
) -> list[Reading]:
    readings = []
    wh = 5000.0
    for i in range(N):
        ts = T + STEP * i
        wh += load(i) * STEP / 3600
        if i == jump:
            wh += 300.0  # 300 Wh in 10 s would be 108 kW
        counter = wh - 5.0 if i == backwards else wh
        power = 9000.0 if i == spike else load(i)
        volts = 999.0 if i == bad_voltage else 230.0
        if i in skip:
            continue
        readings += [
            Reading("meter", Q.POWER_W, ts, power),
            Reading("meter", Q.IMPORT_WH, ts, counter),
            Reading("meter", Q.VOLTAGE_L1_V, ts, volts),
        ]
    return readings


def test_clean_series_is_fully_effective() -> None:
    report = analyse("meter", meter_series(), T, T + N * STEP, STEP)
    assert (report.expected, report.received, report.valid, report.readings) == (N, N, N, 3 * N)
    assert report.effectiveness_pct == 100.0
    assert report.gaps == [] and report.outliers == []


def test_injected_faults_are_found_where_they_are() -> None:
    readings = meter_series(
        skip=range(100, 130), spike=250, jump=280, backwards=300, bad_voltage=40
    )
    report = analyse("meter", readings, T, T + N * STEP, STEP)
    assert report.gaps == [Gap(T + 99 * STEP, T + 130 * STEP, 31 * STEP)]
    assert [(o.ts, o.quantity, o.reason) for o in report.outliers] == [
        (T + 40 * STEP, Q.VOLTAGE_L1_V, "out_of_range"),
        (T + 250 * STEP, Q.POWER_W, "power_spike"),
        (T + 280 * STEP, Q.IMPORT_WH, "counter_jump"),
        (T + 300 * STEP, Q.IMPORT_WH, "counter_backwards"),
    ]
    assert (report.expected, report.received, report.valid) == (N, N - 30, N - 34)
    assert report.effectiveness_pct == pytest.approx(100.0 * (N - 34) / N)


def test_gaps_at_the_edges_of_the_range() -> None:
    readings = meter_series(skip=range(0, 10))
    report = analyse("meter", readings, T, T + (N + 5) * STEP, STEP)
    assert report.gaps == [
        Gap(T, T + 10 * STEP, 10 * STEP),
        Gap(T + (N - 1) * STEP, T + (N + 5) * STEP, 6 * STEP),
    ]
    empty = analyse("meter", [], T, T + 60, STEP)
    assert (empty.expected, empty.received, empty.effectiveness_pct) == (6, 0, 0.0)
    assert empty.gaps == [Gap(T, T + 60, 60)]


def test_a_gap_needs_more_than_k_intervals() -> None:
    # One missed poll leaves 20 s between readings: not a gap at k = 2, a gap at k = 1.5.
    readings = meter_series(skip=range(50, 51))
    assert analyse("meter", readings, T, T + N * STEP, STEP).gaps == []
    strict = QualityLimits(gap_factor=1.5)
    assert analyse("meter", readings, T, T + N * STEP, STEP, strict).gaps == [
        Gap(T + 49 * STEP, T + 51 * STEP, 20.0)
    ]


def test_json_and_text() -> None:
    report = analyse("meter", meter_series(skip=range(100, 130), spike=250), T, T + 3600, STEP)
    data = json.loads(report.to_json())
    assert data["gaps"] == [{"start": T + 990, "end": T + 1300, "duration_s": 310.0}]
    assert data["outliers"][0]["quantity"] == "power_w"
    assert data["outliers"][0]["reason"] == "power_spike"
    text = report.render()
    assert "expected 360, received 330, valid 329" in text
    assert "2023-11-14T22:31:30Z to 2023-11-14T22:36:40Z (310 s)" in text
    assert "power_w = 9000: power_spike" in text


def test_report_from_the_store_includes_ingest_events(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "store.db")
    readings = meter_series(backwards=300)
    store.write(readings)
    report = quality_report(store, "meter", T, T + N * STEP, STEP)
    assert report.received == N and report.valid == N - 1
    [event] = report.events
    assert (event.ts, event.kind) == (T + 300 * STEP, "counter_reset")
    assert "counter_reset" in report.render()
    store.close()
