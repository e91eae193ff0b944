"""Starts the neighbourhood's processes, follows its day and stops every one of them.

Timeline (real seconds from the start; simulated time runs `speed` times faster):
- set-up: PKI, accounts, the XMPP server, a firmware-sim and a gateway per home, then the
  aggregator and the DSO (`homeflex cloud run --open DAY`);
- the evening before, from 21:00 UTC: the devices run (the commuters' cars are home, the
  evening trips are over) and the gateways plan them; once they do, the aggregator and the DSO
  start and run the day-ahead round: prices, P-plans and offers, the DSO's check, its request,
  offers and orders;
- the day: 24 simulated hours, every gateway following its plan and the orders it took, and
  re-planning every PTU; a progress line every few simulated hours;
- the end: gateways stopped first (their devices still answer), then the simulators, the
  platform and the XMPP server; then the report.

Every process is started in its own session and stopped (SIGTERM, then SIGKILL) whatever
happens, Ctrl-C included; its output goes to `logs/<name>.log`.
"""

from __future__ import annotations

import csv
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import yaml

from homeflex.clock import PTU_SECONDS
from homeflex.demo import sim_command, wait_for
from homeflex.neighbourhood.scenario import AGGREGATOR, DSO, Neighbourhood, day_start
from homeflex.neighbourhood.telemetry import (
    broker_command,
    ingest_command,
    pick_port,
    wait_broker,
    wait_ingest,
)

STARTUP_S = 25.0  # real seconds for the simulators and gateways to come up
DAY_BEFORE_S = 3 * 3600.0  # simulated seconds the devices run before the day: the negotiation
ANSWER_WINDOW_S = 50.0  # real seconds the homes have to answer the day-ahead prices
TAIL_S = 1800.0  # simulated seconds the devices run on after the gateways stop
AFTER_DAY_S = 1200.0  # simulated seconds the gateways run into the next day
SETTLE_WAIT_S = 30.0  # real seconds the aggregator and the DSO get to settle the day
PROGRESS_EVERY_S = 3 * 3600.0  # simulated
MARKER = ".homeflex-demo"  # the work directory is the demo's to remove on the next run


@dataclass
class Processes:
    """Every process the demo started, stopped in reverse order at the end."""

    logs: Path
    started: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = field(default_factory=list)

    def start(self, name: str, args: list[str], *, pipe: bool = False) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE if pipe else log,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,  # a Ctrl-C in the terminal reaches the demo only
        )
        self.started.append((name, proc, log))
        return proc

    def check(self) -> None:
        for name, proc, _ in self.started:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{name} stopped (exit {proc.returncode}); see {self.logs / name}.log"
                )

    def stop(self, name: str, timeout_s: float = 20.0) -> int | None:
        for n, proc, log in self.started:
            if n == name:
                code = _stop(proc, timeout_s)
                log.close()
                return code
        return None

    def stop_all(self) -> None:
        for _, proc, log in reversed(self.started):
            _stop(proc, 10.0)
            log.close()


def _stop(proc: subprocess.Popen[bytes], timeout_s: float) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


def _ready_line(proc: subprocess.Popen[bytes], what: str, timeout_s: float) -> list[str]:
    """The first line a server prints (`READY ...`), or an error saying what did not start."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    line = proc.stdout.readline().decode().split() if ready else []
    if line[:1] != ["READY"]:
        raise RuntimeError(f"{what} did not start within {timeout_s:.0f} s")
    return line


def _python(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


@dataclass
class Run:
    nb: Neighbourhood
    speed: float
    say: Callable[[str], None] = print
    procs: Processes = field(init=False)
    anchor: float = 0.0

    def __post_init__(self) -> None:
        self.procs = Processes(self.nb.workdir / "logs")

    @property
    def sim_from(self) -> float:
        return day_start(self.nb.day).timestamp() - DAY_BEFORE_S

    def sim_now(self) -> float:
        return self.sim_from + (time.time() - self.anchor) * self.speed

    def local(self, ts: float) -> str:
        return datetime.fromtimestamp(ts + 3600, UTC).strftime("%a %H:%M")

    def start(self) -> None:
        nb = self.nb
        cfg = nb.workdir / "xmpp" / "xmpp.yaml"
        cfg.write_text(yaml.safe_dump(nb.xmpp_config()))
        xmpp = self.procs.start(
            "xmpp", _python("homeflex.cloud.xmpp.embedded", "--config", str(cfg)), pipe=True
        )
        port = int(_ready_line(xmpp, "the XMPP server", 30)[2])
        self.say(f"XMPP server (TLS, {nb.homes + 2} accounts) on 127.0.0.1:{port}")
        # telemetry before the gateways: the broker keeps nothing for a subscriber not there yet
        mqtt_port = pick_port()
        broker = self.procs.start("mqtt", broker_command(nb.pki, nb.workdir, mqtt_port))
        wait_broker(broker, nb.workdir)
        ingest = self.procs.start("history-ingest", ingest_command(nb.pki, nb.workdir, mqtt_port))
        wait_ingest(ingest, self.procs.logs / "history-ingest.log")
        self.say(f"MQTT broker (Mosquitto, TLS) on 127.0.0.1:{mqtt_port} and the history ingest")
        self.anchor = time.time() + STARTUP_S
        start = datetime.fromtimestamp(self.sim_from, UTC)
        sims = {}
        for name in nb.home_names():
            d = nb.home_dir(name)
            sims[name] = self.procs.start(
                f"{name}-sim",
                [*sim_command(), "run", str(d / "home.yaml"), "--state-dir", str(d / "sim"),
                 "--speed", str(self.speed), "--start", start.isoformat(),
                 "--anchor", str(self.anchor), "--duration", str(DAY_BEFORE_S + 86400 + TAIL_S)],
            )  # fmt: skip
        for name in nb.home_names():
            d = nb.home_dir(name)
            endpoints_file = d / "sim" / "endpoints.json"
            wait_for(endpoints_file, sims[name], 60)
            endpoints = json.loads(endpoints_file.read_text())
            gw_cfg = d / "gateway.yaml"
            gw_cfg.write_text(
                yaml.safe_dump(nb.gateway_config(name, endpoints, port, mqtt_port), sort_keys=False)
            )
            self.procs.start(name, _python("homeflex.cli", "edge", "run", "--config", str(gw_cfg)))
        self.say(f"{nb.homes} homes: a firmware-sim and a gateway each")
        # The round opens once the devices run: the gateways then plan what they see (a
        # commuter's car plugged in for the night), not the simulators' resting state.
        time.sleep(max(0.0, self.anchor + 1.0 - time.time()))
        platform = nb.workdir / "cloud.yaml"
        platform.write_text(
            yaml.safe_dump(nb.platform_config(port, ANSWER_WINDOW_S), sort_keys=False)
        )
        cloud = self.procs.start(
            "cloud",
            _python("homeflex.cli", "cloud", "run", "--config", str(platform),
                    "--open", nb.day.isoformat()),
            pipe=True,
        )  # fmt: skip
        _ready_line(cloud, "the aggregator platform", 60)
        self.say(
            f"aggregator {AGGREGATOR} and {DSO} connected; transformer limit {nb.limit_kw:g} kW; "
            f"day-ahead round for {nb.day} opened"
        )

    def follow(self) -> None:
        """Until the simulated day is over (and the next day's first PTUs, which make the
        day's last one final in the history): progress lines as the cycle and the day go on."""
        end = day_start(self.nb.day).timestamp() + 86400 + AFTER_DAY_S
        said: set[str] = set()
        next_hour = day_start(self.nb.day).timestamp() + PROGRESS_EVERY_S
        snapped: set[str] = set()
        while self.sim_now() < end:
            self.procs.check()
            self._snap_midnight_plans(snapped)
            for line in self._cycle_news(said):
                self.say(line)
            if self.sim_now() >= next_hour:
                kw = self._neighbourhood_kw()
                if kw is not None:
                    self.say(
                        f"{self.local(next_hour)}: the homes import {kw:5.1f} kW "
                        f"(limit {self.nb.limit_kw:g} kW)"
                    )
                next_hour += PROGRESS_EVERY_S
            time.sleep(0.5)

    def _snap_midnight_plans(self, snapped: set[str]) -> None:
        """Keep each home's plan of the day's midnight (with its KPIs against the baseline)
        for the report: later plans cover only what is left of the day."""
        midnight = f"{self.nb.day.isoformat()}T00:00:00Z"
        for name in self.nb.home_names():
            if name in snapped:
                continue
            d = self.nb.home_dir(name)
            plan = _json(d / "gateway" / "plan.json")
            if plan is not None and plan.get("start") == midnight:
                (d / "plan-at-midnight.json").write_text(json.dumps(plan))
                snapped.add(name)

    def _cycle_news(self, said: set[str]) -> list[str]:
        """What the agents report that was not said yet."""
        news = []
        agg = _json(self.nb.workdir / "cloud" / AGGREGATOR / "status.json") or {}
        dso = _json(self.nb.workdir / "cloud" / DSO / "status.json") or {}
        for r in agg.get("rounds", []):
            key = f"round:{r['id']}:{r['closed']}"
            if r["closed"] and key not in said:
                said.add(key)
                news.append(
                    f"round {r['id']} closed: {r['answers']} of {self.nb.homes} homes answered"
                )
        limit = self.nb.limit_kw
        for c in dso.get("checks", []):
            gen = c["generation"]
            if c["request_kw"] and f"request:{gen}" not in said:
                said.add(f"request:{gen}")
                news.append(
                    f"DSO: D-prognosis peaks at {max(c['prognosis_kw']):.1f} kW, over the "
                    f"{limit:g} kW limit in {len(c['request_kw'])} PTUs: asks for flexibility"
                )
            if c["safe"] is None or f"decided:{gen}" in said:
                continue
            said.add(f"decided:{gen}")
            if c["orders"]:
                bought = sum(o["kwh"] for o in c["orders"])
                cost = sum(o["eur"] for o in c["orders"])
                news.append(
                    f"DSO: bought {bought:.1f} kWh for {cost:.2f} €; planned peak now "
                    f"{max(c['after_kw']):.1f} kW"
                )
            if c["safe"]:
                news.append(f"DSO: {c['day']} is safe (planned peak {max(c['after_kw']):.1f} kW)")
            else:
                over = sum(1 for kw in c["after_kw"] if kw > limit + 1e-6)
                news.append(f"DSO: not enough flexibility offered; {over} PTUs stay over the limit")
        orders = sum(len(_agent_status(self.nb, n).get("orders", [])) for n in self.nb.home_names())
        decided = any(key.startswith("decided:") for key in said)
        if decided and orders and f"orders:{orders}" not in said:
            said.add(f"orders:{orders}")
            news.append(f"the homes hold {orders} flexibility order{'s' * (orders > 1)}")
        return news

    def _neighbourhood_kw(self) -> float | None:
        """The homes' mean import over the last complete PTU, from the simulated meters."""
        total, n = 0.0, 0
        for name in self.nb.home_names():
            rows = _csv_tail(self.nb.home_dir(name) / "sim" / "meter_ptu.csv", 2)
            if len(rows) == 2:
                (_, i0, e0), (_, i1, e1) = rows
                total += ((i1 - i0) - (e1 - e0)) / 1000 / (PTU_SECONDS / 3600)
                n += 1
        return total if n else None

    def finish(self) -> None:
        for name in self.nb.home_names():
            self.procs.stop(name)
        self.say("gateways stopped")
        deadline = time.time() + TAIL_S / self.speed + 30
        for name in self.nb.home_names():
            for n, proc, _ in self.procs.started:
                if n == f"{name}-sim":
                    proc.wait(max(1.0, deadline - time.time()))
        self._wait_for_settlement()
        self.procs.stop("cloud")
        self.procs.stop("xmpp")

    def _wait_for_settlement(self) -> None:
        """Settle: the aggregator pays its homes from the history, sends the DSO the sum, the
        DSO pays the aggregator. Waits until every order is settled or SETTLE_WAIT_S."""
        home_orders = sum(
            len(_agent_status(self.nb, n).get("orders", [])) for n in self.nb.home_names()
        )
        deadline = time.time() + SETTLE_WAIT_S
        while True:
            agg = _json(self.nb.workdir / "cloud" / AGGREGATOR / "status.json") or {}
            dso = _json(self.nb.workdir / "cloud" / DSO / "status.json") or {}
            dso_orders = sum(len(c["orders"]) for c in dso.get("checks", []))
            homes, sold = agg.get("settlements", []), dso.get("settlements", [])
            if (len(homes) >= home_orders and len(sold) >= dso_orders) or time.time() > deadline:
                break
            time.sleep(0.5)
        if not home_orders:
            return
        self.say(
            f"settled: {len(homes)} of {home_orders} home orders, "
            f"{sum(x['payment_eur'] for x in homes):.2f} € paid to the homes, "
            f"{sum(x['penalty_eur'] for x in homes):.2f} € in penalties; the DSO settled "
            f"{len(sold)} of {dso_orders} orders, {sum(x['net_eur'] for x in sold):.2f} € to "
            f"{AGGREGATOR}"
        )


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data


def _agent_status(nb: Neighbourhood, name: str) -> dict[str, Any]:
    status = _json(nb.home_dir(name) / "gateway" / "status.json") or {}
    agent: dict[str, Any] = status.get("agent", {})
    return agent


def _csv_tail(path: Path, n: int) -> list[tuple[float, float, float]]:
    try:
        lines = path.read_text().splitlines()[1:]
    except OSError:
        return []
    rows = [tuple(float(x) for x in r) for r in csv.reader(lines[-n:])]
    return [(r[0], r[1], r[2]) for r in rows if len(r) == 3]


def run(homes: int, speed: float, workdir: Path, say: Callable[[str], None] = print) -> Path:
    """The whole demo; returns the report's path."""
    from homeflex.neighbourhood.report import write_report

    if workdir.exists() and any(workdir.iterdir()):
        if not (workdir / MARKER).exists():
            raise RuntimeError(
                f"{workdir} exists and was not written by the demo; choose another --workdir"
            )
        shutil.rmtree(workdir)  # the previous run's
    nb = Neighbourhood(workdir, homes)
    began = time.time()
    nb.prepare()
    (workdir / MARKER).write_text("written by homeflex demo; removed by the next run\n")
    r = Run(nb, speed, say)
    # SIGTERM (a `timeout`, a service manager) stops the demo as Ctrl-C does: through the
    # `finally` below, which stops every process it started
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    say(
        f"neighbourhood of {homes} homes, {nb.day}, at {speed:g}x: about "
        f"{STARTUP_S + (DAY_BEFORE_S + 86400) / speed + 30:.0f} s; logs in {nb.workdir / 'logs'}"
    )
    try:
        r.start()
        r.follow()
        r.finish()
    finally:
        r.procs.stop_all()
    report = write_report(nb, time.time() - began)
    say(f"done in {time.time() - began:.0f} s; report: {report}")
    return report
