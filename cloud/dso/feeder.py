"""Validate on an LV feeder (seed 004 §6, UC3, the LV-grid scenario): the AC power flow of the
D-prognoses on the CIGRE LV residential feeder (cloud/market/grid.py), and how much load the
aggregators' homes must take off in each PTU for no bus, line or the transformer to be out of
its limits.

The DSO knows where each aggregator's homes are connected (a load point of the feeder) and the
load of the homes no aggregator speaks for, per load point and PTU; it receives only each
aggregator's sum (no home's series). In a PTU with a violation it finds, by bisection, the
smallest share of the aggregators' load (each aggregator's positive load, scaled by the same
share) whose removal clears it: the relief, in kW, is what the DSO asks for. A share is found
to within 1/2**RELIEF_STEPS of the load, rounded up, so the relief asked is never too small.
One kW off one load point does not weigh the same as one kW off another: when the purchase takes
kW where they help less, the next validation (the homes plan again holding their orders) runs the
power flow on the new D-prognoses and asks for what is still missing.

Too much export (a voltage rise from PV back-flow) cannot be cleared by taking load off; such a
PTU is reported in `FeederCheck.unrelieved` and logged, and asks for no upward flexibility.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from homeflex.cloud.market.grid import EN50160_PU, RESIDENTIAL_LOAD_POINTS, Violation, power_flow

log = logging.getLogger(__name__)
RELIEF_STEPS = 7  # bisection steps: the relief is within 1/128 of the aggregators' load


@dataclass(frozen=True)
class FeederCheck:
    violations: list[Violation]  # of the D-prognoses as they are, PTUs of the day
    relief_kw: dict[int, float]  # PTU → kW the aggregators' homes must take off
    unrelieved: list[int] = field(default_factory=list)  # PTUs not cleared by any load taken off

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
        before = self._flow(prognoses, {t: 0.0 for t in range(ptus)})
        violated = sorted({v.period for v in before})
        if not violated:
            return FeederCheck([], {})
        flexible = {t: sum(max(s[t], 0.0) for s in prognoses.values()) for t in violated}
        unrelieved = sorted({v.period for v in self._flow(prognoses, dict.fromkeys(violated, 1.0))})
        for t in unrelieved:
            log.warning("feeder PTU %d: out of limits even without the aggregators' load "
                        "(%s); no upward flexibility clears it", t,
                        "; ".join(str(v) for v in before if v.period == t))  # fmt: skip
        lo = {t: 0.0 for t in violated if t not in unrelieved}  # shares that do not clear
        hi = dict.fromkeys(lo, 1.0)  # shares that do
        for _ in range(RELIEF_STEPS if lo else 0):
            mid = {t: (lo[t] + hi[t]) / 2 for t in lo}
            still = {v.period for v in self._flow(prognoses, mid)}
            for t in mid:
                (lo if t in still else hi)[t] = mid[t]
        relief = {t: math.ceil(hi[t] * flexible[t] * 100) / 100 for t in hi}
        return FeederCheck(before, {t: kw for t, kw in relief.items() if kw > 0}, unrelieved)

    def _flow(
        self, prognoses: Mapping[str, Sequence[float]], share: Mapping[int, float]
    ) -> list[Violation]:
        """The violations in the PTUs of `share`, each aggregator's positive load scaled by
        1 - share; numbered by PTU of the day."""
        ptus = sorted(share)
        loads: dict[str, list[float]] = {
            bus: [series[t] for t in ptus] for bus, series in self.other_load_kw.items()
        }
        for agg, series in prognoses.items():
            at = loads.setdefault(self.buses[agg], [0.0] * len(ptus))
            for n, t in enumerate(ptus):
                kw = series[t]
                at[n] += kw * (1.0 - share[t]) if kw > 0 else kw
        flow = power_flow(loads, v_min=self.v_min, v_max=self.v_max,
                          loading_limit_pct=self.loading_limit_pct)  # fmt: skip
        return [
            Violation(ptus[v.period], v.element, v.name, v.value, v.limit) for v in flow.violations
        ]
