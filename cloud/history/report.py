"""The data-path report (seed 004 §3 req. 3): per box and for the fleet, readings expected
(from each device's poll interval, which the box sends along) against readings in the history,
gaps, outliers, latency from meter to history, and the effectiveness of the path in %.

The checks per device are the gateway's own (edge/quality.py), run on what reached the
history: a reading lost anywhere between the meter and the history shows here as a gap.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from dataclasses import dataclass, field
from typing import Any

from homeflex.cloud.history.store import HistoryStore
from homeflex.edge.devices.capabilities import Quantity, Reading
from homeflex.edge.quality import QualityLimits, QualityReport, analyse

_KNOWN = {q.value for q in Quantity}


@dataclass(frozen=True)
class Latency:
    """Seconds from the reading's time to its arrival in the history."""

    median_s: float
    p95_s: float
    max_s: float


@dataclass(frozen=True)
class BoxReport:
    box: str  # the pseudonymous id
    expected: int
    received: int
    valid: int
    effectiveness_pct: float
    latency: Latency | None
    duplicates: int
    replays: int
    devices: list[QualityReport] = field(default_factory=list)


@dataclass(frozen=True)
class FleetReport:
    start: float
    end: float
    boxes: int
    expected: int
    received: int
    valid: int
    effectiveness_pct: float
    per_box: list[BoxReport] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def render(self) -> str:
        lines = [
            f"Data path, {self.boxes} boxes: expected {self.expected}, received "
            f"{self.received}, valid {self.valid}: effectiveness {self.effectiveness_pct:.2f} %"
        ]
        for b in self.per_box:
            lat = (
                f"latency median {b.latency.median_s:.1f} s, p95 {b.latency.p95_s:.1f} s, "
                f"max {b.latency.max_s:.1f} s"
                if b.latency
                else "no readings"
            )
            lines.append(
                f"box {b.box}: expected {b.expected}, received {b.received}, valid {b.valid} "
                f"({b.effectiveness_pct:.2f} %); {lat}; duplicates {b.duplicates}, "
                f"replays {b.replays}"
            )
            for d in b.devices:
                lines += ["  " + line for line in d.render().splitlines()]
        return "\n".join(lines)


def _pct(valid: float, expected: int) -> float:
    return min(100.0, 100.0 * valid / expected) if expected else 100.0


def box_report(
    store: HistoryStore,
    pid: str,
    start: float,
    end: float,
    limits: QualityLimits | None = None,
) -> BoxReport:
    rows = store.readings(pid, round(start * 1000), round(end * 1000))
    by_device: dict[str, list[Reading]] = {}
    for r in rows:
        if r.quantity in _KNOWN:
            by_device.setdefault(r.device, []).append(
                Reading(r.device, Quantity(r.quantity), r.ts_ms / 1000, r.value)
            )
    poll = store.poll_s(pid)
    devices = [
        analyse(device, by_device.get(device, []), start, end, interval, limits)
        for device, interval in sorted(poll.items())
    ]
    latency = None
    if rows:
        lat = sorted(r.latency_ms / 1000 for r in rows)
        latency = Latency(
            statistics.median(lat), lat[min(len(lat) - 1, int(0.95 * len(lat)))], lat[-1]
        )
    counts = store.counts(pid)
    expected = sum(d.expected for d in devices)
    received = sum(d.received for d in devices)
    valid = sum(d.valid for d in devices)
    # a device read more often than its interval says cannot make up for another's gaps
    useful = sum(min(d.valid, d.expected) for d in devices)
    return BoxReport(
        pid,
        expected,
        received,
        valid,
        _pct(useful, expected),
        latency,
        counts["duplicates"],
        counts["replays"],
        devices,
    )


def fleet_report(
    store: HistoryStore,
    start: float,
    end: float,
    boxes: list[str] | None = None,
    limits: QualityLimits | None = None,
) -> FleetReport:
    per_box = [box_report(store, pid, start, end, limits) for pid in boxes or store.boxes()]
    expected = sum(b.expected for b in per_box)
    received = sum(b.received for b in per_box)
    valid = sum(b.valid for b in per_box)
    useful = sum(b.effectiveness_pct * b.expected / 100 for b in per_box)
    pct = 100.0 * useful / expected if expected else 100.0
    return FleetReport(start, end, len(per_box), expected, received, valid, pct, per_box)
