"""KPIs per day of a plan and of its baseline: energy bill, PV self-consumption, peak import and
comfort violations, as plain JSON-ready values."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from homeflex.clock import PTU_SECONDS
from homeflex.edge.planner.baseline import baseline
from homeflex.edge.planner.inputs import PlanInputs
from homeflex.edge.planner.planner import Plan
from homeflex.edge.planner.tariff import KWH_PER_W_PTU, ptu_costs

COMFORT_SERIES = "comfort_violation_kh"  # the heat pump's series, K·h per PTU


@dataclass(frozen=True)
class DayKpis:
    day: str  # ISO date, in the time zone of the plan's start
    ptus: int
    bill_eur: float  # import bought minus export sold
    import_kwh: float
    export_kwh: float
    pv_kwh: float  # produced (after curtailment)
    pv_used_kwh: float  # of which used in the home (not exported)
    self_consumption: float | None  # pv_used / pv; None on a day without PV production
    peak_import_w: float
    comfort_violation_kh: float


def daily_kpis(inputs: PlanInputs, plan: Plan) -> list[DayKpis]:
    costs = ptu_costs(inputs.import_price, inputs.export_price, plan.import_w, plan.export_w)
    pv_ids = {d.id for d in inputs.devices if d.kind == "pv"}
    # a PV device's power is its production with the sign of a consumption
    pv = [-sum(d.power_w[t] for d in plan.devices if d.device in pv_ids) for t in range(plan.ptus)]
    comfort = [
        sum(d.series[COMFORT_SERIES][t] for d in plan.devices if COMFORT_SERIES in d.series)
        for t in range(plan.ptus)
    ]
    days: dict[str, list[int]] = {}
    for t in range(plan.ptus):
        day = (inputs.start + timedelta(seconds=t * PTU_SECONDS)).date().isoformat()
        days.setdefault(day, []).append(t)
    out = []
    for day, ts in days.items():
        pv_kwh = KWH_PER_W_PTU * sum(pv[t] for t in ts)
        used_kwh = KWH_PER_W_PTU * sum(pv[t] - min(pv[t], plan.export_w[t]) for t in ts)
        out.append(
            DayKpis(
                day=day,
                ptus=len(ts),
                bill_eur=sum(costs[t] for t in ts),
                import_kwh=KWH_PER_W_PTU * sum(plan.import_w[t] for t in ts),
                export_kwh=KWH_PER_W_PTU * sum(plan.export_w[t] for t in ts),
                pv_kwh=pv_kwh,
                pv_used_kwh=used_kwh,
                self_consumption=used_kwh / pv_kwh if pv_kwh > 1e-9 else None,
                peak_import_w=max(plan.import_w[t] for t in ts),
                comfort_violation_kh=sum(comfort[t] for t in ts),
            )
        )
    return out


def report(inputs: PlanInputs, plan: Plan) -> dict[str, Any]:
    """The plan's KPIs per day next to the baseline's (JSON-serialisable)."""
    return {
        "plan": [asdict(k) for k in daily_kpis(inputs, plan)],
        "baseline": [asdict(k) for k in daily_kpis(inputs, baseline(inputs))],
    }
