"""The main job until the neighbourhood exists: one simulated home and its gateway, as two real
processes meeting only on the wire, for a simulated day; then a summary checked against the
simulated meter.

The simulator is started as a program (`homeflex-sim`), never imported.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from homeflex.clock import PTU_SECONDS

DEFAULT_START = datetime(2026, 6, 1, tzinfo=UTC)
STARTUP_S = 4.0  # real seconds given to both processes to start before simulated time begins
TAIL_S = 1800.0  # simulated seconds the devices run on after the gateway has stopped
POLL_S = {"meter": 10.0, "pv": 10.0, "battery": 10.0, "heat_pump": 30.0, "ev_charger": 30.0}
# Mean power per PTU of a cycle, as an installer reads it off the appliance's programme table;
# these are firmware-sim's default programmes.
CYCLE_PROFILE_W = {
    "washing_machine": [1366.7, 1383.3, 150.0, 150.0, 150.0, 150.0, 300.0, 433.3],
    "dishwasher": [633.3, 1800.0, 100.0, 100.0, 100.0, 100.0, 1800.0, 20.0, 20.0, 20.0, 20.0, 20.0],
}


def _repo() -> Path:
    """The checkout this module was installed from (editable), else the current directory."""
    here = Path(__file__).resolve().parents[1]
    return here if (here / "firmware-sim").is_dir() else Path.cwd()


def sim_command() -> list[str]:
    exe = Path(sys.executable).parent / "homeflex-sim"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("homeflex-sim")
    if found is None:
        raise RuntimeError("homeflex-sim is not installed; run ./dev.sh demo, which installs it")
    return [found]


def wait_for(path: Path, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if proc.poll() is not None:
            raise RuntimeError(
                f"the simulator exited with code {proc.returncode} before it was ready"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(f"the simulator did not write {path} within {timeout_s:.0f} s")
        time.sleep(0.05)


def day_ahead_prices(start: datetime, days: int = 2) -> dict[str, Any]:
    """A price file for the demo: hourly import prices shaped like a day-ahead market (a night
    trough, morning and evening peaks, a midday solar dip) plus taxes; export at spot."""
    import_price, export_price = [], []
    for h in range(24 * days):
        hour = h % 24
        spot = (
            0.08
            + 0.06 * math.exp(-((hour - 8) ** 2) / 4)
            + 0.10 * math.exp(-((hour - 19) ** 2) / 5)
            - 0.07 * math.exp(-((hour - 13) ** 2) / 6)
            - 0.03 * (1 <= hour < 5)
        )
        import_price.append(round(spot + 0.15, 4))
        export_price.append(round(spot, 4))
    return {
        "start": start.isoformat(),
        "series_step_s": 3600,
        "import_price": import_price,
        "export_price": export_price,
    }


def home_section(home: dict[str, Any], prices_file: Path) -> dict[str, Any]:
    """What an installer would write for the simulated home so that its gateway plans it: the
    parameters the devices do not report, taken from the home description, and the owner's
    preferences (car charged by the time it leaves, a comfort band around the setpoint)."""
    devices: list[dict[str, Any]] = []
    for dev in home.get("devices", []):
        kind = dev["kind"]
        if kind == "battery":
            devices.append(
                {
                    "kind": "battery",
                    "id": dev["id"],
                    "capacity_wh": dev["capacity_wh"],
                    "max_charge_w": dev["max_charge_w"],
                    "max_discharge_w": dev["max_discharge_w"],
                    "soc_min_pct": 10,
                    "cycle_cost_eur_per_kwh": 0.02,
                }
            )
        elif kind == "pv":
            devices.append({"kind": "pv", "id": dev["id"], "peak_w": 1000 * dev["kwp"]})
        elif kind == "ev_charger" and dev.get("visits"):
            visit = dev["visits"][0]
            need = visit["capacity_wh"] * max(0, 80 - visit["soc_pct"]) / 100
            devices.append(
                {
                    "kind": "ev",
                    "id": dev["id"],
                    "max_current_a": dev.get("max_current_a", 16),
                    "ready_by": visit["leave"],
                    "energy_needed_wh": need,
                    "expected_arrival": visit["arrive"],
                }
            )
        elif kind == "heat_pump":
            setpoint = dev.get("room_setpoint_c", 20.5)
            devices.append(
                {
                    "kind": "heat_pump",
                    "id": dev["id"],
                    "rated_power_w": dev["rated_power_w"],
                    "resistance_k_per_kw": 1000 / dev.get("house_ua_w_k", 150.0),
                    "capacitance_kwh_per_k": dev.get("house_capacity_kj_k", 20000.0) / 3600,
                    "comfort": [
                        {"start": "07:00", "t_min_c": setpoint - 1, "t_max_c": setpoint + 2},
                        {"start": "23:00", "t_min_c": setpoint - 3, "t_max_c": setpoint + 2},
                    ],
                    "min_on_ptus": 2,
                    "min_off_ptus": 2,
                }
            )
    zigbee = home.get("zigbee") or {}
    for app in zigbee.get("appliances", []):
        devices.append(
            {
                "kind": "appliance",
                "id": app["id"],
                "profile_w": CYCLE_PROFILE_W[app["kind"]],
                "finish_by": app["finish_by"],
            }
        )
    return {
        "meter": "meter",
        "site": home["site"],
        "prices": {"file": str(prices_file)},
        "devices": devices,
        "cycle_s": 60,
        "solve_time_limit_s": 1.0,  # a PTU lasts 1.25 s at 720x
    }


def gateway_config(endpoints: dict[str, Any], home_file: Path, workdir: Path) -> dict[str, Any]:
    """A gateway configuration for the simulated home described by the simulator's endpoints;
    it plans the home with the demo's day-ahead prices."""
    clock = endpoints["clock"]
    devices: list[dict[str, Any]] = []
    for dev_id, ep in endpoints["devices"].items():
        devices.append(
            {
                "protocol": "modbus",
                "id": dev_id,
                "template": ep["template"],
                "host": ep["host"],
                "port": ep["port"],
                "unit": ep["unit"],
                "poll_s": POLL_S.get(ep["kind"], 15.0),
            }
        )
    cfg: dict[str, Any] = {
        "gateway_id": f"sim-{endpoints['home']}",
        "data_dir": str(workdir / "gateway"),
        "store": {"path": str(workdir / "gateway" / "store.db")},
        "clock": {
            "speed": clock["speed"],
            "start": datetime.fromtimestamp(clock["start"], UTC).isoformat(),
            "anchor": clock["anchor"],
        },
        "devices": devices,
    }
    home = yaml.safe_load(home_file.read_text())
    prices_file = workdir / "prices.yaml"
    start = datetime.fromtimestamp(clock["start"], UTC)
    prices_file.write_text(yaml.safe_dump(day_ahead_prices(start), sort_keys=False))
    cfg["home"] = home_section(home, prices_file)
    zigbee = home.get("zigbee") if isinstance(home, dict) else None
    if zigbee and endpoints.get("zigbee"):
        radio = endpoints.get("zigbee_radio", "homeflex-sim")
        cfg["zigbee"] = {"radio": radio, "path": endpoints["zigbee"]}
        for plug in zigbee.get("plugs", []):
            devices.append(
                {
                    "protocol": "zigbee",
                    "id": plug["id"],
                    "template": "zigbee-plug",
                    "ieee": plug["ieee"],
                    "poll_s": 60.0,
                }
            )
        for app in zigbee.get("appliances", []):
            devices.append(
                {
                    "protocol": "zigbee",
                    "id": app["id"],
                    "template": "zigbee-appliance",
                    "ieee": app["ieee"],
                    "poll_s": 60.0,
                }
            )
    return cfg


@dataclass
class MeterComparison:
    """The gateway's stored PTU energies of the meter against the simulated meter's counters."""

    ptus: int
    max_rel_error: float  # over PTUs with at least 10 Wh, import and export apart
    max_abs_error_wh: float
    store_import_wh: float
    sim_import_wh: float
    store_export_wh: float
    sim_export_wh: float


def compare_meter(store_path: Path, meter_csv: Path, meter_id: str = "meter") -> MeterComparison:
    """Compare every PTU that the gateway saw from start to end against the simulator's record."""
    from homeflex.edge.devices.capabilities import Quantity
    from homeflex.edge.store import Store

    store = Store.open(store_path, read_only=True)
    try:
        ptus = [
            (p.ptu_start, p.import_wh, p.export_wh, p.estimated)
            for p in store.ptu_energy(meter_id, 0, 1e12)
        ]
        counters = store.readings(meter_id, Quantity.IMPORT_WH, 0, 1e12)
        last_seen = counters[-1].ts if counters else 0.0
    finally:
        store.close()
    return compare_ptus(ptus, meter_csv, last_seen)


def compare_ptus(
    ptus: list[tuple[float, float, float, bool]], meter_csv: Path, last_seen: float
) -> MeterComparison:
    """Compare PTU energies (start, import Wh, export Wh, estimated) wherever they were kept
    against the simulator's meter record; PTUs ending after `last_seen` are left out."""
    rows = list(csv.DictReader(meter_csv.open()))
    sim = {float(r["sim_time"]): (float(r["import_wh"]), float(r["export_wh"])) for r in rows}
    n, max_rel, max_abs = 0, 0.0, 0.0
    tot = [0.0, 0.0, 0.0, 0.0]
    for start, imp, exp, estimated in ptus:
        begin, end = sim.get(start), sim.get(start + PTU_SECONDS)
        if begin is None or end is None or estimated or start + PTU_SECONDS > last_seen:
            continue  # PTUs the gateway saw only in part (start-up, shut-down)
        sim_imp, sim_exp = end[0] - begin[0], end[1] - begin[1]
        n += 1
        tot[0] += imp
        tot[1] += sim_imp
        tot[2] += exp
        tot[3] += sim_exp
        for got, want in ((imp, sim_imp), (exp, sim_exp)):
            max_abs = max(max_abs, abs(got - want))
            if want >= 10:
                max_rel = max(max_rel, abs(got - want) / want)
    return MeterComparison(n, max_rel, max_abs, tot[0], tot[1], tot[2], tot[3])


def _stop(proc: subprocess.Popen[bytes], timeout_s: float = 20) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_single_home(
    home: Path | None, *, speed: float, hours: float, workdir: Path, start: datetime = DEFAULT_START
) -> str:
    home_file = home or _repo() / "firmware-sim" / "homes" / "detached.yaml"
    if not home_file.is_file():
        raise RuntimeError(f"{home_file}: no such home description")
    if workdir.exists():
        shutil.rmtree(workdir)
    (workdir / "sim").mkdir(parents=True)
    (workdir / "gateway").mkdir(parents=True)
    anchor = time.time() + STARTUP_S
    duration = hours * 3600
    sim_log = (workdir / "sim.log").open("wb")
    sim = subprocess.Popen(
        [
            *sim_command(),
            "run",
            str(home_file),
            "--state-dir",
            str(workdir / "sim"),
            "--speed",
            str(speed),
            "--start",
            start.isoformat(),
            "--anchor",
            str(anchor),
            "--duration",
            str(duration + TAIL_S),
        ],
        stdout=sim_log,
        stderr=subprocess.STDOUT,
    )
    gw: subprocess.Popen[bytes] | None = None
    try:
        wait_for(workdir / "sim" / "endpoints.json", sim, 30)
        endpoints = json.loads((workdir / "sim" / "endpoints.json").read_text())
        cfg_path = workdir / "gateway.yaml"
        cfg_path.write_text(
            yaml.safe_dump(gateway_config(endpoints, home_file, workdir), sort_keys=False)
        )
        gw_log = (workdir / "gateway.log").open("wb")
        gw = subprocess.Popen(
            [sys.executable, "-m", "homeflex.cli", "edge", "run", "--config", str(cfg_path)],
            stdout=gw_log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        real_s = STARTUP_S + duration / speed
        print(
            f"simulating {hours:g} h of {home_file.stem} at {speed:g}x: about {real_s:.0f} s; "
            f"logs in {workdir}",
            flush=True,
        )
        # the gateway stops first, while its devices still answer: its last plan is a whole one
        while time.time() < anchor + duration / speed:
            if sim.poll() is not None:
                raise RuntimeError(
                    f"the simulator failed (exit {sim.returncode}); see {workdir / 'sim.log'}"
                )
            if gw.poll() is not None:
                raise RuntimeError(
                    f"the gateway stopped (exit {gw.returncode}); see {workdir / 'gateway.log'}"
                )
            time.sleep(0.2)
        _stop(gw)
        sim.wait(timeout=TAIL_S / speed + 60)
        if sim.returncode != 0:
            raise RuntimeError(
                f"the simulator failed (exit {sim.returncode}); see {workdir / 'sim.log'}"
            )
    finally:
        if gw is not None:
            _stop(gw)
        _stop(sim)
    return summary(workdir, cfg_path)


def _local(ts: float, offset_h: float) -> str:
    return datetime.fromtimestamp(ts + 3600 * offset_h, UTC).strftime("%H:%M")


def summary(workdir: Path, cfg_path: Path) -> str:
    from homeflex.configfile import load_config
    from homeflex.edge.config import GatewayConfig
    from homeflex.edge.devices.capabilities import Quantity
    from homeflex.edge.quality import quality_report
    from homeflex.edge.store import Store

    cfg = load_config(cfg_path, GatewayConfig)
    offset_h = cfg.home.site.utc_offset_h if cfg.home else 0.0
    cmp = compare_meter(cfg.store.path, workdir / "sim" / "meter_ptu.csv")
    lines = [
        f"home {cfg.gateway_id}: {cmp.ptus} complete PTUs stored",
        f"  meter import  store {cmp.store_import_wh / 1000:9.3f} kWh   simulated meter "
        f"{cmp.sim_import_wh / 1000:9.3f} kWh",
        f"  meter export  store {cmp.store_export_wh / 1000:9.3f} kWh   simulated meter "
        f"{cmp.sim_export_wh / 1000:9.3f} kWh",
        f"  largest per-PTU difference: {cmp.max_rel_error * 100:.4f} % "
        f"({cmp.max_abs_error_wh:.3f} Wh)",
    ]
    store = Store.open(cfg.store.path, read_only=True)
    try:
        lines.append("  energy per device over the run (import / export, kWh):")
        for dev in cfg.devices:
            ptus = store.ptu_energy(dev.id, 0, 1e12)
            imp = sum(p.import_wh for p in ptus) / 1000
            exp = sum(p.export_wh for p in ptus) / 1000
            line = f"    {dev.id:<14} {imp:8.3f} / {exp:8.3f}"
            running = [p.ptu_start for p in ptus if p.import_wh > 5]  # more than standby
            if dev.template == "zigbee-appliance" and running:
                first, last = (
                    _local(running[0], offset_h),
                    _local(running[-1] + PTU_SECONDS, offset_h),
                )
                line += f"   ran {first}–{last} local"
            lines.append(line)
        meter = next((d for d in cfg.devices if d.id == "meter"), None)
        if meter is not None:
            readings = store.readings("meter", Quantity.POWER_W, 0, 1e12)
            if readings:
                q = quality_report(store, "meter", readings[0].ts, readings[-1].ts, meter.poll_s)
                lines.append(
                    f"  meter data path: {q.effectiveness_pct:.1f} % effective, "
                    f"{len(q.gaps)} gaps, {len(q.outliers)} outliers"
                )
    finally:
        store.close()
    lines.extend(_plan_summary(cfg.data_dir))
    return "\n".join(lines)


def _plan_summary(data_dir: Path) -> list[str]:
    """The plan the gateway followed last, its KPIs against the baseline (every device when its
    user wants it) for the day it covers most, and why it re-planned."""
    try:
        plan = json.loads((data_dir / "plan.json").read_text())
        status = json.loads((data_dir / "status.json").read_text())
    except (OSError, ValueError) as exc:
        return [f"  planner: no plan published ({exc})"]
    lines = [
        f"  planner: last plan {plan['status']} from {plan['start']}, solved in "
        f"{plan['solve_s']:.2f} s; last re-plans: "
        + ", ".join(r["reason"] for r in status.get("plan", {}).get("replans", []))
    ]
    for name in ("plan", "baseline"):
        k = max(plan["kpis"][name], key=lambda day: day["ptus"])
        share = "-" if k["self_consumption"] is None else f"{100 * k['self_consumption']:.0f} %"
        lines.append(
            f"    {name:<9} {k['day']}: bill {k['bill_eur']:6.2f} €, peak import "
            f"{k['peak_import_w'] / 1000:5.2f} kW, PV self-consumption {share}, comfort "
            f"{k['comfort_violation_kh']:.2f} K·h outside the band"
        )
    for error in (
        status.get("plan", {}).get("last_error"),
        status.get("plan", {}).get("price_error"),
    ):
        if error:
            lines.append(f"    {error}")
    return lines
