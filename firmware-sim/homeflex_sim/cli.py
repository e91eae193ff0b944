"""`homeflex-sim`: run a simulated home, inject faults into it, read its state."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from homeflex_sim.clock import PTU_S, SimClock
from homeflex_sim.control import request
from homeflex_sim.homefile import HomeFileError, load_home
from homeflex_sim.runner import run as run_home

STATE_DIR = click.option(
    "--state-dir", type=click.Path(path_type=Path), help="read the control port from endpoints.json"
)


def _epoch(text: str) -> float:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not an ISO 8601 time like 2025-06-21T00:00:00+00:00"
        ) from None
    if when.tzinfo is None:
        raise click.BadParameter(f"{text!r} has no time zone; add one, e.g. +00:00 or Z")
    return when.timestamp()


@click.group()
def main() -> None:
    """Simulated home devices speaking Modbus TCP and Zigbee on loopback."""


@main.command()
@click.argument("home_file", type=click.Path(path_type=Path))
@click.option(
    "--state-dir",
    required=True,
    type=click.Path(path_type=Path),
    help="where endpoints.json and meter_ptu.csv are written",
)
@click.option("--speed", default=1.0, show_default=True, help="simulated seconds per real second")
@click.option("--start", "start_text", help="simulated start, ISO 8601 (default: now, PTU-aligned)")
@click.option("--anchor", type=float, help="wall-clock Unix time at which sim time = start")
@click.option("--duration", type=float, help="stop after this many simulated seconds")
def run(
    home_file: Path,
    state_dir: Path,
    speed: float,
    start_text: str | None,
    anchor: float | None,
    duration: float | None,
) -> None:
    """Run HOME_FILE until SIGTERM/SIGINT, a stop request or --duration."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # client faults are our doing
    try:
        spec = load_home(home_file)
    except HomeFileError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    if speed <= 0:
        raise click.BadParameter("--speed must be positive")
    now = time.time()
    start = _epoch(start_text) if start_text else now - now % PTU_S
    clock = SimClock(start=start, speed=speed, anchor=anchor if anchor is not None else now)
    try:
        asyncio.run(run_home(spec, state_dir, clock, duration))
    except (ValueError, HomeFileError, OSError) as exc:  # parts that do not fit, a busy port
        click.echo(f"{home_file}: {exc}", err=True)
        sys.exit(2)


def _control(control: str | None, state_dir: Path | None) -> tuple[str, int]:
    if control:
        host, _, port = control.rpartition(":")
        return host or "127.0.0.1", int(port)
    if state_dir:
        endpoints = json.loads((state_dir / "endpoints.json").read_text(encoding="utf-8"))
        return str(endpoints["control"]["host"]), int(endpoints["control"]["port"])
    raise click.UsageError("give --control HOST:PORT or --state-dir DIR")


def _send(control: str | None, state_dir: Path | None, message: dict[str, Any]) -> None:
    host, port = _control(control, state_dir)
    reply = asyncio.run(request(host, port, message))
    click.echo(json.dumps(reply, indent=2))
    if not reply.get("ok"):
        sys.exit(1)


@main.command()
@click.option("--control", help="HOST:PORT of the control channel")
@STATE_DIR
@click.argument("device")
@click.argument("fault")
@click.option("--code", type=int, default=4, show_default=True, help="exception code")
def fault(control: str | None, state_dir: Path | None, device: str, fault: str, code: int) -> None:
    """Make DEVICE show FAULT: timeout, exception, nan, out_of_range, drop, single_client,
    ignore_writes, spike (+20 kW on the power registers for one read, then cleared) or clear
    (Zigbee devices: the Zigbee network's faults)."""
    _send(control, state_dir, {"cmd": "fault", "device": device, "fault": fault, "code": code})


@main.command()
@click.option("--control", help="HOST:PORT of the control channel")
@STATE_DIR
def state(control: str | None, state_dir: Path | None) -> None:
    """Print the running home's physics snapshot."""
    _send(control, state_dir, {"cmd": "state"})


@main.command()
@click.option("--control", help="HOST:PORT of the control channel")
@STATE_DIR
def stop(control: str | None, state_dir: Path | None) -> None:
    """Stop the running home."""
    _send(control, state_dir, {"cmd": "stop"})
