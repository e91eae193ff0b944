"""Data quality of a device's readings over a time range: gaps, outliers and the effectiveness of
the data path (valid readings received / readings expected), as a JSON-ready report."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from homeflex.edge.devices.capabilities import Quantity, Reading
from homeflex.edge.store import QualityEvent, Store

COUNTERS = (Quantity.IMPORT_WH, Quantity.EXPORT_WH)
POWERS = (Quantity.POWER_W, Quantity.POWER_L1_W, Quantity.POWER_L2_W, Quantity.POWER_L3_W)
MAD_TO_SIGMA = 1.4826  # MAD × this estimates the standard deviation of normal data


@dataclass(frozen=True)
class QualityLimits:
    """The thresholds of the checks. A spike is a power_w value further than `spike_sigmas`
    robust standard deviations (and at least `spike_floor_w`) from the median of the
    `spike_half_window` readings either side of it (a Hampel filter); a level held for more than
    `spike_half_window` readings is a change of load, not a spike."""

    gap_factor: float = 2.0
    max_power_w: float = 50_000.0
    spike_half_window: int = 3
    spike_sigmas: float = 6.0
    spike_floor_w: float = 500.0

    def physical_range(self, quantity: Quantity) -> tuple[float, float] | None:
        if quantity in POWERS or quantity == Quantity.SETPOINT_W:
            return (-self.max_power_w, self.max_power_w)
        return _RANGES.get(quantity)


_RANGES: dict[Quantity, tuple[float, float]] = {
    Quantity.VOLTAGE_L1_V: (0.0, 400.0),
    Quantity.VOLTAGE_L2_V: (0.0, 400.0),
    Quantity.VOLTAGE_L3_V: (0.0, 400.0),
    Quantity.CURRENT_A: (-250.0, 250.0),
    Quantity.IMPORT_WH: (0.0, math.inf),
    Quantity.EXPORT_WH: (0.0, math.inf),
    Quantity.SOC_PCT: (0.0, 100.0),
    Quantity.ROOM_TEMP_C: (-30.0, 60.0),
    Quantity.FLOW_TEMP_C: (-30.0, 120.0),
    Quantity.OUTDOOR_TEMP_C: (-60.0, 60.0),
    Quantity.EV_CONNECTED: (0.0, 1.0),
    Quantity.ON: (0.0, 1.0),
    Quantity.POWER_LIMIT_PCT: (0.0, 100.0),
    Quantity.SG_READY_MODE: (1.0, 4.0),
    Quantity.START_DELAY_S: (0.0, 86_400.0),
    Quantity.SETPOINT_A: (0.0, 250.0),
}


@dataclass(frozen=True)
class Gap:
    """No reading for longer than gap_factor × interval: from the reading (or range start) before
    it to the reading (or range end) after it."""

    start: float
    end: float
    duration_s: float


@dataclass(frozen=True)
class Outlier:
    """A reading that fails a check: `reason` is out_of_range, counter_backwards, counter_jump
    or power_spike."""

    ts: float
    quantity: Quantity
    value: float
    reason: str
    detail: str


@dataclass(frozen=True)
class QualityReport:
    """`expected`, `received` and `valid` count polls (distinct reading timestamps); a poll is
    valid when none of its readings is an outlier. `events` are those the store recorded at
    ingest (e.g. counter resets)."""

    device: str
    start: float
    end: float
    interval_s: float
    expected: int
    received: int
    valid: int
    readings: int
    effectiveness_pct: float
    gaps: list[Gap] = field(default_factory=list)
    outliers: list[Outlier] = field(default_factory=list)
    events: list[QualityEvent] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    def render(self) -> str:
        lines = [
            f"Data quality of {self.device}, {_iso(self.start)} to {_iso(self.end)}, "
            f"one poll expected every {self.interval_s:g} s",
            f"  expected {self.expected}, received {self.received}, valid {self.valid} "
            f"({self.readings} readings): effectiveness {self.effectiveness_pct:.1f} %",
            f"  gaps: {len(self.gaps)}",
        ]
        lines += [f"    {_iso(g.start)} to {_iso(g.end)} ({g.duration_s:g} s)" for g in self.gaps]
        lines.append(f"  outliers: {len(self.outliers)}")
        lines += [
            f"    {_iso(o.ts)} {o.quantity} = {o.value:g}: {o.reason} ({o.detail})"
            for o in self.outliers
        ]
        lines.append(f"  events recorded at ingest: {len(self.events)}")
        lines += [f"    {_iso(e.ts)} {e.quantity}: {e.kind} ({e.detail})" for e in self.events]
        return "\n".join(lines)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def quality_report(
    store: Store,
    device: str,
    start: float,
    end: float,
    interval_s: float,
    limits: QualityLimits | None = None,
) -> QualityReport:
    """The report of `device` for start <= ts < end from the store's raw readings."""
    readings = [r for q in Quantity for r in store.readings(device, q, start, end)]
    return analyse(
        device, readings, start, end, interval_s, limits, store.events(device, start, end)
    )


def analyse(
    device: str,
    readings: Sequence[Reading],
    start: float,
    end: float,
    interval_s: float,
    limits: QualityLimits | None = None,
    events: Iterable[QualityEvent] = (),
) -> QualityReport:
    """The report over `readings` (of one device; any order) for start <= ts < end."""
    if interval_s <= 0 or end <= start:
        raise ValueError(f"need interval_s > 0 and start < end, got {interval_s}, {start}..{end}")
    limits = limits or QualityLimits()
    inside = sorted((r for r in readings if start <= r.ts < end), key=lambda r: r.ts)
    by_quantity: dict[Quantity, list[Reading]] = {}
    for r in inside:
        by_quantity.setdefault(r.quantity, []).append(r)
    outliers: list[Outlier] = []
    for quantity, received in by_quantity.items():
        wrong = _out_of_range(received, limits)
        outliers += wrong
        # The other checks compare neighbours: leave impossible values out of them.
        wrong_ts = {o.ts for o in wrong}
        series = [r for r in received if r.ts not in wrong_ts]
        if len(series) < 2:
            continue
        if quantity in COUNTERS:
            outliers += _counter_faults(series, limits)
        if quantity == Quantity.POWER_W:
            outliers += _spikes(series, limits)
    outliers.sort(key=lambda o: (o.ts, o.quantity))
    polls = sorted({r.ts for r in inside})
    bad = {o.ts for o in outliers}
    expected = math.ceil((end - start) / interval_s - 1e-9)
    valid = len(polls) - len(bad)
    return QualityReport(
        device=device,
        start=start,
        end=end,
        interval_s=interval_s,
        expected=expected,
        received=len(polls),
        valid=valid,
        readings=len(inside),
        # Capped: a device polled faster than `interval_s` does not make the path better than whole.
        effectiveness_pct=min(100.0, 100.0 * valid / expected),
        gaps=_gaps(polls, start, end, limits.gap_factor * interval_s),
        outliers=outliers,
        events=list(events),
    )


def _gaps(polls: list[float], start: float, end: float, longest: float) -> list[Gap]:
    edges = [start, *polls, end]
    gaps = []
    for a, b in itertools.pairwise(edges):
        if b - a > longest:
            gaps.append(Gap(a, b, b - a))
    return gaps


def _out_of_range(series: list[Reading], limits: QualityLimits) -> list[Outlier]:
    bounds = limits.physical_range(series[0].quantity)
    if bounds is None:
        return []
    low, high = bounds
    return [
        Outlier(r.ts, r.quantity, r.value, "out_of_range", f"outside [{low:g}, {high:g}]")
        for r in series
        if not low <= r.value <= high
    ]


def _counter_faults(series: list[Reading], limits: QualityLimits) -> list[Outlier]:
    found = []
    for before, r in itertools.pairwise(series):
        delta = r.value - before.value
        if delta < 0:
            found.append(
                Outlier(r.ts, r.quantity, r.value, "counter_backwards", f"was {before.value:g}")
            )
            continue
        implied_w = delta * 3600 / (r.ts - before.ts) if r.ts > before.ts else math.inf
        if delta > 0 and implied_w > limits.max_power_w:
            found.append(
                Outlier(
                    r.ts,
                    r.quantity,
                    r.value,
                    "counter_jump",
                    f"+{delta:g} Wh in {r.ts - before.ts:g} s implies {implied_w:.0f} W "
                    f"> {limits.max_power_w:g} W",
                )
            )
    return found


def _spikes(series: list[Reading], limits: QualityLimits) -> list[Outlier]:
    values = [r.value for r in series]
    w = limits.spike_half_window
    found = []
    for i, r in enumerate(series):
        window = values[max(0, i - w) : i + w + 1]
        median = statistics.median(window)
        sigma = MAD_TO_SIGMA * statistics.median(abs(v - median) for v in window)
        allowed = max(limits.spike_sigmas * sigma, limits.spike_floor_w)
        if abs(r.value - median) > allowed:
            found.append(
                Outlier(
                    r.ts,
                    r.quantity,
                    r.value,
                    "power_spike",
                    f"{r.value - median:+.0f} W from the local median {median:g} W",
                )
            )
    return found
