"""The home keeps running: a gateway started before its devices, and left by them, carries on
and recovers by itself (Modbus and the Zigbee radio)."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from homeflex.clock import ScaledClock
from homeflex.edge.config import GatewayConfig
from homeflex.edge.devices.capabilities import Quantity
from homeflex.edge.gateway import Gateway
from tests.integration.simhome import run_sim

START = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SPEED = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def until(condition: Any, timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_gateway_starts_without_devices_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    modbus_port, radio_port = free_port(), free_port()
    home: dict[str, Any] = {
        "name": "late",
        "seed": 2,
        "step_s": 10,
        "devices": [
            {
                "id": "meter",
                "kind": "meter",
                "modbus": {"port": modbus_port, "unit": 1, "template": "meter-3ph"},
            }
        ],
        "zigbee": {
            "port": radio_port,
            "plugs": [
                {
                    "id": "fridge-plug",
                    "ieee": "00:0d:6f:00:00:00:31:01",
                    "reports": True,
                    "load": {"profile": "fridge"},
                }
            ],
        },
    }
    anchor = time.time()
    clock = ScaledClock(start=START.timestamp(), speed=SPEED, anchor=anchor)
    cfg = GatewayConfig.model_validate(
        {
            "gateway_id": "late-box",
            "data_dir": str(tmp_path / "gw"),
            "store": {"path": str(tmp_path / "store.db")},
            "zigbee": {"radio": "homeflex-sim", "path": f"socket://127.0.0.1:{radio_port}"},
            "devices": [
                {
                    "protocol": "modbus",
                    "id": "meter",
                    "template": "meter-3ph",
                    "host": "127.0.0.1",
                    "port": modbus_port,
                    "poll_s": 10,
                    "timeout_s": 0.5,
                },
                {
                    "protocol": "zigbee",
                    "id": "fridge-plug",
                    "template": "zigbee-plug",
                    "ieee": "00:0d:6f:00:00:00:31:01",
                    "poll_s": 30,
                },
            ],
        }
    )
    (tmp_path / "gw").mkdir()
    gw = Gateway(cfg, clock)
    stop = asyncio.Event()
    task = asyncio.create_task(gw.run(stop))
    # nothing is there yet: the daemon runs, says what is wrong, and keeps trying
    await until(
        lambda: len(gw.pollers) == 2 and all(p.health.state == "failing" for p in gw.pollers), 10
    )
    assert "zigbee radio homeflex-sim at socket://127.0.0.1" in caplog.text
    assert "Connect call failed" in caplog.text
    assert not task.done()
    # retrying for days must not pile up resources: zigpy's database thread of a failed start
    # is closed before the next attempt
    await until(lambda: "zigbee radio: still cannot start" in caplog.text, 15)
    db_threads = [t for t in threading.enumerate() if "_connection_worker_thread" in t.name]
    assert db_threads == []

    with run_sim(home, tmp_path, speed=SPEED, start=START, anchor=anchor) as sim:
        # the devices appear: the radio reconnects, the plug pairs, the meter is read again
        await until(lambda: all(p.health.state == "ok" for p in gw.pollers), 30)
        assert "not yet paired: fridge-plug" in caplog.text
        await gw.flush()
        assert gw.store is not None
        assert gw.store.readings("fridge-plug", Quantity.POWER_W, 0, 1e12)
        assert gw.store.readings("meter", Quantity.IMPORT_WH, 0, 1e12)
        sim.proc.terminate()
        sim.proc.wait(10)
    # the devices vanish again: reported, the daemon carries on
    await until(lambda: all(p.health.state == "failing" for p in gw.pollers), 30)
    assert "zigbee radio: connection lost" in caplog.text
    assert not task.done()
    stop.set()
    await asyncio.wait_for(task, 30)
