"""Gateway footprint benchmark: resident memory and CPU of `homeflex edge run` while it polls 15
devices every second (5 Modbus TCP devices and 10 Zigbee plugs through zigpy, half of the plugs
polled over the radio because they never report), in real time against firmware-sim.
Usage: python -m bench.gateway_poll [--seconds 60] [--warmup 15]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import yaml

from bench.machine import machine

SIM = str(Path(sys.executable).parent / "homeflex-sim")


def home() -> dict[str, Any]:
    modbus = [
        {"id": "meter", "kind": "meter"},
        {"id": "pv", "kind": "pv", "kwp": 6.0},
        {"id": "battery", "kind": "battery", "capacity_wh": 10000},
        {"id": "heatpump", "kind": "heat_pump"},
        {
            "id": "ev",
            "kind": "ev_charger",
            "visits": [{"arrive": "00:00", "leave": "23:59", "soc_pct": 30, "capacity_wh": 60000}],
        },
    ]
    templates = {
        "meter": "meter-3ph",
        "pv": "pv-inverter",
        "battery": "home-battery",
        "heat_pump": "heat-pump",
        "ev_charger": "ev-charger",
    }
    for dev in modbus:
        dev["modbus"] = {"port": 0, "unit": 1, "template": templates[dev["kind"]]}
    plugs = [
        {
            "id": f"plug-{i}",
            "ieee": f"00:0d:6f:00:00:00:50:{i:02x}",
            "reports": i % 2 == 0,
            "load": {"profile": "fridge" if i % 2 else "tv"},
        }
        for i in range(10)
    ]
    return {
        "name": "bench15",
        "seed": 1,
        "step_s": 1,
        "devices": modbus,
        "zigbee": {"plugs": plugs},
    }


def gateway_config(endpoints: dict[str, Any], spec: dict[str, Any], work: Path) -> dict[str, Any]:
    devices: list[dict[str, Any]] = [
        {
            "protocol": "modbus",
            "id": dev_id,
            "template": ep["template"],
            "host": ep["host"],
            "port": ep["port"],
            "unit": ep["unit"],
            "poll_s": 1.0,
        }
        for dev_id, ep in endpoints["devices"].items()
    ]
    devices += [
        {
            "protocol": "zigbee",
            "id": p["id"],
            "template": "zigbee-plug",
            "ieee": p["ieee"],
            "poll_s": 1.0,
        }
        for p in spec["zigbee"]["plugs"]
    ]
    return {
        "gateway_id": "bench",
        "data_dir": str(work / "gw"),
        "store": {"path": str(work / "gw" / "store.db")},
        "zigbee": {"radio": "homeflex-sim", "path": endpoints["zigbee"]},
        "devices": devices,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measured period")
    parser.add_argument("--warmup", type=float, default=15.0, help="start-up and pairing first")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "gw").mkdir()
        spec = home()
        (work / "home.yaml").write_text(yaml.safe_dump(spec))
        start = datetime.now(UTC).replace(microsecond=0)
        sim = subprocess.Popen(
            [
                SIM,
                "run",
                str(work / "home.yaml"),
                "--state-dir",
                str(work / "sim"),
                "--start",
                start.isoformat(),
                "--anchor",
                str(start.timestamp()),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        gw = None
        try:
            while not (work / "sim" / "endpoints.json").exists():
                time.sleep(0.1)
            endpoints = json.loads((work / "sim" / "endpoints.json").read_text())
            (work / "gw.yaml").write_text(yaml.safe_dump(gateway_config(endpoints, spec, work)))
            gw = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "homeflex.cli",
                    "edge",
                    "run",
                    "--config",
                    str(work / "gw.yaml"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            proc = psutil.Process(gw.pid)
            time.sleep(args.warmup)
            status = json.loads((work / "gw" / "status.json").read_text())
            cpu0, t0 = proc.cpu_times(), time.monotonic()
            polls0 = sum(d["polls"] for d in status["devices"])
            peak_rss = 0
            while time.monotonic() - t0 < args.seconds:
                peak_rss = max(peak_rss, proc.memory_info().rss)
                time.sleep(0.5)
            cpu1, t1 = proc.cpu_times(), time.monotonic()
            status = json.loads((work / "gw" / "status.json").read_text())
            polls = sum(d["polls"] for d in status["devices"]) - polls0
            ok = sum(d["state"] == "ok" for d in status["devices"])
            cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / (t1 - t0)
            print(f"machine:      {machine()}")
            print(f"devices:      {len(status['devices'])} ({ok} ok), each polled every 1 s")
            print(f"polls:        {polls / (t1 - t0):.1f} /s over {t1 - t0:.0f} s")
            print(f"resident:     {peak_rss / 2**20:.1f} MiB peak (target <= 150 MB)")
            print(f"cpu:          {cpu * 100:.1f} % of one core (target <= 10 %)")
        finally:
            for p in (gw, sim):
                if p is not None and p.poll() is None:
                    p.terminate()
                    p.wait(20)


if __name__ == "__main__":
    main()
