"""The shared optimisation model that device builders add to, and what the planner reads back.

Each builder adds its variables and constraints, contributes its power per PTU to the home's
balance (positive = consumption, W) and its own cost terms (€); the planner adds the grid
connection and the energy bill, and solves. Builders never see each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ortools.linear_solver.pywraplp as pywraplp

from homeflex.clock import PTU_SECONDS

LinExpr = Any  # pywraplp's linear expressions and variables have no type information


@dataclass(frozen=True)
class DeviceSchedule:
    """What the plan says a device does: its power per PTU (W, + consumption) and device-specific
    series (state of charge, room temperature, start PTU …)."""

    device: str
    power_w: list[float]
    series: dict[str, list[float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


Extract = Callable[[], DeviceSchedule]
"""Called after the solve: reads the builder's variables into its schedule."""


class PlanModel:
    """One MILP over `ptus` PTUs starting at `start` (Unix seconds, PTU-aligned)."""

    def __init__(self, start: float, ptus: int, solver: str = "SCIP") -> None:
        if start % PTU_SECONDS:
            raise ValueError(f"plan start {start} is not on a PTU boundary")
        created = pywraplp.Solver.CreateSolver(solver)
        if created is None:
            raise RuntimeError(f"OR-Tools has no {solver} solver in this build")
        self.solver: pywraplp.Solver = created
        self.start = start
        self.ptus = ptus
        self.dt_h = PTU_SECONDS / 3600.0
        self._power: list[list[LinExpr]] = [[] for _ in range(ptus)]
        self._constant_w = [0.0] * ptus
        self._cost: list[LinExpr] = []
        self.slacks: list[LinExpr] = []
        self._names: set[str] = set()

    # --- time -------------------------------------------------------------------------------
    def index(self, instant: float) -> int:
        """The PTU holding `instant`, clamped to the horizon (before it: 0, after it: ptus)."""
        i = int((instant - self.start) // PTU_SECONDS)
        return max(0, min(self.ptus, i))

    def instant(self, index: int) -> float:
        return self.start + index * PTU_SECONDS

    # --- variables ----------------------------------------------------------------------------
    def _unique(self, name: str) -> str:
        if name in self._names:
            raise ValueError(f"variable {name!r} defined twice; prefix it with the device id")
        self._names.add(name)
        return name

    def num(self, lb: float, ub: float, name: str) -> LinExpr:
        return self.solver.NumVar(lb, ub, self._unique(name))

    def boolean(self, name: str) -> LinExpr:
        return self.solver.BoolVar(self._unique(name))

    def constrain(self, constraint: Any, name: str = "") -> None:
        self.solver.Add(constraint, name)

    # --- contributions ------------------------------------------------------------------------
    def add_power(self, t: int, expr: LinExpr | float) -> None:
        """Power of a device in PTU `t` (W, positive = taken from the home's supply)."""
        if isinstance(expr, int | float):
            self._constant_w[t] += float(expr)
        else:
            self._power[t].append(expr)

    def add_cost(self, expr: LinExpr | float) -> None:
        """A cost term in € (penalties, wear, discomfort)."""
        self._cost.append(expr)

    def add_penalty(self, slack: LinExpr, eur_per_unit: float) -> None:
        """A soft preference missed by `slack` (≥ 0, in the preference's unit) at `eur_per_unit`.
        Kept apart from plain costs so that a flexibility envelope can hold every preference to
        what the plan achieves."""
        self.slacks.append(slack)
        self._cost.append(eur_per_unit * slack)

    def power(self, t: int) -> LinExpr:
        """The home's net power in PTU `t` as a linear expression (W)."""
        return self.solver.Sum(self._power[t]) + self._constant_w[t]

    def cost(self) -> LinExpr:
        return self.solver.Sum(self._cost)

    @staticmethod
    def value(expr: LinExpr | float) -> float:
        if isinstance(expr, int | float):
            return float(expr)
        return float(expr.solution_value())
