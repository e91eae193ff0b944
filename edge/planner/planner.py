"""Assembles the model from the inputs, solves it within a time limit and a relative gap, and
publishes the best feasible plan. Requests are soft with a heavy penalty so that a request the
home cannot meet is reported (with how far it is missed) instead of making the plan infeasible."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field

from ortools.linear_solver import pywraplp

from homeflex.edge.planner.devices import build
from homeflex.edge.planner.inputs import PlanInputs, Request
from homeflex.edge.planner.model import DeviceSchedule, Extract, LinExpr, PlanModel
from homeflex.edge.planner.tariff import ptu_costs

REQUEST_PENALTY_EUR_PER_KWH = 100.0  # far above any price: a request is met whenever it can be
MET_TOLERANCE_W = 1.0
OBJECTIVE_SCALE = 1000.0


@dataclass
class RequestOutcome:
    id: str
    met: bool
    reason: str = ""


@dataclass
class Plan:
    start: float
    ptus: int
    status: str  # optimal | feasible | fallback
    net_w: list[float]  # + import, − export, per PTU
    import_w: list[float]
    export_w: list[float]
    energy_cost_eur: float  # import bill minus export revenue
    objective_eur: float  # energy cost plus the devices' own cost terms and penalties
    devices: list[DeviceSchedule]
    requests: list[RequestOutcome] = field(default_factory=list)
    solve_s: float = 0.0
    gap: float = 0.0

    def device(self, device_id: str) -> DeviceSchedule:
        return next(d for d in self.devices if d.device == device_id)


class NoPlan(Exception):
    """The solver found no feasible plan in time; the caller falls back to rules."""


def solve(inputs: PlanInputs) -> Plan:
    start = inputs.start.timestamp()
    m = PlanModel(start, inputs.ptus)
    s = m.solver
    extracts: list[Extract] = [build(spec, m) for spec in inputs.devices]
    g = inputs.grid
    imp = [m.num(0, g.import_limit_w, f"grid.import[{t}]") for t in range(m.ptus)]
    exp = [m.num(0, g.export_limit_w, f"grid.export[{t}]") for t in range(m.ptus)]
    for t in range(m.ptus):
        m.constrain(imp[t] - exp[t] == m.power(t) + inputs.base_load_w[t], f"balance[{t}]")
        if inputs.export_price[t] > inputs.import_price[t]:
            # exporting would pay more than importing costs: forbid doing both at once
            importing = m.boolean(f"grid.importing[{t}]")
            m.constrain(imp[t] <= g.import_limit_w * importing)
            m.constrain(exp[t] <= g.export_limit_w * (1 - importing))
    energy = s.Sum(ptu_costs(inputs.import_price, inputs.export_price, imp, exp))
    slacks = {r.id: _request(m, r, imp, exp) for r in inputs.requests}
    # in milli-euros: per-W costs of ~1e-5 € sit near HiGHS's 1e-7 optimality tolerance, and
    # near-ties were then settled up to 1e-3 € off the optimum
    s.Minimize(OBJECTIVE_SCALE * (energy + m.cost()))

    s.SuppressOutput()
    s.SetTimeLimit(int(inputs.time_limit_s * 1000))
    # pywraplp's RELATIVE_MIP_GAP never reaches HiGHS (ortools 9.15); HiGHS's own option does
    # (the call applies it yet returns False, so its result says nothing)
    s.SetSolverSpecificParametersAsString(f"mip_rel_gap={inputs.relative_gap!r}")
    began = time.perf_counter()
    status = s.Solve()
    solve_s = time.perf_counter() - began
    if status not in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
        raise NoPlan(f"solver status {status} after {solve_s:.2f} s")
    objective = s.Objective().Value() / OBJECTIVE_SCALE
    bound = s.Objective().BestBound() / OBJECTIVE_SCALE
    gap = abs(objective - bound) / max(1e-9, abs(objective)) if status != s.OPTIMAL else 0.0
    imp_v = [v.solution_value() for v in imp]
    exp_v = [v.solution_value() for v in exp]
    outcomes = []
    for r in inputs.requests:
        missed = [(t, v.solution_value()) for t, v in slacks[r.id]]
        worst = max(missed, key=lambda x: x[1], default=(0, 0.0))
        if worst[1] <= MET_TOLERANCE_W:
            outcomes.append(RequestOutcome(r.id, True))
        else:
            at = m.instant(worst[0])
            outcomes.append(
                RequestOutcome(
                    r.id,
                    False,
                    f"cannot be met: the home misses it by up to {worst[1]:.0f} W in the PTU "
                    f"starting at {time.strftime('%H:%M', time.gmtime(at))} UTC, "
                    "even with every flexible device moved",
                )
            )
    return Plan(
        start=start,
        ptus=m.ptus,
        status="optimal" if status == s.OPTIMAL else "feasible",
        net_w=[i - e for i, e in zip(imp_v, exp_v, strict=True)],
        import_w=imp_v,
        export_w=exp_v,
        energy_cost_eur=energy.solution_value(),
        objective_eur=objective
        - sum(_penalty(m, v.solution_value()) for sl in slacks.values() for _, v in sl),
        devices=[extract() for extract in extracts],
        requests=outcomes,
        solve_s=solve_s,
        gap=gap,
    )


def _request(
    m: PlanModel, r: Request, imp: list[LinExpr], exp: list[LinExpr]
) -> list[tuple[int, LinExpr]]:
    """Soft bounds on net power over the request's PTUs; returns (PTU, slack W) pairs."""
    first = m.index(r.start.timestamp())
    last = m.index(r.end.timestamp() - 1)
    slacks = []
    for t in range(first, min(last + 1, m.ptus)):
        slack = m.num(0, m.solver.infinity(), f"request.{r.id}.slack[{t}]")
        if r.max_net_w is not None:
            m.constrain(imp[t] - exp[t] <= r.max_net_w + slack)
        if r.min_net_w is not None:
            m.constrain(imp[t] - exp[t] >= r.min_net_w - slack)
        m.add_cost(_penalty(m, slack))
        slacks.append((t, slack))
    return slacks


def plan_to_json(plan: Plan) -> str:
    """The plan as JSON, with times as ISO 8601 and numbers rounded to what matters (W, m€)."""
    data = dataclasses.asdict(plan)
    data["start"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(plan.start))

    def rounded(value: object) -> object:
        if isinstance(value, float):
            return round(value, 4)
        if isinstance(value, list):
            return [rounded(v) for v in value]
        if isinstance(value, dict):
            return {k: rounded(v) for k, v in value.items()}
        return value

    return json.dumps(rounded(data), indent=1)


def _penalty(m: PlanModel, slack_w: LinExpr | float) -> LinExpr | float:
    """€ for missing a request by `slack_w` during one PTU; reported plans leave it out."""
    return REQUEST_PENALTY_EUR_PER_KWH * m.dt_h / 1000.0 * slack_w
