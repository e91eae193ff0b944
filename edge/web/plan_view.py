"""The plan as the owner reads it: each device's runs (when it draws or gives power), each with the
reason the planner had for it in the owner's terms (price, sun, the neighbourhood, a deadline,
comfort), the expected cost against the baseline (what the home would pay with no planner), and
a Gantt-like SVG drawn on the server.

The reasons are read from the plan's own inputs, not guessed: a run is "cheap power" only when
its import price is below the average over the hours the device could have run, "sun" only when
the PV forecast then exceeds the rest of the house, "neighbourhood" only when an order or request
binds those PTUs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from html import escape

from homeflex.clock import PTU_SECONDS
from homeflex.edge.planner.baseline import baseline
from homeflex.edge.planner.devices.appliance import ApplianceSpec
from homeflex.edge.planner.devices.ev import EvSpec
from homeflex.edge.planner.devices.pv import PvSpec
from homeflex.edge.planner.inputs import PlanInputs, Request
from homeflex.edge.planner.planner import Plan
from homeflex.edge.planner.tariff import KWH_PER_W_PTU

ACTIVE_W = 50.0  # a device drawing or giving less than this is idle in that PTU
CHEAPER_EUR = 0.005  # €/kWh below the window's average that counts as "cheaper"
SUNNY = 0.5  # share of a run's power the PV surplus must cover to call it "sun"
KINDS = {"ev": "Car", "heat_pump": "Heat pump", "battery": "Battery", "pv": "Solar panels",
         "appliance": "Appliance"}  # fmt: skip


@dataclass(frozen=True)
class Run:
    device: str
    kind: str
    first: int  # PTU index in the plan
    end: int  # one past the last
    mean_w: float  # + drawn, − given (PV production, battery discharge)
    energy_kwh: float
    price_eur_kwh: float  # mean import price over the run
    reason: str


@dataclass(frozen=True)
class PlanView:
    start: float
    ptus: int
    status: str
    cost_eur: float
    baseline_eur: float
    runs: list[Run]
    devices: list[tuple[str, str]]  # (id, kind) in the plan's order
    outcomes: list[str]  # each order or request the plan could not meet, with why

    @property
    def saving_eur(self) -> float:
        return self.baseline_eur - self.cost_eur

    def at(self, ptu: int) -> float:
        return self.start + ptu * PTU_SECONDS


def view(plan: Plan, inputs: PlanInputs) -> PlanView:
    kinds = {d.id: d.kind for d in inputs.devices}
    pv_w = [0.0] * plan.ptus  # production forecast, W
    for d in inputs.devices:
        if isinstance(d, PvSpec):
            pv_w = [a + b for a, b in zip(pv_w, d.forecast_w, strict=True)]
    surplus = [pv_w[t] - inputs.base_load_w[t] for t in range(plan.ptus)]
    runs = []
    for schedule in plan.devices:
        kind = kinds.get(schedule.device, "")
        for first, end in _spans(schedule.power_w):
            power = schedule.power_w[first:end]
            mean_w = sum(power) / len(power)
            price = sum(inputs.import_price[first:end]) / (end - first)
            run = Run(schedule.device, kind, first, end, mean_w,
                      KWH_PER_W_PTU * sum(power), price, "")  # fmt: skip
            why = _reason(run, inputs, surplus, pv_w, schedule.power_w)
            runs.append(replace(run, reason=why))
    runs.sort(key=lambda r: (r.first, r.device))
    missed = [f"{r.kind} {r.id}: {r.reason}" for r in plan.requests if not r.met]
    return PlanView(
        start=plan.start,
        ptus=plan.ptus,
        status=plan.status,
        cost_eur=plan.energy_cost_eur,
        baseline_eur=baseline(inputs).energy_cost_eur,
        runs=runs,
        devices=[(d.device, kinds.get(d.device, "")) for d in plan.devices],
        outcomes=missed,
    )


def _spans(power_w: list[float]) -> list[tuple[int, int]]:
    """Runs of PTUs in which the device is active in the same direction."""
    spans: list[tuple[int, int]] = []
    sign = 0
    for t, w in enumerate([*power_w, 0.0]):
        now = 0 if abs(w) < ACTIVE_W else (1 if w > 0 else -1)
        if now != sign:
            if sign != 0:
                spans[-1] = (spans[-1][0], t)
            if now != 0:
                spans.append((t, t + 1))
            sign = now
    return spans


def _binding(inputs: PlanInputs, first: int, end: int) -> list[Request]:
    lo = inputs.start.timestamp() + first * PTU_SECONDS
    hi = inputs.start.timestamp() + end * PTU_SECONDS
    return [
        r
        for r in [*inputs.orders, *inputs.requests]
        if r.start.timestamp() < hi and r.end.timestamp() > lo
    ]


def _window(inputs: PlanInputs, device: str) -> tuple[int, int]:
    """The PTUs the device could have run in: the car's stay, the appliance's window, else the
    whole plan."""
    start = inputs.start.timestamp()
    spec = next(d for d in inputs.devices if d.id == device)

    def index(instant: datetime) -> int:
        return max(0, min(inputs.ptus, round((instant.timestamp() - start) / PTU_SECONDS)))

    if isinstance(spec, EvSpec):
        return index(spec.arrive), index(spec.depart)
    if isinstance(spec, ApplianceSpec):
        return index(spec.earliest_start), index(spec.latest_finish)
    return 0, inputs.ptus


def _reason(
    run: Run, inputs: PlanInputs, surplus: list[float], pv_w: list[float], power_w: list[float]
) -> str:
    span = range(run.first, run.end)
    bounds = _binding(inputs, run.first, run.end)
    if run.kind == "pv":
        forecast = sum(pv_w[t] for t in span)
        made = -sum(power_w[t] for t in span)
        if made < forecast - ACTIVE_W * len(span):
            export = min(inputs.export_price[t] for t in span)
            return (f"held back to {made / forecast:.0%} of the forecast: selling pays "
                    f"{export:.2f} €/kWh then, or the grid connection is full")  # fmt: skip
        return "the sun: production as forecast"
    for r in bounds:
        if r.min_net_w is not None and run.mean_w > 0:
            return f"the neighbourhood: {r.kind} {r.id} asks the home to take power then"
        if r.max_net_w is not None and run.mean_w < 0:
            return f"the neighbourhood: {r.kind} {r.id} asks the home to draw less then"
    lo, hi = _window(inputs, run.device)
    window = inputs.import_price[lo:hi] or inputs.import_price
    average = sum(window) / len(window)
    if run.mean_w < 0:  # the battery (or car) gives power back
        return (f"power is dear then: {run.price_eur_kwh:.2f} €/kWh against "
                f"{average:.2f} on average")  # fmt: skip
    sun = sum(max(0.0, surplus[t]) for t in span) / len(span)
    if sun >= SUNNY * run.mean_w:
        return f"the sun: the panels should give {sun / 1000:.1f} kW more than the house uses"
    if run.price_eur_kwh <= average - CHEAPER_EUR:
        return (f"cheaper power: {run.price_eur_kwh:.2f} €/kWh against {average:.2f} "
                "on average over the hours it could run")  # fmt: skip
    if run.kind == "ev":
        return "to be charged by your ready-by time"
    if run.kind == "appliance":
        return "to be done by your finish-by time"
    if run.kind == "heat_pump":
        return "to keep the rooms within your comfort band"
    return "the cheapest plan over the whole day"


# --- the chart -----------------------------------------------------------------------------------

ROW_H, LABEL_W, CHART_W, TOP = 28, 110, 600, 30
COLOURS = {1: "#0b5394", -1: "#2e7d32"}  # drawing: dark blue; giving: dark green (both ≥ 7:1)


def local(instant: float, utc_offset_h: float) -> datetime:
    return datetime.fromtimestamp(instant + utc_offset_h * 3600, UTC)


def span_text(pv: PlanView, run: Run, utc_offset_h: float) -> str:
    """ "Mon 18:15–19:30", local time."""
    begin, end = local(pv.at(run.first), utc_offset_h), local(pv.at(run.end), utc_offset_h)
    return f"{begin:%a %H:%M}–{end:%H:%M}"


def gantt_svg(pv: PlanView, utc_offset_h: float) -> str:
    """One row per device, a bar per run (drawing above, giving back marked), hour ticks in local
    time. Text in <title> for each bar: a screen reader and a hover both tell the reason."""
    rows = {dev: i for i, (dev, _) in enumerate(pv.devices)}
    height = TOP + ROW_H * max(1, len(rows)) + 10
    width = LABEL_W + CHART_W
    x_per_ptu = CHART_W / pv.ptus
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" '
        'role="img" aria-labelledby="plan-title plan-desc" class="chart">',
        '<title id="plan-title">The plan, device by device</title>',
        f'<desc id="plan-desc">{len(pv.runs)} runs of {len(rows)} devices over '
        f"{pv.ptus / 4:g} hours; the table below lists each with its reason.</desc>",
    ]
    for t in range(0, pv.ptus + 1, 4):
        clock = local(pv.at(t), utc_offset_h)
        x = LABEL_W + t * x_per_ptu
        out.append(f'<line x1="{x:.1f}" y1="{TOP - 6}" x2="{x:.1f}" y2="{height - 10}" '
                   'stroke="#bbb" stroke-width="1"/>')  # fmt: skip
        if clock.hour % 3 == 0 and t <= pv.ptus - 8:  # room for the label
            out.append(f'<text x="{x + 2:.1f}" y="{TOP - 10}" font-size="12" fill="#111">'
                       f"{clock:%H:%M}</text>")  # fmt: skip
    for dev, i in rows.items():
        y = TOP + i * ROW_H
        out.append(f'<text x="4" y="{y + 18}" font-size="13" fill="#111">{escape(dev)}</text>')
    for r in pv.runs:
        y = TOP + rows[r.device] * ROW_H + 4
        x = LABEL_W + r.first * x_per_ptu
        w = max(1.0, (r.end - r.first) * x_per_ptu)
        sign = 1 if r.mean_w > 0 else -1
        when = span_text(pv, r, utc_offset_h)
        out.append(
            f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{ROW_H - 8}" '
            f'fill="{COLOURS[sign]}"><title>{escape(r.device)} {when}: '
            f"{abs(r.mean_w) / 1000:.1f} kW {'drawn' if sign > 0 else 'given'}; "
            f"{escape(r.reason)}</title></rect>"
        )
    out.append("</svg>")
    return "\n".join(out)
