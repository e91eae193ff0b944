"""The grid check for UC3 (seed 004 §6 Validate): a copper-plate transformer check on a summed
load, and an AC power flow on pandapower's CIGRE low-voltage residential feeder.

Voltage limits default to EN 50160's ±10 % of nominal (0.90–1.10 p.u.), the statutory supply
limit seed 004 validates against. Some DSOs plan LV feeders to ±5 % (0.95–1.05 p.u.) to keep
room for the MV voltage and the house wiring; pass `v_min`/`v_max` for that. pandapower is
imported inside `power_flow` only: loading it takes seconds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

EN50160_PU = (0.90, 1.10)  # statutory: Un ± 10 % at the customer's connection
PLANNING_PU = (0.95, 1.05)  # a common LV planning band, tighter to leave room upstream
RESIDENTIAL_TRAFO = "Trafo R0-R1"  # 0.5 MVA, 20/0.4 kV (seed 002 §2.5)
RESIDENTIAL_LOAD_POINTS = ("R1", "R11", "R15", "R16", "R17", "R18")  # its loads' buses


# --- copper plate ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TransformerCheck:
    """Loading per period of one transformer feeding a copper plate (no lines, no losses)."""

    rating_kva: float
    threshold_pct: float
    loading_pct: list[float]

    @property
    def overloads(self) -> dict[int, float]:
        """Periods loaded above the threshold → their loading %."""
        return {t: x for t, x in enumerate(self.loading_pct) if x > self.threshold_pct}

    @property
    def peak_pct(self) -> float:
        return max(self.loading_pct, default=0.0)


def transformer_check(
    load_kw: Sequence[float],
    rating_kva: float,
    *,
    power_factor: float = 1.0,
    threshold_pct: float = 100.0,
) -> TransformerCheck:
    """Loading % = |P| / power factor / rating, per period of the summed load (kW; negative is
    back-flow, which loads the transformer just the same). Seed 002 counts an overload above
    95 % of the rating, seed 004 above the limit itself (100 %)."""
    if not math.isfinite(rating_kva) or rating_kva <= 0:
        raise ValueError(f"transformer rating {rating_kva} kVA: give a positive, finite rating")
    if not 0 < power_factor <= 1:
        raise ValueError(f"power factor {power_factor}: give one in (0, 1]")
    loading = []
    for t, kw in enumerate(load_kw):
        if not math.isfinite(kw):
            raise ValueError(f"load period {t}: {kw} kW is not a number")
        loading.append(100.0 * abs(kw) / power_factor / rating_kva)
    return TransformerCheck(rating_kva=rating_kva, threshold_pct=threshold_pct, loading_pct=loading)


# --- power flow ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    period: int
    element: str  # "line", "bus", "trafo", or "power flow" when no solution exists
    name: str  # pandapower's element name, e.g. "Line R1-R2", "Bus R15"
    value: float  # loading % for lines and transformers, p.u. for bus voltages
    limit: float

    def __str__(self) -> str:
        if self.element == "power flow":
            return f"period {self.period}: no power flow solution (voltage collapse?)"
        unit = " p.u." if self.element == "bus" else " %"
        side = "below" if self.element == "bus" and self.value < self.limit else "above"
        return (
            f"period {self.period}: {self.name} at {self.value:.4g}{unit}, {side} "
            f"{self.limit:g}{unit}"
        )


@dataclass(frozen=True)
class FlowPeriod:
    """One period's power flow on the residential feeder (NaN-free; empty if not solved)."""

    period: int
    converged: bool
    line_loading_pct: dict[str, float]
    bus_vm_pu: dict[str, float]  # the LV buses R1–R18
    trafo_loading_pct: float
    trafo_p_kw: float  # active power drawn from the MV side, losses included


@dataclass(frozen=True)
class GridCheck:
    periods: list[FlowPeriod]
    violations: list[Violation]
    v_min: float
    v_max: float
    loading_limit_pct: float

    @property
    def ok(self) -> bool:
        return not self.violations


def residential_loads_kw() -> dict[str, float]:
    """The CIGRE LV residential feeder's load points and their kW in pandapower's network (R1
    is an apartment block of 190 kW; R11, R15–R18 smaller groups)."""
    net = _residential_net()
    loads = zip(net.load.name, net.load.p_mw, strict=True)
    return {str(n).removeprefix("Load "): 1000.0 * float(p) for n, p in loads}


def power_flow(
    loads_kw: Mapping[str, Sequence[float]],
    *,
    power_factor: float = 0.95,
    v_min: float = EN50160_PU[0],
    v_max: float = EN50160_PU[1],
    loading_limit_pct: float = 100.0,
) -> GridCheck:
    """AC power flow per period on the CIGRE LV residential feeder (its 0.5 MVA transformer and
    lines; the industrial and commercial feeders are left out) with the given active power per
    load point and period (`{"R1": [kW, ...], "R11": [...], ...}`; negative is export; a load
    point not named carries nothing). Reactive power follows at a constant `power_factor`
    (CIGRE's own residential loads: 0.95). Lists bus voltages outside [v_min, v_max], and lines
    and the transformer loaded above `loading_limit_pct`; a period with no solution is one
    violation of its own, not an error."""
    if not v_min < 1.0 < v_max:
        raise ValueError(f"voltage band [{v_min}, {v_max}] p.u. must contain 1.0")
    if not 0 < power_factor <= 1:
        raise ValueError(f"power factor {power_factor}: give one in (0, 1]")
    import pandapower as pp  # heavy: only when a power flow is asked for

    net = _residential_net()
    index = {
        str(n).removeprefix("Load "): i for i, n in zip(net.load.index, net.load.name, strict=True)
    }
    horizon = _horizon(loads_kw, index)
    tan_phi = math.tan(math.acos(power_factor))
    lv = net.bus.index[net.bus.vn_kv < 1.0]
    trafo = int(net.trafo.index[net.trafo.name == RESIDENTIAL_TRAFO][0])

    periods: list[FlowPeriod] = []
    violations: list[Violation] = []
    for t in range(horizon):
        p_mw = dict.fromkeys(net.load.index, 0.0)
        for name, series in loads_kw.items():
            p_mw[index[name]] = series[t] / 1000.0
        net.load["p_mw"] = [p_mw[i] for i in net.load.index]
        net.load["q_mvar"] = net.load.p_mw * tan_phi
        try:
            pp.runpp(net, numba=False)
        except pp.LoadflowNotConverged:
            periods.append(FlowPeriod(t, False, {}, {}, math.nan, math.nan))
            violations.append(Violation(t, "power flow", "", math.nan, math.nan))
            continue
        lines = {
            str(n): float(x)
            for n, x in zip(net.line.name, net.res_line.loading_percent, strict=True)
        }
        buses = {str(net.bus.name.at[b]): float(net.res_bus.vm_pu.at[b]) for b in lv}
        trafo_pct = float(net.res_trafo.loading_percent.at[trafo])
        periods.append(
            FlowPeriod(
                period=t,
                converged=True,
                line_loading_pct=lines,
                bus_vm_pu=buses,
                trafo_loading_pct=trafo_pct,
                trafo_p_kw=1000.0 * float(net.res_trafo.p_hv_mw.at[trafo]),
            )
        )
        violations += _violations(t, lines, buses, trafo_pct, v_min, v_max, loading_limit_pct)
    return GridCheck(periods, violations, v_min, v_max, loading_limit_pct)


def _violations(
    t: int,
    lines: dict[str, float],
    buses: dict[str, float],
    trafo_pct: float,
    v_min: float,
    v_max: float,
    limit_pct: float,
) -> list[Violation]:
    out = [Violation(t, "line", n, x, limit_pct) for n, x in lines.items() if x > limit_pct]
    if trafo_pct > limit_pct:
        out.append(Violation(t, "trafo", RESIDENTIAL_TRAFO, trafo_pct, limit_pct))
    for n, v in buses.items():
        if v < v_min:
            out.append(Violation(t, "bus", n, v, v_min))
        elif v > v_max:
            out.append(Violation(t, "bus", n, v, v_max))
    return out


def _horizon(loads_kw: Mapping[str, Sequence[float]], index: Mapping[str, Any]) -> int:
    lengths = set()
    for name, series in loads_kw.items():
        if name not in index:
            raise ValueError(
                f"load point {name!r} is not on the CIGRE LV residential feeder; "
                f"choose from {', '.join(index)}"
            )
        for t, kw in enumerate(series):
            if not math.isfinite(kw):
                raise ValueError(f"load point {name!r} period {t}: {kw} kW is not a number")
        lengths.add(len(series))
    if len(lengths) > 1:
        raise ValueError(f"load series of different lengths: {sorted(lengths)} periods")
    return lengths.pop() if lengths else 0


def _residential_net() -> Any:
    """pandapower's CIGRE LV network cut down to the residential feeder: the MV slack bus, the
    R0-R1 transformer, buses R1–R18 and their loads."""
    import pandapower.networks as pn
    from pandapower.toolbox import drop_buses

    net = pn.create_cigre_network_lv()
    keep = net.bus.name.str.fullmatch(r"Bus (0|R\d+)")
    drop_buses(net, net.bus.index[~keep])
    return net
