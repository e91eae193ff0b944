"""The grid meter: the sum of every load's power, per phase, with import and export counters.

It measures exactly what the loads draw, so energy is conserved by construction.
"""

from __future__ import annotations

from collections.abc import Sequence

from homeflex_sim.loads import SimLoad

NOMINAL_V = 230.0
LINE_OHM = 0.25  # service cable resistance per phase: the voltage drop with current


class Meter:
    """Three-phase meter. `phase_of[name]` is 1..3 for a single-phase load; a load not listed
    there is three-phase and split evenly."""

    def __init__(self, *, name: str, loads: Sequence[SimLoad], phase_of: dict[str, int]) -> None:
        self.name = name
        self.loads = list(loads)
        self.phase_of = dict(phase_of)
        self.power_w = 0.0
        self.power_l1_w = self.power_l2_w = self.power_l3_w = 0.0
        self.current_l1_a = self.current_l2_a = self.current_l3_a = 0.0
        self.voltage_l1_v = self.voltage_l2_v = self.voltage_l3_v = NOMINAL_V
        self.import_wh = 0.0
        self.export_wh = 0.0
        # The counters as they were at the end of the last completed 15-minute interval, like the
        # interval (load-profile) registers of a smart meter: exact per-PTU energy for whoever
        # reads the meter at least once per interval, however late.
        self.interval_end_s = 0.0
        self.interval_import_wh = 0.0
        self.interval_export_wh = 0.0

    def integrate(self, dt: float) -> None:
        """Add up the loads' power over the step just taken and count its energy."""
        phases = [0.0, 0.0, 0.0]
        for load in self.loads:
            p = load.power_w
            phase = self.phase_of.get(load.name)
            if phase is None:
                for i in range(3):
                    phases[i] += p / 3.0
            else:
                phases[phase - 1] += p
        net = phases[0] + phases[1] + phases[2]
        self.power_w = net
        self.power_l1_w, self.power_l2_w, self.power_l3_w = phases
        currents = [p / NOMINAL_V for p in phases]
        self.current_l1_a, self.current_l2_a, self.current_l3_a = currents
        self.voltage_l1_v, self.voltage_l2_v, self.voltage_l3_v = (
            NOMINAL_V - LINE_OHM * i for i in currents
        )
        if net >= 0:
            self.import_wh += net * dt / 3600.0
        else:
            self.export_wh -= net * dt / 3600.0

    def close_interval(self, t: float) -> None:
        """Latch the counters at simulated time `t`, the end of an interval."""
        self.interval_end_s = t
        self.interval_import_wh = self.import_wh
        self.interval_export_wh = self.export_wh
