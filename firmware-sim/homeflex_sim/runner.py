"""Runs a home: Modbus servers, the Zigbee radio, the control channel and the step loop; writes
`endpoints.json` (once everything listens) and `meter_ptu.csv` (the meter at each PTU boundary)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections import defaultdict
from pathlib import Path
from typing import Any

from homeflex_sim.clock import PTU_S, SimClock, first_step
from homeflex_sim.control import Control, ControlServer
from homeflex_sim.home import Home
from homeflex_sim.homefile import HomeSpec
from homeflex_sim.modbus import DeviceServer
from homeflex_sim.register_device import RegisterDevice
from homeflex_sim.tls import server_context

log = logging.getLogger(__name__)
HOST = "127.0.0.1"


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def build_servers(home: Home) -> list[DeviceServer]:
    """One server per port; devices asking for port 0 each get their own free port. A port
    whose devices have `tls:` serves Modbus/TCP Security (the home file makes them agree)."""
    by_port: dict[int, list[RegisterDevice]] = defaultdict(list)
    alone: list[RegisterDevice] = []
    for spec in home.spec.devices:
        device = home.devices[spec.id]
        (by_port[spec.modbus.port] if spec.modbus.port else alone).append(device)
    groups = [*by_port.items(), *((0, [d]) for d in alone)]
    tls = {spec.id: spec.tls for spec in home.spec.devices}
    servers = []
    for port, devices in groups:
        tls_spec = tls[devices[0].id]
        ids = ", ".join(d.id for d in devices)
        ctx = server_context(tls_spec, ids) if tls_spec is not None else None
        servers.append(DeviceServer(HOST, port, devices, ctx))
    return servers


async def run(
    spec: HomeSpec, state_dir: Path, clock: SimClock, duration_s: float | None = None
) -> Home:
    """Run until SIGTERM/SIGINT, a `stop` request, or `duration_s` of simulated time."""
    state_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (once, before serving)
    zigbee: Any = None
    if spec.zigbee is not None:
        from homeflex_sim.zigbee import ZigbeeNetwork

        zigbee = ZigbeeNetwork(spec.zigbee, spec.seed)
    home = Home(spec, first_step(clock.start, spec.step_s), zigbee)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    servers = build_servers(home)
    control_server: ControlServer | None = None
    try:
        ports = [await server.start() for server in servers]
        zigbee_port = await zigbee.serve(HOST, spec.zigbee.port) if zigbee is not None else None
        endpoints: dict[str, Any] = {
            "home": spec.name,
            "clock": {
                "start": clock.start,
                "speed": clock.speed,
                "anchor": clock.anchor,
                "step_s": spec.step_s,
            },
            "devices": {},
            "zigbee": f"socket://{HOST}:{zigbee_port}" if zigbee_port else None,
            "zigbee_radio": spec.zigbee.radio if spec.zigbee is not None else None,
        }
        for server, port in zip(servers, ports, strict=True):
            for unit, device in server.units.devices.items():
                endpoints["devices"][device.id] = {
                    "kind": device.template.kind,
                    "host": HOST,
                    "port": port,
                    "unit": unit,
                    "template": device.template.name,
                    "tls": server.tls,
                }
        control_server = ControlServer(Control(home, stopping.set, {"clock": endpoints["clock"]}))
        endpoints["control"] = {"host": HOST, "port": await control_server.start(HOST, 0)}
        write_atomically(state_dir / "endpoints.json", json.dumps(endpoints, indent=2) + "\n")
        log.info("home %s running; endpoints in %s", spec.name, state_dir / "endpoints.json")
        await _step_loop(home, clock, state_dir / "meter_ptu.csv", stopping, duration_s)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if control_server is not None:
            await control_server.close()
        for server in servers:
            with contextlib.suppress(Exception):
                await server.stop()
        if zigbee is not None:
            await zigbee.close()
    return home


async def _step_loop(
    home: Home, clock: SimClock, csv_path: Path, stopping: asyncio.Event, duration_s: float | None
) -> None:
    end = clock.start + duration_s if duration_s is not None else None
    with csv_path.open("w", encoding="utf-8") as csv:
        csv.write("sim_time,import_wh,export_wh\n")

        def ptu_line() -> None:
            if home.t % PTU_S == 0:
                csv.write(f"{home.t:.0f},{home.meter.import_wh!r},{home.meter.export_wh!r}\n")
                csv.flush()

        ptu_line()
        while not stopping.is_set() and (end is None or home.t < end):
            delay = clock.wall_delay_until(home.t + home.dt)
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), delay)
                continue
            home.step()
            ptu_line()
            # Behind real time we step back to back, but let clients in between steps.
            await asyncio.sleep(0)
