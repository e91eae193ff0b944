"""The neighbourhood demo's telemetry as the demo starts it (common/neighbourhood/telemetry.py):
the neighbourhood's PKI, the broker and the ingest as their own processes from the module's
command lines, a home sending with the credentials its agent has, and the aggregator's view of
the history (`HistoryMeters`, as the platform's settlement opens it)."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from homeflex.cloud.aggregator.meters import HistoryMeters
from homeflex.edge.config import TelemetryConfig
from homeflex.mqtt_client import MqttLink
from homeflex.neighbourhood import telemetry as tm
from homeflex.neighbourhood.scenario import DAY, Neighbourhood, day_start
from homeflex.pki.bundle import Credentials
from homeflex.security import read_events
from homeflex.telemetry import Ack, Batch, PtuItem, ReadingItem, ack_topic, new_batch_id, seal
from homeflex.telemetry import telemetry_topic as topic_of
from tests.integration.simhome import run_sim

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs mosquitto"),
]

SPEED = 500.0  # the demo's
DAY0_MS = round(day_start(DAY).timestamp() * 1000)
PTU_MS = 900_000


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """As the demo's Processes.start: output into a log, a session of its own."""
    return subprocess.Popen(
        args,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@dataclass
class Demo:
    nb: Neighbourhood
    port: int

    @property
    def history(self) -> Path:
        return tm.history_dir(self.nb.workdir)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    nb = Neighbourhood(tmp_path_factory.mktemp("nb") / "demo", homes=2)
    nb.prepare()  # the broker's and the ingest's credentials among the rest
    port = tm.pick_port()
    logs = nb.workdir / "logs"
    logs.mkdir()
    broker = start(tm.broker_command(nb.pki, nb.workdir, port), logs / "mqtt.log")
    ingest: subprocess.Popen[bytes] | None = None
    try:
        tm.wait_broker(broker, nb.workdir)
        ingest = start(tm.ingest_command(nb.pki, nb.workdir, port), logs / "ingest.log")
        tm.wait_ingest(ingest, logs / "ingest.log")
        yield Demo(nb, port)
        assert ingest.poll() is None, (logs / "ingest.log").read_text()[-3000:]
        assert broker.poll() is None, (logs / "mqtt.log").read_text()[-3000:]
    finally:
        if ingest is not None:
            stop(ingest)
        stop(broker)


def meters_until(
    demo: Demo, home: str, ptus: int, timeout_s: float, alive: list[subprocess.Popen[bytes]]
) -> dict[int, float]:
    """The home's final PTU energies of DAY once at least `ptus` of them are in the history."""
    deadline = time.monotonic() + timeout_s
    while True:
        kwh: dict[int, float] = {}
        if (demo.history / "history.db").is_file():
            meters = HistoryMeters.open(demo.history)
            try:
                kwh = meters.day_kwh([home], DAY).get(home, {})
            finally:
                meters.close()
        if len(kwh) >= ptus:
            return kwh
        for proc in alive:
            assert proc.poll() is None, f"{proc.args!r} exited"
        assert time.monotonic() < deadline, f"{home}: {len(kwh)} final PTUs, wanted {ptus}"
        time.sleep(0.3)


def test_a_home_sends_with_its_agent_credentials_and_the_aggregator_reads_its_energies(
    demo: Demo,
) -> None:
    """Signed batches on the home's topic, over the broker the demo starts, in the history as
    the settlement reads it: the newest item of a PTU counts, a PTU only once a later one has
    arrived, and only the meter."""
    creds = Credentials.load(demo.nb.party("home-01").creds)
    acks: list[Ack] = []
    link = MqttLink(creds, tm.HOST, demo.port)
    link.connect()
    try:
        link.subscribe(ack_topic("home-01"), lambda t, p: acks.append(Ack.decode(p)))

        def send(ptus: list[PtuItem], readings: list[ReadingItem]) -> None:
            batch = Batch("home-01", new_batch_id(), time.time(), DAY0_MS / 1000, readings, ptus,
                          {"meter": 60.0})  # fmt: skip
            frame = seal(batch, topic_of("home-01"), creds.key(), creds.chain())
            link.publish(topic_of("home-01"), frame)
            deadline = time.monotonic() + 15
            while batch.id not in {a.batch for a in acks}:
                assert time.monotonic() < deadline, "the ingest did not acknowledge the batch"
                time.sleep(0.05)

        def ptu(seq: int, t: int, imp: float, exp: float, device: str = "meter") -> PtuItem:
            return PtuItem(seq, device, DAY0_MS + t * PTU_MS, imp, exp, False, None)

        send(
            [ptu(1, 0, 250.0, 0.0), ptu(2, 1, 100.0, 40.0), ptu(3, 1, 999.0, 0.0, "pv")],
            [ReadingItem(4, "meter", "import_wh", DAY0_MS + 60_000, 12_345.0)],
        )
        # PTU 1 again, as the box resends the PTU in progress (a newer item replaces it); PTU 3
        # has begun, so PTU 2 is final and PTU 3 is not
        send([ptu(5, 1, 180.0, 40.0), ptu(6, 2, 0.0, 320.0), ptu(7, 3, 75.0, 0.0)], [])
    finally:
        link.close()
    meters = HistoryMeters.open(demo.history)
    try:
        got = meters.day_kwh(["home-01", "home-02"], DAY)
    finally:
        meters.close()
    assert got == {"home-01": {0: pytest.approx(0.25), 1: pytest.approx(0.14),
                               2: pytest.approx(-0.32)}}  # fmt: skip
    assert read_events(demo.history / "security.log") == []  # nothing refused


def sim_ptu_kwh(meter_csv: Path) -> dict[int, float]:
    """The simulator's own meter: net import (kWh) per PTU of DAY, from its PTU boundaries."""
    rows = {
        round(float(r["sim_time"]) * 1000): float(r["import_wh"]) - float(r["export_wh"])
        for r in csv.DictReader(meter_csv.open())
    }
    return {
        (ms - DAY0_MS) // PTU_MS: (rows[ms + PTU_MS] - net) / 1000
        for ms, net in rows.items()
        if ms >= DAY0_MS and ms + PTU_MS in rows
    }


def test_a_demo_gateway_at_500x_fills_the_history_ptu_for_ptu(demo: Demo) -> None:
    """home-02's firmware-sim and gateway (the demo's configuration with `telemetry_section`):
    the PTU energies the aggregator reads are the simulated meter's."""
    nb, name = demo.nb, "home-02"
    d = nb.home_dir(name)
    anchor = time.time() + 6.0  # the gateway is up before the simulated clock starts
    start_at = day_start(DAY) - timedelta(minutes=30)  # PTU 0 seen whole
    with run_sim(d / "home.yaml", d, speed=SPEED, start=start_at, anchor=anchor,
                 duration=8 * 3600) as sim:  # fmt: skip  # outlives the wait below
        cfg = nb.gateway_config(name, sim.endpoints, xmpp_port=1, mqtt_port=demo.port)
        # no agent (no XMPP server here) and no planner (CPU): telemetry needs neither
        del cfg["agent"], cfg["home"]
        assert cfg["telemetry"] == tm.telemetry_section(demo.port)
        TelemetryConfig(**cfg["telemetry"])  # the gateway's own check of the section
        (d / "gateway.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        gw = start(
            [sys.executable, "-m", "homeflex.cli", "edge", "run",
             "--config", str(d / "gateway.yaml")],
            d / "gateway.log",
        )  # fmt: skip
        try:
            # 23:30 to 01:15 simulated is 12.6 s; PTU 3 is final once PTU 4's item is in
            got = meters_until(demo, name, 4, 45.0, [gw, sim.proc])
        finally:
            stop(gw)
    want = sim_ptu_kwh(d / "sim" / "meter_ptu.csv")
    assert set(range(4)) <= set(got) <= set(want)
    for t, kwh in got.items():
        # the gateway apportions each 60 s poll interval linearly across a PTU boundary: the
        # boundary's minute is off by its deviation from linear (under 1 Wh in this home)
        assert kwh == pytest.approx(want[t], abs=0.002), (t, got, want)
    assert sum(abs(v) for v in got.values()) > 0.1  # the home used energy: not a trivial match
    assert read_events(demo.history / "security.log") == []


def test_a_broker_whose_port_is_taken_says_so(demo: Demo, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind((tm.HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = start(tm.broker_command(demo.nb.pki, tmp_path, port), tmp_path / "mqtt.log")
        try:
            with pytest.raises(RuntimeError, match="the MQTT broker exited") as err:
                tm.wait_broker(proc, tmp_path)
        finally:
            stop(proc)
    assert "Address already in use" in str(err.value)
