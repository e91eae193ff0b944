"""The `homeflex-sim` command as a real process: endpoints, control channel, faults, PTU ground
truth, clean stop."""

from __future__ import annotations

import asyncio
import csv
import json
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from pymodbus.client import AsyncModbusTcpClient

from homeflex_sim.clock import SimClock, first_step
from homeflex_sim.control import request
from homeflex_sim.home import Home
from homeflex_sim.homefile import load_home
from homeflex_sim.runner import run as run_home
from tests.sim.conftest import SUMMER

HOME = {
    "name": "proc",
    "seed": 9,
    "phases": {"base": 1},
    "devices": [
        {"id": "meter", "kind": "meter", "modbus": {"port": 0, "unit": 1, "template": "meter-3ph"}},
        {
            "id": "pv",
            "kind": "pv",
            "kwp": 5,
            "modbus": {"port": 0, "unit": 1, "template": "pv-inverter"},
        },
        {
            "id": "battery",
            "kind": "battery",
            "capacity_wh": 8000,
            "modbus": {"port": 0, "unit": 2, "template": "home-battery"},
        },
    ],
}
CLI = [sys.executable, "-c", "from homeflex_sim.cli import main; main()"]


def start(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
    home_file = tmp_path / "home.yaml"
    home_file.write_text(yaml.safe_dump(HOME))
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [*CLI, "run", str(home_file), "--state-dir", str(state), *args], stderr=subprocess.PIPE
    )
    return proc, state


def endpoints(proc: subprocess.Popen[bytes], state: Path) -> dict[str, object]:
    deadline = time.monotonic() + 20
    while not (state / "endpoints.json").exists():
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, "endpoints.json never appeared"
        time.sleep(0.05)
    data: dict[str, object] = json.loads((state / "endpoints.json").read_text())
    return data


def test_ptu_csv_is_exact_ground_truth(tmp_path: Path) -> None:
    """Six simulated hours at 20000×: every row on a PTU boundary, equal to the physics stepped
    directly (same seed, same start)."""
    proc, state = start(
        tmp_path, "--speed", "20000", "--start", "2025-06-21T06:00:00Z", "--duration", "21600"
    )
    assert proc.wait(timeout=30) == 0
    rows = list(csv.DictReader((state / "meter_ptu.csv").open()))
    assert len(rows) == 21600 // 900 + 1
    home = Home(load_home(tmp_path / "home.yaml"), SUMMER + 6 * 3600)
    for row in rows:
        t = float(row["sim_time"])
        assert t % 900 == 0
        while home.t < t:
            home.step()
        assert float(row["import_wh"]) == home.meter.import_wh
        assert float(row["export_wh"]) == home.meter.export_wh
    assert float(rows[-1]["export_wh"]) > 1000  # a June morning exports


def test_control_channel_faults_and_sigterm(tmp_path: Path) -> None:
    proc, state = start(tmp_path, "--speed", "600")
    try:
        ep = endpoints(proc, state)
        control = ep["control"]
        assert isinstance(control, dict)
        host, port = control["host"], control["port"]
        devices = ep["devices"]
        assert isinstance(devices, dict)
        assert devices["battery"]["port"] != devices["meter"]["port"]  # port 0: one each
        assert ep["clock"]["speed"] == 600 and ep["clock"]["step_s"] == 10  # type: ignore[index]
        assert ep["zigbee"] is None

        async def scenario() -> None:
            s = await request(host, port, {"cmd": "state"})
            assert s["ok"] and s["sim_time"] % 10 == 0
            assert set(s["devices"]) == {"meter", "pv", "battery"}
            bad = await request(host, port, {"cmd": "fault", "device": "nope", "fault": "nan"})
            assert not bad["ok"] and "no device 'nope'" in bad["error"]
            bad = await request(host, port, {"cmd": "fault", "device": "pv", "fault": "melt"})
            assert not bad["ok"] and "unknown fault 'melt'" in bad["error"]
            c = AsyncModbusTcpClient(
                "127.0.0.1", port=devices["meter"]["port"], timeout=1, retries=0
            )
            await c.connect()
            r = await c.read_input_registers(0, count=2, device_id=1)
            clock = r.registers[0] << 16 | r.registers[1]
            assert clock % 10 == 0 and abs(clock - s["sim_time"]) < 600
            # The CLI helper, as a user would type it.
            fault = await asyncio.create_subprocess_exec(
                *CLI, "fault", "--state-dir", str(state), "meter", "exception", "--code", "6"
            )
            assert await fault.wait() == 0
            r = await c.read_input_registers(0, count=2, device_id=1)
            assert r.isError() and r.exception_code == 6
            assert (await request(host, port, {"cmd": "clear", "device": "meter"}))["ok"]
            r = await c.read_input_registers(0, count=2, device_id=1)
            assert not r.isError()
            c.close()

        asyncio.run(scenario())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    rows = list(csv.DictReader((state / "meter_ptu.csv").open()))
    assert rows and all(float(r["sim_time"]) % 900 == 0 for r in rows)


def _i32(words: list[int]) -> int:
    return int(struct.unpack(">i", struct.pack(">2H", *words))[0])


def _u64(words: list[int]) -> int:
    return int(struct.unpack(">Q", struct.pack(">4H", *words))[0])


def test_cli_spike_fault_shows_once_then_clears(tmp_path: Path) -> None:
    """`homeflex-sim fault meter spike` on a running home: one read shows power + 20 kW with the
    counters as they are, `state` then reports no fault and the next read is true. The clock runs
    at 0.001× with the anchor one step back, so one step is taken and no other comes."""
    proc, state = start(
        tmp_path,
        "--speed",
        "0.001",
        "--start",
        "2025-06-21T12:00:00Z",
        "--anchor",
        str(time.time() - 10_000),
    )
    try:
        ep = endpoints(proc, state)
        host, port = ep["control"]["host"], ep["control"]["port"]  # type: ignore[index]
        meter_port = ep["devices"]["meter"]["port"]  # type: ignore[index]

        async def scenario() -> None:
            before = await request(host, port, {"cmd": "state"})
            truth = before["devices"]["meter"]
            assert truth["fault"] is None and truth["export_wh"] > 0  # a step was taken
            fault = await asyncio.create_subprocess_exec(
                *CLI, "fault", "--state-dir", str(state), "meter", "spike"
            )
            assert await fault.wait() == 0
            s = await request(host, port, {"cmd": "state"})
            assert s["devices"]["meter"]["fault"] == "spike"
            c = AsyncModbusTcpClient("127.0.0.1", port=meter_port, timeout=1, retries=0)
            await c.connect()
            w = (await c.read_input_registers(0, count=24, device_id=1)).registers
            assert (w[0] << 16 | w[1]) == before["sim_time"]  # still the same step
            assert _i32(w[2:4]) == round(truth["power_w"] + 20_000)
            assert _i32(w[4:6]) == round(truth["power_l1_w"] + 20_000)
            assert _u64(w[16:20]) == round(truth["import_wh"] * 100)
            assert _u64(w[20:24]) == round(truth["export_wh"] * 100)
            s = await request(host, port, {"cmd": "state"})
            assert s["devices"]["meter"]["fault"] is None
            w = (await c.read_input_registers(2, count=2, device_id=1)).registers
            assert _i32(w) == round(truth["power_w"])
            c.close()

        asyncio.run(scenario())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_stop_request_and_bad_home_file(tmp_path: Path) -> None:
    proc, state = start(tmp_path, "--speed", "60")
    ep = endpoints(proc, state)
    stop = subprocess.run(
        [*CLI, "stop", "--control", f"127.0.0.1:{ep['control']['port']}"],  # type: ignore[index]
        capture_output=True,
    )
    assert stop.returncode == 0
    assert proc.wait(timeout=10) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndevices:\n  - id: meter\n    kind: meter\n")
    result = subprocess.run(
        [*CLI, "run", str(bad), "--state-dir", str(tmp_path / "s2")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "bad.yaml:3: devices.0.modbus: Field required — add this field" in result.stderr


def test_start_is_aligned_to_steps() -> None:
    assert first_step(SUMMER + 7, 10) == SUMMER
    assert first_step(SUMMER + 900, 10) == SUMMER + 900


async def test_example_home_with_zigbee_loads_on_the_meter(tmp_path: Path) -> None:
    """The detached example home in-process for half an hour: the Zigbee network's loads are part
    of the meter's sum, and the run stops by itself after the duration."""
    spec = load_home(Path(__file__).parents[2] / "firmware-sim" / "homes" / "detached.yaml")
    spec = spec.model_copy(
        update={
            "devices": [
                d.model_copy(update={"modbus": d.modbus.model_copy(update={"port": 0})})
                for d in spec.devices
            ]
        }
    )  # the example's fixed port may be taken on a test machine
    clock = SimClock(start=SUMMER + 18 * 3600, speed=20000, anchor=time.time())
    home = await run_home(spec, tmp_path, clock, duration_s=1800)
    assert home.t == SUMMER + 18 * 3600 + 1800
    names = {load.name for load in home.loads}
    assert {"fridge-plug", "kettle-plug", "washer", "dishwasher", "ev", "heatpump"} <= names
    assert home.meter.power_w == pytest.approx(sum(load.power_w for load in home.loads))
    ep = json.loads((tmp_path / "endpoints.json").read_text())
    assert ep["zigbee"].startswith("socket://127.0.0.1:")
    assert ep["zigbee_radio"] == "znp"  # the detached example speaks TI's ZNP


def test_control_forwards_zigbee_faults_and_home_file_faults_apply() -> None:
    from homeflex_sim.control import Control
    from homeflex_sim.homefile import FaultSpec
    from homeflex_sim.zigbee import ZigbeeNetwork

    spec = load_home(Path(__file__).parents[2] / "firmware-sim" / "homes" / "terraced.yaml")
    pv = spec.devices[1].model_copy(update={"faults": [FaultSpec(fault="exception", code=6)]})
    spec = spec.model_copy(update={"devices": [spec.devices[0], pv]})
    home = Home(spec, SUMMER, ZigbeeNetwork(spec.zigbee, spec.seed))
    fault = home.devices["pv"].fault
    assert fault is not None and (fault.kind, fault.code) == ("exception", 6)
    control = Control(home, lambda: None, {})
    assert control.handle({"cmd": "fault", "device": "tv-plug", "fault": "silent"}) == {"ok": True}
    reply = control.handle({"cmd": "fault", "device": "toaster", "fault": "silent"})
    assert not reply["ok"] and "toaster" in reply["error"]
    assert control.handle({"cmd": "clear", "device": "pv"}) == {"ok": True}
    assert home.devices["pv"].fault is None
    assert control.handle({"cmd": "dance"})["error"].startswith("unknown cmd 'dance'")
