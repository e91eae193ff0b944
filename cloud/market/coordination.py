"""Seed 001's three ways to coordinate a multi-carrier system (mies.py): co-optimization (one
central QP, the reference), price-response (ADMM-like price iterations over agents' own
full-horizon problems) and the market auction (hourly clearing of bids each prosumer derives from
its own model, Algorithm 1). Each returns the dispatch, hourly prices, system cost, iterations and
messages; `run(name, instance)` and the registry pick one by name.

Solvers: OR-Tools PDLP for the convex QPs (the generators' a·p² and the ADMM penalty; PDLP takes
diagonal quadratic objectives), called directly rather than through MathOpt for its warm start;
GLOP for the prosumers' LPs in the auction.
In the installed OR-Tools (9.15) MathOpt's OSQP is not compiled in and its HiGHS takes no
quadratic objective.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from ortools.linear_solver import pywraplp
from ortools.linear_solver.linear_solver_pb2 import MPModelProto
from ortools.pdlp import solve_log_pb2, solvers_pb2
from ortools.pdlp.python import pdlp

from homeflex.cloud.market.mies import (
    ELECTRICITY,
    EUR_PER_MWH,
    Array,
    CoordinationResult,
    Dispatch,
    Instance,
    Prosumer,
    ProsumerDispatch,
    Storage,
    StorageDispatch,
    system_cost,
)
from homeflex.cloud.market.registry import (
    OptionError,
    coordination_method,
    register_coordination,
)

Index = NDArray[np.int64]


class SolveError(RuntimeError):
    """A solver did not reach an optimum: the message names the model and the reason."""


# --- a convex program with a diagonal quadratic objective, built from arrays ---------------


def _full(v: float | Array, k: int) -> Array:
    out: Array = np.broadcast_to(np.asarray(v, dtype=float), (k,))
    return out


class Program:
    """Variables and rows added a vector at a time; exported as an MPModelProto for GLOP or
    PDLP. `quad` is the coefficient of x² in the objective (not ½x²)."""

    def __init__(self) -> None:
        self.n = 0
        self.m = 0
        self._bounds: list[tuple[Array, Array, Array, Array]] = []
        self._entries: list[tuple[Index, Index, Array]] = []
        self._row_bounds: list[tuple[Array, Array]] = []

    def add_vars(
        self,
        k: int,
        lb: float | Array,
        ub: float | Array,
        cost: float | Array = 0.0,
        quad: float | Array = 0.0,
    ) -> Index:
        """k variables with bounds, linear cost and x² coefficient (scalars or one per var)."""
        idx = np.arange(self.n, self.n + k, dtype=np.int64)
        self._bounds.append((_full(lb, k), _full(ub, k), _full(cost, k), _full(quad, k)))
        self.n += k
        return idx

    def add_rows(
        self, terms: Sequence[tuple[Index, float | Array]], lo: float | Array, hi: float | Array
    ) -> Index:
        """k rows (k = the length of each term's column array): row i is Σ coef[i]·x[col[i]]
        over the terms; a negative column index leaves that term out of its row."""
        k = len(terms[0][0])
        rows = np.arange(self.m, self.m + k, dtype=np.int64)
        for cols, coef in terms:
            c = _full(coef, k)
            keep = cols >= 0
            self._entries.append((rows[keep], cols[keep], c[keep]))
        self._row_bounds.append((_full(lo, k), _full(hi, k)))
        self.m += k
        return rows

    def arrays(self) -> tuple[Array, Array, Array, Array]:
        lb, ub, c, q = (np.concatenate([b[i] for b in self._bounds]) for i in range(4))
        return lb, ub, c, q

    def proto(self) -> Any:
        lb, ub, c, q = self.arrays()
        model = MPModelProto()
        for lo, hi, cost in zip(lb.tolist(), ub.tolist(), c.tolist(), strict=True):
            v = model.variable.add()
            v.lower_bound, v.upper_bound, v.objective_coefficient = lo, hi, cost
        rows = np.concatenate([e[0] for e in self._entries])
        cols = np.concatenate([e[1] for e in self._entries])
        coefs = np.concatenate([e[2] for e in self._entries])
        order = np.argsort(rows, kind="stable")
        rows, cols, coefs = rows[order], cols[order], coefs[order]
        cuts = np.searchsorted(rows, np.arange(self.m + 1))
        lo_all = np.concatenate([b[0] for b in self._row_bounds]).tolist()
        hi_all = np.concatenate([b[1] for b in self._row_bounds]).tolist()
        cols_l, coefs_l = cols.tolist(), coefs.tolist()
        for r in range(self.m):
            con = model.constraint.add()
            con.var_index.extend(cols_l[cuts[r] : cuts[r + 1]])
            con.coefficient.extend(coefs_l[cuts[r] : cuts[r + 1]])
            con.lower_bound, con.upper_bound = lo_all[r], hi_all[r]
        nz = np.flatnonzero(q)
        if nz.size:
            quad = model.quadratic_objective
            quad.qvar1_index.extend(nz.tolist())
            quad.qvar2_index.extend(nz.tolist())
            quad.coefficient.extend(q[nz].tolist())
        return model


PDLP_EPS = 1e-9


def pdlp_params(eps: float = PDLP_EPS, seconds: float = 600.0) -> Any:
    params = solvers_pb2.PrimalDualHybridGradientParams()
    crit = params.termination_criteria.simple_optimality_criteria
    crit.eps_optimal_relative = eps
    crit.eps_optimal_absolute = eps
    params.termination_criteria.time_sec_limit = seconds
    return params


class Qp:
    """A program handed to PDLP, kept so that its linear objective and its diagonal can change
    and the next solve can start from the last solution (the price-response iterations)."""

    def __init__(self, program: Program, what: str, eps: float = PDLP_EPS) -> None:
        self.what = what
        self.qp = pdlp.qp_from_mpmodel_proto(program.proto(), False)
        self.params = pdlp_params(eps)
        self.last: Any = None
        self.iterations = 0

    def set_objective(self, c: Array, q: Array | None = None) -> None:
        self.qp.objective_vector = np.asarray(c, dtype=float)
        if q is not None:
            self.qp.set_objective_matrix_diagonal(2.0 * np.asarray(q, dtype=float))

    def solve(self) -> tuple[Array, Array]:
        result = pdlp.primal_dual_hybrid_gradient(self.qp, self.params, self.last)
        log = result.solve_log
        if log.termination_reason != solve_log_pb2.TERMINATION_REASON_OPTIMAL:
            reason = solve_log_pb2.TerminationReason.Name(log.termination_reason)
            raise SolveError(
                f"{self.what}: PDLP stopped with {reason} after {log.iteration_count} "
                f"iterations ({log.termination_string})"
            )
        self.iterations += log.iteration_count
        warm = pdlp.PrimalAndDualSolution()
        warm.primal_solution = result.primal_solution
        warm.dual_solution = result.dual_solution
        self.last = warm
        return np.asarray(result.primal_solution), np.asarray(result.dual_solution)


# --- one prosumer's model (seed 001 eqs. 3–8, 10–13) over a window of hours ---------------------


@dataclass
class ProsumerState:
    """What carries over from one hour to the next: storage energies and flexible energy
    served so far."""

    battery: float | None
    heat: float | None
    flex: dict[str, float]

    @classmethod
    def start(cls, p: Prosumer) -> ProsumerState:
        return cls(
            p.battery.energy_start if p.battery else None,
            p.heat_store.energy_start if p.heat_store else None,
            {f.name: 0.0 for f in p.flexible},
        )


@dataclass
class ProsumerVars:
    net: Index
    conv: dict[str, Index]
    flex: dict[str, Index]
    level: dict[str, Index]
    battery: tuple[Index, Index, Index] | None
    heat: tuple[Index, Index, Index] | None

    def dispatch(self, x: Array, at: slice | None = None) -> ProsumerDispatch:
        s = at or slice(None)

        def store(v: tuple[Index, Index, Index] | None) -> StorageDispatch | None:
            return None if v is None else StorageDispatch(*(x[i[s]] for i in v))

        return ProsumerDispatch(
            net=x[self.net[s]],
            converter_input={k: x[v[s]] for k, v in self.conv.items()},
            flexible={k: x[v[s]] for k, v in self.flex.items()},
            battery=store(self.battery),
            heat_store=store(self.heat),
        )


def carrier_price(inst: Instance, carrier: str, hours: slice) -> float | Array:
    if carrier == ELECTRICITY:
        return 0.0  # electricity is priced at the market bus, through P
    return np.asarray(inst.carrier_prices[carrier][hours], dtype=float)


def add_prosumer(
    prog: Program,
    inst: Instance,
    p: Prosumer,
    t0: int,
    t1: int,
    state: ProsumerState,
    net_quad: float = 0.0,
) -> ProsumerVars:
    """The prosumer over hours [t0, t1) from `state`; its storage ends the window with at least
    its end energy. Objective: the carrier cost, plus `net_quad`·P² (the price-response
    penalty's square); the caller sets the electricity price terms."""
    k = t1 - t0
    hours = slice(t0, t1)
    net = prog.add_vars(k, -math.inf, math.inf, 0.0, net_quad)
    conv = {
        cv.name: prog.add_vars(k, 0.0, cv.capacity, carrier_price(inst, cv.carrier, hours))
        for cv in p.converters
    }
    flex = {
        f.name: prog.add_vars(k, 0.0, math.inf if f.max_power is None else f.max_power)
        for f in p.flexible
    }
    level: dict[str, Index] = {}
    for f in p.flexible:
        low, high = f.window()
        level[f.name] = lv = prog.add_vars(k, low[hours], high[hours])
        prev = np.concatenate([[-1], lv[:-1]])
        rhs = np.zeros(k)
        rhs[0] = state.flex[f.name]
        prog.add_rows([(lv, 1.0), (prev, -1.0), (flex[f.name], -1.0)], rhs, rhs)

    def storage(spec: Storage | None, start: float | None) -> tuple[Index, Index, Index] | None:
        if spec is None or start is None:
            return None
        ch = prog.add_vars(k, 0.0, spec.charge_power)
        dis = prog.add_vars(k, 0.0, spec.discharge_power)
        e_lb = np.full(k, spec.energy_min)
        e_lb[-1] = max(spec.energy_min, spec.end_min)
        e = prog.add_vars(k, e_lb, spec.energy_max)
        prev = np.concatenate([[-1], e[:-1]])
        rhs = np.zeros(k)
        rhs[0] = start
        flows = [(ch, -spec.charge_efficiency), (dis, 1.0 / spec.discharge_efficiency)]
        prog.add_rows([(e, 1.0), (prev, -1.0), *flows], rhs, rhs)
        return ch, dis, e

    battery = storage(p.battery, state.battery)
    heat = storage(p.heat_store, state.heat)
    # P = local generation − grid draw (eq. 3), written P − loc + grid = −base demand
    terms: list[tuple[Index, float | Array]] = [(net, 1.0)]
    heat_terms: list[tuple[Index, float | Array]] = []
    for cv in p.converters:
        if cv.carrier == ELECTRICITY:
            terms.append((conv[cv.name], 1.0))
        elif cv.electric_efficiency:
            terms.append((conv[cv.name], -cv.electric_efficiency))
        if cv.heat_efficiency:
            heat_terms.append((conv[cv.name], cv.heat_efficiency))
    for f in p.flexible:
        if f.carrier == ELECTRICITY:
            terms.append((flex[f.name], 1.0))
        else:
            heat_terms.append((flex[f.name], -1.0))
    if battery:
        terms += [(battery[0], 1.0), (battery[1], -1.0)]
    if heat:
        heat_terms += [(heat[1], 1.0), (heat[0], -1.0)]
    demand = -np.asarray(p.electric_demand[hours])
    prog.add_rows(terms, demand, demand)
    if p.has_heat:  # heat balance (eq. 6); the instance has checked there is a heat source
        need = np.asarray(p.heat_demand[hours]) if p.heat_demand else np.zeros(k)
        prog.add_rows(heat_terms, need, need)
    return ProsumerVars(net, conv, flex, level, battery, heat)


# --- 1. co-optimization --------------------------------------------------------------------


def co_optimization(instance: Instance, eps: float = PDLP_EPS) -> CoordinationResult:
    """Every agent's full model in one QP (seed 001 eqs. 1–13); prices are the duals of the
    balance. Messages: each agent sends its model and receives its schedule."""
    began = time.perf_counter()
    T = instance.hours
    prog = Program()
    gens = {
        g.name: prog.add_vars(T, np.asarray(g.p_min), np.asarray(g.p_max), g.b, g.a)
        for g in instance.generators
    }
    pros = {
        p.name: add_prosumer(prog, instance, p, 0, T, ProsumerState.start(p))
        for p in instance.prosumers
    }
    demand = np.asarray(instance.passive_demand)
    balance = prog.add_rows(
        [(v, 1.0) for v in gens.values()] + [(v.net, 1.0) for v in pros.values()], demand, demand
    )
    qp = Qp(prog, f"co-optimization of {instance.name}", eps)
    x, y = qp.solve()
    dispatch = Dispatch(
        generators={n: x[v] for n, v in gens.items()},
        prosumers={n: v.dispatch(x) for n, v in pros.items()},
    )
    return CoordinationResult(
        method="co-optimization",
        status="optimal",
        dispatch=dispatch,
        prices=y[balance],
        cost=system_cost(instance, dispatch),
        iterations=1,
        messages=2 * instance.agents,
        seconds=time.perf_counter() - began,
        primal_residual=float(np.linalg.norm(dispatch.imbalance(instance))),
        details={"solver_iterations": qp.iterations, "variables": prog.n, "rows": prog.m},
    )


# --- a price forecast every agent may know -----------------------------------------------------


def supply_at(instance: Instance, price: Array) -> Array:
    """Σ generators' output if each ran where its marginal cost meets `price` (per hour)."""
    total = np.zeros_like(price)
    for g in instance.generators:
        lo, hi = np.asarray(g.p_min), np.asarray(g.p_max)
        if g.a > 0:
            total += np.clip((price - g.b) / (2 * g.a), lo, hi)
        else:
            total += np.where(price > g.b, hi, lo)
    return total


def merit_order_forecast(instance: Instance) -> Array:
    """The price at which the generators would meet the load nobody steers (passive demand,
    prosumers' base electric demand and unshifted electric flexible demand): a naive forecast a
    coordinator can publish from public data."""
    load = np.asarray(instance.passive_demand, dtype=float).copy()
    for p in instance.prosumers:
        load += np.asarray(p.electric_demand)
        for f in p.flexible:
            if f.carrier == ELECTRICITY:
                load += np.asarray(f.profile)
    low = np.full(instance.hours, -instance.price_cap)
    high = np.full(instance.hours, instance.price_cap)
    for _ in range(80):  # bisection: supply rises with the price
        mid = (low + high) / 2
        short = supply_at(instance, mid) < load
        low, high = np.where(short, mid, low), np.where(short, high, mid)
    forecast: Array = (low + high) / 2
    return forecast


# --- 2. price-response (ADMM-like) -------------------------------------------------------------


@dataclass
class _ProsumerAgent:
    """A prosumer's own full-horizon QP (eq. 15), built once; each iteration changes only the
    price and penalty terms on its net power and starts PDLP from the last answer."""

    qp: Qp
    vars: ProsumerVars
    base_cost: Array
    quad: Array

    @classmethod
    def build(cls, instance: Instance, p: Prosumer, rho: float, eps: float) -> _ProsumerAgent:
        prog = Program()
        v = add_prosumer(prog, instance, p, 0, instance.hours, ProsumerState.start(p), rho / 2)
        _, _, c, quad = prog.arrays()
        return cls(Qp(prog, f"price-response agent {p.name}", eps), v, c.copy(), quad.copy())

    def respond(self, price: Array, target: Array, rho: float) -> tuple[Array, Array]:
        """max λ·P − carrier cost − ρ/2·‖P − target‖² : the net power and the whole solution."""
        c = self.base_cost.copy()
        c[self.vars.net] = -price - rho * target
        if self.quad[self.vars.net[0]] != rho / 2:
            self.quad[self.vars.net] = rho / 2
            self.qp.set_objective(c, self.quad)
        else:
            self.qp.set_objective(c)
        x, _ = self.qp.solve()
        return x[self.vars.net], x


def price_response(
    instance: Instance,
    max_iterations: int = 2000,
    primal_tol: float | None = None,
    dual_tol: float | None = None,
    rho: float | None = None,
    mu: float = 10.0,
    tau: float = 2.0,
    relaxation: float = 1.0,
    adapt_until: int = 100,
    eps: float = PDLP_EPS,
) -> CoordinationResult:
    """Seed 001 eqs. 14–18 in the exchange form of ADMM (Boyd et al. §7.3.2), with N agents and
    the passive load as agent N+1. Each iteration the coordinator sends every agent the prices
    λ and the imbalance r (supply − demand); each agent returns its best response with the
    penalty ρ/2·‖x − x^k + r^k/(N+1)‖² (eqs. 14, 15); then λ ← λ − ρ·r/(N+1) (eq. 17 taken on
    the mean imbalance: with the sum the step is N+1 times ADMM's and the prices oscillate).
    The primal residual is ‖r‖₂, the dual residual (eq. 18)
    s = ρ‖(x^k − r^k/(N+1)) − (x^{k−1} − r^{k−1}/(N+1))‖₂ over all agents; it stops when
    ‖r‖₂ ≤ primal_tol and s ≤ dual_tol. Defaults: the paper's 0.1 MW and 0.1 €/MWh, i.e. for a
    kW instance 0.01 kW and 0.0001 €/kWh. ρ follows Boyd §3.4.1 (×τ when the primal residual
    exceeds μ·s, ÷τ when s exceeds μ times it; the primal residual there is ‖r‖₂/√(N+1), the
    norm of the stacked consensus residual that s is measured against) during the first
    `adapt_until` iterations, then stays: left adapting, ρ can flip between two values for ever
    on the degenerate answers of storage and CHP/e-boiler switching (Boyd notes convergence
    needs ρ fixed eventually). At the iteration cap the result is "not-converged" with the last
    iterate and its residuals.

    Prices start at the merit-order forecast, agents' powers at zero, ρ at the generators' mean
    curvature 2a unless given. `relaxation` α ∈ (0, 2) is ADMM's over-relaxation (Boyd §3.4.3;
    1 is eqs. 14–18 as they stand). Generators answer in closed form (their problem is
    separable per hour); prosumers solve their QP with PDLP from their last answer."""
    began = time.perf_counter()
    T, M = instance.hours, instance.agents + 1
    primal_tol = (0.1 if instance.unit == "MW" else 0.01) if primal_tol is None else primal_tol
    dual_tol = 0.1 * EUR_PER_MWH[instance.unit] if dual_tol is None else dual_tol
    demand = np.asarray(instance.passive_demand)
    gens = instance.generators
    a = np.array([g.a for g in gens])[:, None]
    b = np.array([g.b for g in gens])[:, None]
    lo = np.array([g.p_min for g in gens])
    hi = np.array([g.p_max for g in gens])
    rho = float(np.mean(2 * a)) if rho is None else rho
    if rho <= 0 or not 0 < relaxation < 2:
        raise ValueError(f"rho {rho} must be positive and relaxation {relaxation} in (0, 2)")
    agents = [_ProsumerAgent.build(instance, p, rho, eps) for p in instance.prosumers]
    G = len(gens)
    price = merit_order_forecast(instance)
    x = np.zeros((instance.agents, T))  # generators first, then prosumers
    solutions: list[Array] = [np.zeros(0)] * len(agents)
    r = x.sum(0) - demand
    z = x - r / M  # each agent's penalty centre: x^k − r^k/(N+1) when relaxation is 1
    primal = dual = math.inf
    trace: list[tuple[float, float, float]] = []
    k = 0
    for k in range(1, max_iterations + 1):
        x[:G] = np.clip((price - b + rho * z[:G]) / (2 * a + rho), lo, hi)
        for i, agent in enumerate(agents):
            x[G + i], solutions[i] = agent.respond(price, z[G + i], rho)
        r = x.sum(0) - demand
        z_next = relaxation * (x - r / M) + (1 - relaxation) * z
        primal = float(np.linalg.norm(r))
        dual = rho * float(np.linalg.norm(z_next - z))
        z = z_next
        price = price - relaxation * rho * r / M
        trace.append((primal, dual, rho))
        if primal <= primal_tol and dual <= dual_tol:
            break
        stacked = primal / math.sqrt(M)
        if k < adapt_until and stacked > mu * dual:
            rho *= tau
        elif k < adapt_until and dual > mu * stacked:
            rho /= tau
    converged = primal <= primal_tol and dual <= dual_tol
    dispatch = Dispatch(
        generators={g.name: x[i] for i, g in enumerate(gens)},
        prosumers={
            p.name: agents[i].vars.dispatch(solutions[i]) for i, p in enumerate(instance.prosumers)
        },
    )
    return CoordinationResult(
        method="price-response",
        status="converged" if converged else "not-converged",
        dispatch=dispatch,
        prices=price,
        cost=system_cost(instance, dispatch),
        iterations=k,
        messages=2 * instance.agents * k,
        seconds=time.perf_counter() - began,
        primal_residual=primal,
        dual_residual=dual,
        details={
            "rho": rho,
            "trace": trace,
            "solver_iterations": sum(ag.qp.iterations for ag in agents),
        },
    )


# --- 3. market auction with optimizer bidding (Algorithm 1) ----------------------------------


@dataclass(frozen=True)
class BidCurve:
    """A prosumer's bid for one hour: `base` (its net demand even at the price cap; negative is
    supply), then blocks of extra demand, each bought only at or below its price."""

    base: float
    prices: Array  # descending
    sizes: Array


class _Satellite:
    """A prosumer running its own LP over the look-ahead at the forecast prices (eq. 21). Its
    stores end every look-ahead with at least their end energy, as they must end the horizon,
    so that it never plans with energy it would not have; its state (stores, flexible energy
    served) rolls forward hour by hour."""

    def __init__(
        self, instance: Instance, p: Prosumer, forecast: Array, lookahead: int, extra: list[float]
    ) -> None:
        self.instance, self.p, self.forecast, self.lookahead = instance, p, forecast, lookahead
        self.extra = extra
        self.state = ProsumerState.start(p)
        self.solves = 0
        T = instance.hours
        self.record = ProsumerDispatch(
            net=np.zeros(T),
            converter_input={cv.name: np.zeros(T) for cv in p.converters},
            flexible={f.name: np.zeros(T) for f in p.flexible},
            battery=StorageDispatch(*np.zeros((3, T))) if p.battery else None,
            heat_store=StorageDispatch(*np.zeros((3, T))) if p.heat_store else None,
        )

    def _open(self, t: int) -> None:
        end = min(t + self.lookahead, self.instance.hours)
        prog = Program()
        self.vars = add_prosumer(prog, self.instance, self.p, t, end, self.state)
        self.solver = pywraplp.Solver.CreateSolver("GLOP")
        error = self.solver.LoadModelFromProto(prog.proto())
        if error:
            raise SolveError(f"auction satellite {self.p.name}, hour {t}: {error}")
        self.x = self.solver.variables()
        self.t = t
        for i, tau in enumerate(range(t, end)):
            self._price(i, float(self.forecast[tau]))

    def _price(self, i: int, price: float) -> None:
        self.solver.Objective().SetCoefficient(self.x[int(self.vars.net[i])], -price)

    def _solve(self) -> Array:
        status = self.solver.Solve()
        self.solves += 1
        if status != pywraplp.Solver.OPTIMAL:
            raise SolveError(
                f"auction satellite {self.p.name}, hour {self.t}: GLOP status {status} "
                "(the window's LP has no optimum)"
            )
        return np.array([v.solution_value() for v in self.x])

    def candidates(self, t: int) -> list[float]:
        """Algorithm 1 lines 1–3: the price cap; the lowest forecast price in each flexible
        demand's window and in the look-ahead; for each other carrier the electricity price at
        which electric heat costs as much as heat from that carrier."""
        inst, f = self.instance, self.forecast
        end = min(t + self.lookahead, inst.hours)
        out = {
            inst.price_cap,
            float(f[t:end].min()),
            *(x for x in self.extra if x < inst.price_cap),
        }
        for fd in self.p.flexible:
            out.add(float(f[t : min(end, t + fd.shift_h + 1)].min()))
        electric = [c.heat_efficiency for c in self.p.converters if c.carrier == ELECTRICITY]
        for cv in self.p.converters:
            if cv.carrier != ELECTRICITY and cv.heat_efficiency and electric:
                ratio = max(electric) / cv.heat_efficiency
                out.add(min(inst.price_cap, ratio * inst.carrier_prices[cv.carrier][t]))
        return sorted(out, reverse=True)

    def bid(self, t: int) -> BidCurve:
        """Algorithm 1 lines 4–9: the net demand this hour at each candidate price (the others
        at the forecast), as increments while the price falls."""
        self._open(t)
        tie = 0.1 * EUR_PER_MWH[self.instance.unit]  # so that a tie goes to buying now
        prices: list[float] = []
        levels: list[float] = []
        for pi in self.candidates(t):
            self._price(0, pi - tie)
            q = -self._solve()[self.vars.net[0]]
            levels.append(max(q, levels[-1]) if levels else q)
            prices.append(pi)
        self._price(0, float(self.forecast[t]))
        sizes = np.diff(levels)
        keep = sizes > 1e-9
        return BidCurve(levels[0], np.asarray(prices[1:])[keep], sizes[keep])

    def settle(self, t: int, demand: float) -> None:
        """Takes the cleared net demand for hour t, re-plans the rest of the window with it and
        rolls its state forward."""
        net = self.x[int(self.vars.net[0])]
        net.SetBounds(-demand, -demand)
        x = self._solve()
        d = self.vars.dispatch(x, slice(0, 1))
        rec = self.record
        rec.net[t] = d.net[0]
        for name, v in d.converter_input.items():
            rec.converter_input[name][t] = v[0]
        for name, v in d.flexible.items():
            rec.flexible[name][t] = v[0]
        for mine, theirs in ((rec.battery, d.battery), (rec.heat_store, d.heat_store)):
            if mine is not None and theirs is not None:
                mine.charge[t], mine.discharge[t], mine.energy[t] = (
                    theirs.charge[0], theirs.discharge[0], theirs.energy[0],
                )  # fmt: skip
        self.state = ProsumerState(
            rec.battery.energy[t] if rec.battery else None,
            rec.heat_store.energy[t] if rec.heat_store else None,
            {k: float(x[v[0]]) for k, v in self.vars.level.items()},
        )


@dataclass(frozen=True)
class Clearing:
    generators: Array
    cleared: list[float]  # each bidder's net demand
    price: float
    shortfall: float  # demand left unserved (+) or supply left over (−): 0 unless infeasible


def clear_hour(
    instance: Instance, t: int, bids: Sequence[BidCurve], eps: float = PDLP_EPS
) -> Clearing:
    """The central market model for one hour (eqs. 19–20): maximise the accepted bids' value
    minus the generators' quadratic cost, subject to the balance; the price is the balance's
    dual. When the bids' inelastic parts cannot be balanced, the rest is left unserved (or
    unabsorbed) at the price cap rather than the market failing."""
    prog = Program()
    gens = prog.add_vars(
        len(instance.generators),
        np.array([g.p_min[t] for g in instance.generators]),
        np.array([g.p_max[t] for g in instance.generators]),
        np.array([g.b for g in instance.generators]),
        np.array([g.a for g in instance.generators]),
    )
    blocks = [prog.add_vars(len(b.sizes), 0.0, b.sizes, -b.prices) for b in bids]
    slack = prog.add_vars(2, 0.0, math.inf, instance.price_cap)  # unserved, left over
    fixed = instance.passive_demand[t] + sum(b.base for b in bids)
    cols = np.concatenate([gens, *blocks, slack])
    coefs = np.concatenate([np.ones(len(gens)), -np.ones(len(cols) - len(gens) - 2), [1.0, -1.0]])
    prog.add_rows(
        [(np.array([c]), float(v)) for c, v in zip(cols, coefs, strict=True)], fixed, fixed
    )
    x, y = Qp(prog, f"market clearing of hour {t}", eps).solve()
    cleared = [
        float(np.clip(b.base + x[blk].sum(), b.base, b.base + b.sizes.sum()))
        for b, blk in zip(bids, blocks, strict=True)
    ]
    return Clearing(x[gens], cleared, float(y[0]), float(x[slack[0]] - x[slack[1]]))


def market_auction(
    instance: Instance,
    forecast: Literal["merit-order", "perfect"] | Sequence[float] = "merit-order",
    lookahead: int = 24,
    extra_candidates: Sequence[float] = (),
    eps: float = PDLP_EPS,
) -> CoordinationResult:
    """Seed 001 Algorithm 1: every hour each prosumer bids the curve its own look-ahead model
    gives under the price forecast, the central model clears the hour with the generators'
    quadratic costs, each prosumer takes its cleared quantity and rolls its state on. No
    iterations; models stay private. `forecast`: the merit-order forecast (default), the
    co-optimization's prices ("perfect", a variant: it needs everyone's model) or given prices.
    `extra_candidates`: prices added to Algorithm 1's candidates in every bid (a variant: a
    finer curve). Messages: each hour every agent sends a bid and receives its result."""
    T = instance.hours
    if isinstance(forecast, str):
        if forecast == "perfect":
            guess = co_optimization(instance, eps).prices
        elif forecast == "merit-order":
            guess = merit_order_forecast(instance)
        else:
            raise ValueError(f"forecast {forecast!r}: use 'merit-order', 'perfect' or prices")
    else:
        guess = np.asarray(forecast, dtype=float)
        if guess.shape != (T,):
            raise ValueError(f"forecast has {guess.size} prices, need {T} (hours)")
    if lookahead < 1:
        raise ValueError(f"lookahead {lookahead}: at least one hour")
    began = time.perf_counter()  # the forecast is given, not part of the market's run time
    extra = [float(x) for x in extra_candidates]
    satellites = [_Satellite(instance, p, guess, lookahead, extra) for p in instance.prosumers]
    gen_out = np.zeros((len(instance.generators), T))
    prices = np.zeros(T)
    shortfall = np.zeros(T)
    blocks = 0
    for t in range(T):
        bids = [s.bid(t) for s in satellites]
        blocks += sum(1 + len(b.sizes) for b in bids)
        c = clear_hour(instance, t, bids, eps)
        gen_out[:, t], prices[t], shortfall[t] = c.generators, c.price, c.shortfall
        for s, q in zip(satellites, c.cleared, strict=True):
            s.settle(t, q)
    dispatch = Dispatch(
        generators={g.name: gen_out[i] for i, g in enumerate(instance.generators)},
        prosumers={s.p.name: s.record for s in satellites},
    )
    return CoordinationResult(
        method="market-auction",
        status="cleared",
        dispatch=dispatch,
        prices=prices,
        # energy left unserved or unabsorbed is valued at the price cap (value of lost load)
        cost=system_cost(instance, dispatch) + instance.price_cap * float(np.abs(shortfall).sum()),
        iterations=1,
        messages=2 * instance.agents * T,
        seconds=time.perf_counter() - began,
        primal_residual=float(np.linalg.norm(dispatch.imbalance(instance))),
        details={
            "clearings": T,
            "bid_blocks": blocks,
            "satellite_solves": sum(s.solves for s in satellites),
            "forecast": forecast if isinstance(forecast, str) else "given",
            "shortfall": float(np.abs(shortfall).sum()),
        },
    )


# --- by name -----------------------------------------------------------------------------------


@dataclass
class Method:
    """A coordination method in the registry: `run(instance)` with its default settings."""

    name: str
    fn: Callable[..., CoordinationResult]

    def run(self, instance: Instance, **options: Any) -> CoordinationResult:
        try:
            inspect.signature(self.fn).bind(instance, **options)
        except TypeError as exc:
            raise OptionError(f"{self.name}: {exc}") from None
        return self.fn(instance, **options)


for _name, _fn in (
    ("co-optimization", co_optimization),
    ("price-response", price_response),
    ("market-auction", market_auction),
):
    register_coordination(Method(_name, _fn))


def run(name: str, instance: Instance, **options: Any) -> CoordinationResult:
    """Runs the coordination method registered as `name` on `instance`."""
    return coordination_method(name).run(instance, **options)
