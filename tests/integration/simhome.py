"""Runs firmware-sim as a separate process for a test, and talks to its control channel."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

SIM = str(Path(sys.executable).parent / "homeflex-sim")
REPO = Path(__file__).resolve().parents[2]


@dataclass
class SimHome:
    state_dir: Path
    endpoints: dict[str, Any]
    proc: subprocess.Popen[bytes]

    def device(self, dev_id: str) -> dict[str, Any]:
        ep: dict[str, Any] = self.endpoints["devices"][dev_id]
        return ep

    async def control(self, message: dict[str, Any]) -> dict[str, Any]:
        async with asyncio.timeout(10):  # a test fails, never hangs, if the simulator is stuck
            return await self._control(message)

    async def _control(self, message: dict[str, Any]) -> dict[str, Any]:
        ctl = self.endpoints["control"]
        reader, writer = await asyncio.open_connection(ctl["host"], ctl["port"])
        writer.write(json.dumps(message).encode() + b"\n")
        await writer.drain()
        reply: dict[str, Any] = json.loads(await reader.readline())
        writer.close()
        await writer.wait_closed()
        assert reply.get("ok"), reply
        return reply


@contextmanager
def run_sim(
    home: dict[str, Any] | Path,
    tmp: Path,
    *,
    speed: float,
    start: datetime,
    anchor: float | None = None,
    duration: float | None = None,
) -> Iterator[SimHome]:
    """Start `homeflex-sim run` on a home (a dict is written to a file first); stop it after."""
    state = tmp / "sim"
    state.mkdir(parents=True, exist_ok=True)
    if isinstance(home, dict):
        home_file = tmp / "home.yaml"
        home_file.write_text(yaml.safe_dump(home))
    else:
        home_file = home
    cmd = [
        SIM,
        "run",
        str(home_file),
        "--state-dir",
        str(state),
        "--speed",
        str(speed),
        "--start",
        start.astimezone(UTC).isoformat(),
        "--anchor",
        str(anchor or time.time()),
    ]
    if duration is not None:
        cmd += ["--duration", str(duration)]
    log = (tmp / "sim.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ})
    try:
        deadline = time.monotonic() + 30
        while not (state / "endpoints.json").exists():
            assert proc.poll() is None, (tmp / "sim.log").read_text()
            assert time.monotonic() < deadline, "simulator did not start"
            time.sleep(0.05)
        yield SimHome(state, json.loads((state / "endpoints.json").read_text()), proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
