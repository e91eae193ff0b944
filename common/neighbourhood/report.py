"""The demo's report: what the neighbourhood did on its day, from what the processes left behind
(each gateway's store, plan and agent state, the cloud agents' status, the price file), as KPIs,
PNG charts and one HTML page that needs nothing but a browser (no scripts, no external assets).

The transformer's load "before" is the first D-prognosis the DSO checked (the homes' day-ahead
plans, summed); "planned after" is that prognosis with the flexibility the DSO bought; "metered"
is the sum of the homes' meters as their gateways stored them. A home's bill is its metered
import and export at the day's prices; its "baseline" is the planner's counterfactual for the
same day (every device runs when its user wants it), from the plan it followed at midnight.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from homeflex.clock import PTU_SECONDS
from homeflex.configfile import parse_config
from homeflex.edge.home import PriceFile
from homeflex.edge.planner.forecast import resample
from homeflex.edge.store import Store
from homeflex.neighbourhood.scenario import AGGREGATOR, DSO, Neighbourhood, day_start

PTUS = 96
H_PER_PTU = PTU_SECONDS / 3600


@dataclass
class HomeResult:
    name: str
    devices: list[str]
    metered_kw: list[float | None]
    import_kwh: float
    export_kwh: float
    pv_kwh: float
    bill_eur: float
    plan_bill_eur: float | None
    baseline_bill_eur: float | None
    p_plan_kw: list[float | None]
    ordered: dict[int, float]  # PTU → kW less, summed over the home's orders
    flex_eur: float  # what its orders are worth at their prices
    earned_eur: float  # settled
    sent: int = 0
    resent: int = 0
    failed: int = 0


@dataclass
class Result:
    day: str
    limit_kw: float
    import_price: list[float]
    export_price: list[float]
    before_kw: list[float] | None
    after_kw: list[float] | None
    metered_kw: list[float | None]
    homes: list[HomeResult]
    dso_orders: list[dict[str, Any]]
    rounds: list[dict[str, Any]]
    cloud_messages: dict[str, dict[str, int]] = field(default_factory=dict)

    def kpis(self) -> dict[str, Any]:
        metered = [kw for kw in self.metered_kw if kw is not None]
        pv = sum(h.pv_kwh for h in self.homes)
        exported_pv = sum(min(h.export_kwh, h.pv_kwh) for h in self.homes)
        planned = [h for h in self.homes if h.plan_bill_eur is not None]

        def over(series: list[float] | list[float | None] | None) -> int | None:
            if series is None:
                return None
            return sum(1 for kw in series if kw is not None and kw > self.limit_kw + 1e-6)

        return {
            "bill_eur": sum(h.bill_eur for h in self.homes),
            "plan_bill_eur": sum(h.plan_bill_eur or 0.0 for h in planned),
            "baseline_bill_eur": sum(h.baseline_bill_eur or 0.0 for h in planned),
            "homes_with_baseline": len(planned),
            "flex_eur": sum(h.flex_eur for h in self.homes),
            "earned_eur": sum(h.earned_eur for h in self.homes),
            "peak_before_kw": max(self.before_kw) if self.before_kw else None,
            "peak_after_kw": max(self.after_kw) if self.after_kw else None,
            "peak_metered_kw": max(metered) if metered else None,
            "congested_before": over(self.before_kw),
            "congested_after": over(self.after_kw),
            "congested_metered": over(self.metered_kw),
            "self_consumption": None if pv <= 0 else 1 - exported_pv / pv,
            "sent": sum(h.sent for h in self.homes)
            + sum(m.get("sent", 0) for m in self.cloud_messages.values()),
            "resent": sum(h.resent for h in self.homes)
            + sum(m.get("resent", 0) for m in self.cloud_messages.values()),
            "failed": sum(h.failed for h in self.homes)
            + sum(m.get("failed", 0) for m in self.cloud_messages.values()),
        }


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def day_prices(nb: Neighbourhood) -> tuple[list[float], list[float]]:
    series = parse_config(nb.prices_file.read_text(), PriceFile, str(nb.prices_file))
    first = round((day_start(nb.day).timestamp() - series.start.timestamp()) / PTU_SECONDS)
    imp = resample(series.import_price, series.series_step_s)[first : first + PTUS]
    exp = resample(series.export_price, series.series_step_s)[first : first + PTUS]
    return list(imp), list(exp)


def _metered(store: Store, device: str, day0: float) -> list[tuple[float, float] | None]:
    """(import kWh, export kWh) per PTU of the day, None where the store has no row."""
    out: list[tuple[float, float] | None] = [None] * PTUS
    for row in store.ptu_energy(device, day0, day0 + PTUS * PTU_SECONDS):
        t = round((row.ptu_start - day0) / PTU_SECONDS)
        if 0 <= t < PTUS:
            out[t] = (row.import_wh / 1000, row.export_wh / 1000)
    return out


def home_result(nb: Neighbourhood, name: str, imp: list[float], exp: list[float]) -> HomeResult:
    d = nb.home_dir(name)
    day0 = day_start(nb.day).timestamp()
    store = Store.open(d / "gateway" / "store.db", read_only=True)
    try:
        meter = _metered(store, "meter", day0)
        pv_rows = _metered(store, "pv", day0)
    finally:
        store.close()
    bill = sum(m[0] * imp[t] - m[1] * exp[t] for t, m in enumerate(meter) if m is not None)
    agent = _json(d / "gateway" / "agent.json") or {}
    ordered: dict[int, float] = {}
    flex_eur = 0.0
    for o in agent.get("orders", {}).values():
        for ptu, kw in o["order"]["profile_kw"].items():
            ordered[int(ptu)] = ordered.get(int(ptu), 0.0) + kw
            flex_eur += kw * H_PER_PTU * o["order"]["price"]
    p_plan: list[float | None] = [None] * PTUS
    for a in agent.get("answered", {}).values():
        if a["prices"]["day"] == nb.day.isoformat():
            for k, w in enumerate(a.get("day_ahead_w") or a["net_w"]):
                p_plan[a["first_ptu"] + k] = w / 1000  # as first sent: the day-ahead P-plan
    earned = sum(s["payment_eur"] - s["penalty_eur"] for s in agent.get("settlements", {}).values())
    plan_bill = baseline_bill = None
    snapshot = _json(d / "plan-at-midnight.json")
    if snapshot is not None:
        kpis = snapshot.get("kpis", {})
        for mine, key in ((0, "plan"), (1, "baseline")):
            day = next((k for k in kpis.get(key, []) if k["day"] == nb.day.isoformat()), None)
            if day is not None and mine == 0:
                plan_bill = day["bill_eur"]
            elif day is not None:
                baseline_bill = day["bill_eur"]
    status = (_json(d / "gateway" / "status.json") or {}).get("agent", {})
    spec = _json_yaml(d / "home.yaml")
    return HomeResult(
        name=name,
        devices=[dev["id"] for dev in spec.get("devices", [])],
        metered_kw=[None if m is None else (m[0] - m[1]) / H_PER_PTU for m in meter],
        import_kwh=sum(m[0] for m in meter if m is not None),
        export_kwh=sum(m[1] for m in meter if m is not None),
        pv_kwh=sum(m[1] - m[0] for m in pv_rows if m is not None and m[1] > m[0]),
        bill_eur=bill,
        plan_bill_eur=plan_bill,
        baseline_bill_eur=baseline_bill,
        p_plan_kw=p_plan,
        ordered=ordered,
        flex_eur=flex_eur,
        earned_eur=earned,
        sent=status.get("sent", 0),
        resent=status.get("resent", 0),
        failed=status.get("failed", 0),
    )


def _json_yaml(path: Path) -> dict[str, Any]:
    import yaml

    data = yaml.safe_load(path.read_text())
    return data if isinstance(data, dict) else {}


def collect(nb: Neighbourhood) -> Result:
    imp, exp = day_prices(nb)
    homes = [home_result(nb, n, imp, exp) for n in nb.home_names()]
    metered: list[float | None] = []
    for t in range(PTUS):
        values = [h.metered_kw[t] for h in homes]
        metered.append(None if any(v is None for v in values) else sum(v or 0.0 for v in values))
    dso = _json(nb.workdir / "cloud" / DSO / "status.json") or {}
    agg = _json(nb.workdir / "cloud" / AGGREGATOR / "status.json") or {}
    checks = [c for c in dso.get("checks", []) if c["day"] == nb.day.isoformat()]
    first = checks[0] if checks else None
    last = next((c for c in reversed(checks) if c["orders"]), first)
    return Result(
        day=nb.day.isoformat(),
        limit_kw=nb.limit_kw,
        import_price=imp,
        export_price=exp,
        before_kw=first["prognosis_kw"] if first else None,
        after_kw=last["after_kw"] if last else None,
        metered_kw=metered,
        homes=homes,
        dso_orders=[o for c in checks for o in c["orders"]],
        rounds=agg.get("rounds", []),
        cloud_messages={
            name: s.get("messages", {}) for name, s in ((AGGREGATOR, agg), (DSO, dso)) if s
        },
    )


# --- charts ----------------------------------------------------------------------------------


def _hours() -> list[float]:
    return [(t + 0.5) * H_PER_PTU + 1 for t in range(PTUS)]  # local time (UTC+1), mid-PTU


def _clock_axis(ax: Any) -> None:
    """The market day runs from 00:00 to 24:00 UTC, 01:00 to 01:00 local: label hours on the
    clock."""
    ticks = list(range(1, 26, 3))
    ax.set_xlim(1, 25)
    ax.set_xticks(ticks, [f"{h % 24:02d}:00" for h in ticks])


def charts(result: Result, out: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = {}
    hours = _hours()
    fig, ax = plt.subplots(figsize=(10, 4.2))
    if result.before_kw:
        ax.step(
            hours, result.before_kw, "--", where="mid", color="#b35806", label="D-prognosis before"
        )
    if result.after_kw:
        ax.step(hours, result.after_kw, where="mid", color="#542788", label="planned after orders")
    metered = [float("nan") if v is None else v for v in result.metered_kw]
    ax.step(hours, metered, where="mid", color="#1b7837", label="metered")
    ax.axhline(result.limit_kw, color="#d73027", linewidth=1.5, label="transformer limit")
    ax.set(xlabel="local time", ylabel="kW", title="Transformer load")
    _clock_axis(ax)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "transformer.png", dpi=90)
    plt.close(fig)
    files["transformer"] = "transformer.png"

    fig, ax = plt.subplots(figsize=(10, 2.8))
    ax.step(hours, result.import_price, where="mid", label="import")
    ax.step(hours, result.export_price, where="mid", label="export")
    ax.set(xlabel="local time", ylabel="€/kWh", title="Day-ahead prices")
    _clock_axis(ax)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "prices.png", dpi=90)
    plt.close(fig)
    files["prices"] = "prices.png"

    cols = 2
    rows = (len(result.homes) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(10, 2.0 * rows), sharex=True, squeeze=False)
    for ax, h in zip(axes.flat, result.homes, strict=False):
        plan = [float("nan") if v is None else v for v in h.p_plan_kw]
        got = [float("nan") if v is None else v for v in h.metered_kw]
        ax.step(hours, plan, where="mid", color="#542788", linewidth=1, label="day-ahead P-plan")
        ax.step(hours, got, where="mid", color="#1b7837", linewidth=1, label="metered")
        for ptu in h.ordered:
            ax.axvspan(1 + ptu * H_PER_PTU, 1 + (ptu + 1) * H_PER_PTU, color="#fdb863", alpha=0.5)
        ax.set_title(f"{h.name}: {', '.join(x for x in h.devices if x != 'meter')}", fontsize=8)
        _clock_axis(ax)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(result.homes) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="upper left")
    fig.supylabel("kW (import +)")
    fig.supxlabel("local time; orange: PTUs with a flexibility order")
    fig.tight_layout()
    fig.savefig(out / "homes.png", dpi=80)
    plt.close(fig)
    files["homes"] = "homes.png"
    return files


# --- the page --------------------------------------------------------------------------------


def _eur(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f} €"


def _kw(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f} kW"


def render(result: Result, files: dict[str, str], wall_s: float | None) -> str:
    k = result.kpis()
    saving = k["baseline_bill_eur"] - k["plan_bill_eur"]
    sc = "–" if k["self_consumption"] is None else f"{100 * k['self_consumption']:.0f} %"
    rows = [
        ("Homes", f"{len(result.homes)}"),
        ("Transformer limit", _kw(result.limit_kw)),
        ("Peak: D-prognosis before / planned after / metered",
         f"{_kw(k['peak_before_kw'])} / {_kw(k['peak_after_kw'])} / {_kw(k['peak_metered_kw'])}"),
        ("PTUs over the limit: before / planned after / metered",
         f"{k['congested_before']} / {k['congested_after']} / {k['congested_metered']}"),
        ("Bills, metered (all homes)", _eur(k["bill_eur"])),
        (f"Planned bill against the baseline ({k['homes_with_baseline']} homes)",
         f"{_eur(k['plan_bill_eur'])} against {_eur(k['baseline_bill_eur'])}: "
         f"{_eur(saving)} saved"),
        ("Flexibility sold to the DSO (homes' orders at their prices)", _eur(k["flex_eur"])),
        ("Settled with the homes", _eur(k["earned_eur"])),
        ("PV self-consumption", sc),
        ("Agent messages sent / resent / never acknowledged",
         f"{k['sent']} / {k['resent']} / {k['failed']}"),
    ]  # fmt: skip
    if wall_s is not None:
        rows.append(("Demo wall time", f"{wall_s:.0f} s"))
    kpi_html = "\n".join(
        f"<tr><th scope=row>{html.escape(a)}</th><td>{html.escape(b)}</td></tr>" for a, b in rows
    )
    home_rows = "\n".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(c)}</td>"
            for c in (
                h.name,
                ", ".join(d for d in h.devices if d != "meter"),
                f"{h.import_kwh:.1f} / {h.export_kwh:.1f}",
                _eur(h.bill_eur),
                _eur(h.plan_bill_eur),
                _eur(h.baseline_bill_eur),
                f"{sum(h.ordered.values()) * H_PER_PTU:.2f} kWh" if h.ordered else "–",
                _eur(h.flex_eur) if h.ordered else "–",
                f"{h.sent} / {h.resent} / {h.failed}",
            )
        )
        + "</tr>"
        for h in result.homes
    )
    orders = "\n".join(
        f"<li>{html.escape(o['id'])}: {o['kwh']:.2f} kWh from {html.escape(o['aggregator'])} at "
        f"{o['price']:.3f} €/kWh ({o['eur']:.2f} €)</li>"
        for o in result.dso_orders
    )
    rounds = "\n".join(
        f"<li>{html.escape(r['id'])}: {r['answers']} answers"
        + (f", missing {html.escape(', '.join(r['missing']))}" if r.get("missing") else "")
        + "</li>"
        for r in result.rounds
    )
    made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8>
<meta name=viewport content="width=device-width, initial-scale=1">
<title>Homeflex neighbourhood demo: {result.day}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 62rem; margin: 1rem auto; padding: 0 1rem;
  color: #1a1a1a; line-height: 1.45; }}
table {{ border-collapse: collapse; margin: 0.5rem 0 1.5rem; }}
th, td {{ border-bottom: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: left;
  vertical-align: top; }}
th[scope=row] {{ font-weight: normal; color: #333; }}
img {{ max-width: 100%; height: auto; }}
.wide {{ overflow-x: auto; }}
</style></head><body>
<h1>Neighbourhood demo: {result.day}</h1>
<p>{len(result.homes)} simulated homes, each with its own gateway, negotiated with their
aggregator and the DSO over XMPP with TLS (USEF Plan, Validate, Operate) and lived the day.
Report made {made}.</p>
<h2>Key figures</h2>
<table>{kpi_html}</table>
<h2>Transformer</h2>
<img src="{files["transformer"]}" alt="Transformer load over the day: the D-prognosis before,
the plan after the DSO's orders, the metered load and the limit">
<h2>Prices</h2>
<img src="{files["prices"]}" alt="Import and export prices per PTU">
<h2>Rounds and orders</h2>
<ul>{rounds or "<li>no round</li>"}</ul>
<ul>{orders or "<li>the DSO bought nothing</li>"}</ul>
<h2>Homes</h2>
<div class=wide><table>
<tr><th>Home</th><th>Devices</th><th>Import / export kWh</th><th>Bill (metered)</th>
<th>Bill planned</th><th>Baseline</th><th>Flexibility sold</th><th>Worth</th>
<th>Messages sent / resent / failed</th></tr>
{home_rows}
</table></div>
<img src="{files["homes"]}" alt="Each home's P-plan against its metered load">
</body></html>
"""


def write_report(nb: Neighbourhood, wall_s: float | None = None) -> Path:
    out = nb.workdir / "report"
    out.mkdir(exist_ok=True)
    result = collect(nb)
    files = charts(result, out)
    page = out / "index.html"
    page.write_text(render(result, files, wall_s), encoding="utf-8")
    (out / "kpis.json").write_text(json.dumps(result.kpis(), indent=1))
    return page
