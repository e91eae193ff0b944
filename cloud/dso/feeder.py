"""Validate on an LV feeder (seed 004 §6, UC3, the LV-grid scenario): the AC power flow of the
D-prognoses on the CIGRE LV residential feeder (cloud/market/grid.py), and how much the
aggregators' homes must change their net load in each PTU for no bus, line or the transformer
to be out of its limits.

The DSO knows where each aggregator's homes are connected (a load point of the feeder) and the
load of the homes no aggregator speaks for, per load point and PTU; it receives only each
aggregator's sum (no home's series). A violated PTU is relieved upward (less load) when taking
all of the aggregators' load off would clear it (a heavy evening), else downward (more load,
less export) when taking all of their export off would (the voltage rise of midday PV); else it
is `unrelieved` and logged. By bisection the DSO finds the smallest share of that load or export
(each aggregator's, scaled by the same share) whose removal clears the PTU: the relief, in kW,
is what it asks for. A share is found to within 1/2**RELIEF_STEPS, rounded up, so the relief
asked is never too small. One kW at one load point does not weigh the same as one kW at
another: when the purchase takes kW where they help less, the DSO validates again on the
D-prognoses less what it bought (cloud/dso/brain.py `_validate_again`) and asks for what is
still missing.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from homeflex.cloud.market.grid import EN50160_PU, RESIDENTIAL_LOAD_POINTS, Violation, power_flow
from homeflex.cloud.market.objects import Direction

log = logging.getLogger(__name__)
RELIEF_STEPS = 7  # bisection steps: the relief is within 1/128 of the aggregators' load
UP, DOWN = Direction.UP, Direction.DOWN


@dataclass(frozen=True)
class FeederCheck:
    violations: list[Violation]  # of the D-prognoses as they are, PTUs of the day
    relief_kw: dict[Direction, dict[int, float]]  # direction → PTU → kW the homes must move
    unrelieved: list[int] = field(default_factory=list)  # PTUs no such change clears

    @property
    def ok(self) -> bool:
        return not self.violations


@dataclass(frozen=True)
class Feeder:
    """The LV feeder behind a congestion point: the load point each aggregator's homes are
    connected at, and the load of other homes per load point (kW per PTU of the day)."""

    buses: Mapping[str, str]  # aggregator → load point ("R1", "R11", "R15" … "R18")
    other_load_kw: Mapping[str, Sequence[float]] = field(default_factory=dict)
    v_min: float = EN50160_PU[0]
    v_max: float = EN50160_PU[1]
    loading_limit_pct: float = 100.0

    def __post_init__(self) -> None:
        points = ", ".join(RESIDENTIAL_LOAD_POINTS)
        for where, bus in [*self.buses.items(), *((b, b) for b in self.other_load_kw)]:
            if bus not in RESIDENTIAL_LOAD_POINTS:
                raise ValueError(f"{where}: load point {bus!r} is not on the feeder; use {points}")
        if not self.v_min < 1.0 < self.v_max:
            raise ValueError(f"voltage band [{self.v_min}, {self.v_max}] p.u. must contain 1.0")

    def check(self, prognoses: Mapping[str, Sequence[float]]) -> FeederCheck:
        """The power flow of each aggregator's D-prognosis (kW per PTU, all of the day's PTUs)
        at its load point with the other load, and the relief each violated PTU needs."""
        unknown = sorted(set(prognoses) - set(self.buses))
        if unknown:
            raise ValueError(f"no load point configured for aggregator {', '.join(unknown)}")
        ptus = len(next(iter(prognoses.values()), ()))
        for name, series in [*prognoses.items(), *self.other_load_kw.items()]:
            if len(series) != ptus:
                raise ValueError(f"{name}: {len(series)} PTUs, the D-prognoses have {ptus}")
        before = self._flow(prognoses, {t: (UP, 0.0) for t in range(ptus)})
        violated = sorted({v.period for v in before})
        if not violated:
            return FeederCheck([], {UP: {}, DOWN: {}})
        # which way each violated PTU can be cleared: all load off, else all export off
        rest = self._flow(prognoses, {t: (UP, 1.0) for t in violated})
        up = [t for t in violated if t not in {v.period for v in rest}]
        rest = self._flow(prognoses, {t: (DOWN, 1.0) for t in violated if t not in up})
        down = [t for t in violated if t not in up and t not in {v.period for v in rest}]
        unrelieved = [t for t in violated if t not in up and t not in down]
        for t in unrelieved:
            log.warning("feeder PTU %d: out of limits whatever the aggregators' homes do (%s)",
                        t, "; ".join(str(v) for v in before if v.period == t))  # fmt: skip
        way = {t: UP for t in up} | {t: DOWN for t in down}
        lo = dict.fromkeys(way, 0.0)  # shares that do not clear
        hi = dict.fromkeys(way, 1.0)  # shares that do
        for _ in range(RELIEF_STEPS if way else 0):
            mid = {t: (lo[t] + hi[t]) / 2 for t in way}
            still = {v.period for v in self._flow(prognoses, {t: (way[t], mid[t]) for t in way})}
            for t in way:
                (lo if t in still else hi)[t] = mid[t]
        relief: dict[Direction, dict[int, float]] = {UP: {}, DOWN: {}}
        for t, direction in way.items():
            movable = sum(_movable(s[t], direction) for s in prognoses.values())
            kw = math.ceil(hi[t] * movable * 100) / 100
            if kw > 0:
                relief[direction][t] = kw
        return FeederCheck(before, relief, unrelieved)

    def _flow(
        self, prognoses: Mapping[str, Sequence[float]], share: Mapping[int, tuple[Direction, float]]
    ) -> list[Violation]:
        """The violations in the PTUs of `share`, where each aggregator's load (UP) or export
        (DOWN) is scaled by 1 - share; numbered by PTU of the day."""
        ptus = sorted(share)
        loads: dict[str, list[float]] = {
            bus: [series[t] for t in ptus] for bus, series in self.other_load_kw.items()
        }
        for agg, series in prognoses.items():
            at = loads.setdefault(self.buses[agg], [0.0] * len(ptus))
            for n, t in enumerate(ptus):
                direction, part = share[t]
                at[n] += series[t] - part * _movable(series[t], direction) * _sign(direction)
        flow = power_flow(loads, v_min=self.v_min, v_max=self.v_max,
                          loading_limit_pct=self.loading_limit_pct)  # fmt: skip
        return [
            Violation(ptus[v.period], v.element, v.name, v.value, v.limit) for v in flow.violations
        ]


def _movable(kw: float, direction: Direction) -> float:
    """What an aggregator's net load `kw` can give in `direction`: its load up, its export down."""
    return max(kw, 0.0) if direction == UP else max(-kw, 0.0)


def _sign(direction: Direction) -> float:
    return 1.0 if direction == UP else -1.0  # up: less net load
