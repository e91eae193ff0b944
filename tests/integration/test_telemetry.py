"""Acceptance: from firmware-sim through the gateway (a real process) and a real Mosquitto (TLS,
client certificates, ACL) to the history. A simulated day arrives PTU for PTU as the simulated
meter counted it; through a two-hour broker outage with the gateway killed twice (SIGKILL),
every reading the box stored reaches the history exactly once."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from homeflex.agents.chains import ChainVerifier
from homeflex.cloud.history.handler import BatchHandler
from homeflex.cloud.history.ingest import Ingest
from homeflex.cloud.history.keys import HistoryKeys, Identities
from homeflex.cloud.history.sqlite import SqliteHistory
from homeflex.cloud.mqtt.broker import Broker
from homeflex.demo import compare_ptus, gateway_config
from homeflex.mqtt_client import MqttLink
from homeflex.pki.bundle import Credentials
from homeflex.pki.identity import Identity, Role
from homeflex.pki.trust import TrustStore
from homeflex.security import SecurityLog
from tests.integration.simhome import REPO, SimHome, run_sim
from tests.pki_fixtures import CredsFactory

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs mosquitto"),
]

BROKER_ID = Identity("tel-mqtt", Role.SERVICE, dns=("localhost",), ips=("127.0.0.1",))
INGEST_ID = Identity("tel-ingest", Role.SERVICE)
BOX_ID = Identity("tel-box", Role.HOME)
HOME_FILE = REPO / "firmware-sim" / "homes" / "detached.yaml"
START = datetime(2026, 6, 21, tzinfo=UTC)


@dataclass
class Cloud:
    broker: Broker
    ingest: Ingest
    store: SqliteHistory
    keys: HistoryKeys
    link: MqttLink


@pytest.fixture
def cloud(creds: CredsFactory, tmp_path: Path) -> Iterator[Cloud]:
    broker = Broker(creds(BROKER_ID), tmp_path / "broker", services=[INGEST_ID.name])
    broker.start()
    keys = HistoryKeys.load(tmp_path / "history" / "keys")
    store = SqliteHistory(tmp_path / "history" / "history.db", keys.integrity)
    ingest_creds = creds(INGEST_ID)
    identities = Identities(tmp_path / "history" / "keys" / "identities.db")
    handler = BatchHandler(store, keys, identities, ChainVerifier(TrustStore.of(ingest_creds)))
    ingest = Ingest([handler], SecurityLog(tmp_path / "history" / "security.log"))
    link = MqttLink(ingest_creds, "127.0.0.1", broker.port, max_inflight=0)
    link.connect()
    ingest.attach(link)
    yield Cloud(broker, ingest, store, keys, link)
    link.close()
    ingest.close()
    broker.stop()
    store.close()


def start_gateway(
    workdir: Path, sim: SimHome, box: Credentials, port: int, home_file: Path = HOME_FILE
) -> subprocess.Popen[bytes]:
    cfg_path = workdir / "gateway.yaml"
    if not cfg_path.exists():
        cfg = gateway_config(sim.endpoints, home_file, workdir)
        cfg["credentials"] = str(box.dir)
        cfg["telemetry"] = {"broker": f"mqtts://127.0.0.1:{port}", "every_s": 0.2}
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    log = (workdir / "gateway.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "homeflex.cli", "edge", "run", "--config", str(cfg_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def wait_for_log(log: Path, text: str, times: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while log.read_text().count(text) < times:
        assert time.monotonic() < deadline, f"{text!r} not {times} times in {log}"
        time.sleep(0.1)


def outbox_size(store_db: Path) -> int:
    db = sqlite3.connect(f"file:{store_db}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
    finally:
        db.close()


def drain_and_stop(sim: SimHome, gw: subprocess.Popen[bytes], store_db: Path) -> None:
    """Stop the devices, let the uplink empty the outbox, then stop the gateway."""
    sim.proc.send_signal(signal.SIGTERM)
    sim.proc.wait(20)
    time.sleep(2.0)  # the gateway's writer commits what it still holds
    deadline = time.monotonic() + 120
    while outbox_size(store_db) > 0:
        assert gw.poll() is None, "the gateway died"
        assert time.monotonic() < deadline, f"outbox still holds {outbox_size(store_db)} rows"
        time.sleep(0.5)
    gw.send_signal(signal.SIGTERM)
    gw.wait(30)


def box_readings(store_db: Path) -> list[tuple[str, str, int, float]]:
    db = sqlite3.connect(f"file:{store_db}?mode=ro", uri=True)
    try:
        return sorted(
            db.execute(
                "SELECT d.name, s.quantity, r.ts_ms, r.value FROM readings r"
                " JOIN series s ON s.id = r.series JOIN devices d ON d.id = s.device"
            ).fetchall()
        )
    finally:
        db.close()


def history_readings(cloud: Cloud) -> list[tuple[str, str, int, float]]:
    pid = cloud.keys.pid(BOX_ID.name)
    return sorted(
        (r.device, r.quantity, r.ts_ms, r.value) for r in cloud.store.readings(pid, 0, 2**62)
    )


def test_a_simulated_day_reaches_the_history_ptu_for_ptu(
    cloud: Cloud, creds: CredsFactory, tmp_path: Path
) -> None:
    box = creds(BOX_ID)
    speed, hours = 1440.0, 24.0
    anchor = time.time() + 4.0
    with run_sim(HOME_FILE, tmp_path, speed=speed, start=START, anchor=anchor,
                 duration=hours * 3600 + 1800) as sim:  # fmt: skip
        gw = start_gateway(tmp_path, sim, box, cloud.broker.port)
        try:
            while time.time() < anchor + hours * 3600 / speed:
                assert gw.poll() is None, (tmp_path / "gateway.log").read_text()[-3000:]
                time.sleep(0.5)
            drain_and_stop(sim, gw, tmp_path / "gateway" / "store.db")
        finally:
            if gw.poll() is None:
                gw.kill()
    pid = cloud.keys.pid(BOX_ID.name)
    ptus = [
        (p.ptu_start_ms / 1000, p.import_wh, p.export_wh, p.estimated)
        for p in cloud.store.ptus(pid, 0, 2**62)
        if p.device == "meter"
    ]
    meter = [r for r in history_readings(cloud) if r[:2] == ("meter", "import_wh")]
    cmp = compare_ptus(ptus, tmp_path / "sim" / "meter_ptu.csv", meter[-1][2] / 1000)
    assert cmp.ptus >= 90, cmp  # a day is 96 PTUs; start-up and shut-down may cost a few
    assert cmp.max_rel_error <= 0.001, cmp
    assert cmp.store_export_wh == pytest.approx(cmp.sim_export_wh, rel=0.001)
    # and every raw reading the box stored is in the history, once
    assert history_readings(cloud) == box_readings(tmp_path / "gateway" / "store.db")
    assert cloud.store.check_integrity() == []
    assert cloud.ingest.refused == {}


def test_broker_outage_and_two_sigkills_lose_and_duplicate_nothing(
    cloud: Cloud, creds: CredsFactory, tmp_path: Path
) -> None:
    box = creds(BOX_ID)
    speed = 720.0  # a simulated hour is 5 real seconds
    hour = 3600 / speed
    anchor = time.time() + 4.0
    store_db = tmp_path / "gateway" / "store.db"
    with run_sim(HOME_FILE, tmp_path, speed=speed, start=START, anchor=anchor,
                 duration=8 * 3600) as sim:  # fmt: skip
        gw = start_gateway(tmp_path, sim, box, cloud.broker.port)
        try:
            time.sleep(anchor + 1 * hour - time.time())
            assert cloud.store.boxes(), "nothing arrived before the outage"
            cloud.broker.stop()  # two simulated hours without a broker
            outage_end = time.time() + 2 * hour
            for started in (1, 2):
                # kill it once it runs (has logged its start) and has stored some readings
                wait_for_log(tmp_path / "gateway.log", "gateway sim-detached: ", started)
                time.sleep(0.3 * hour)
                gw.send_signal(signal.SIGKILL)
                gw.wait()
                gw = start_gateway(tmp_path, sim, box, cloud.broker.port)
            wait_for_log(tmp_path / "gateway.log", "gateway sim-detached: ", 3)
            queued = outbox_size(store_db)
            time.sleep(max(0.0, outage_end - time.time()))
            cloud.broker.start()
            time.sleep(2 * hour)  # current data and the backlog flow again
            drain_and_stop(sim, gw, store_db)
        finally:
            if gw.poll() is None:
                gw.kill()
    assert queued > 0  # the outbox held the outage's readings
    got, want = history_readings(cloud), box_readings(store_db)
    assert len(got) == len(set(got)), "a reading is in the history twice"
    assert {r[:3] for r in got} == {r[:3] for r in want}  # no reading lost
    assert got == want  # and each with its value
    assert cloud.store.check_integrity() == []


REPORT_HOME = {
    "name": "report",
    "seed": 3,
    "step_s": 10,
    "site": {"latitude": 52.09, "longitude": 5.12, "utc_offset_h": 1},
    "weather": {"outdoor_mean_c": 15, "outdoor_amplitude_c": 4, "cloudiness": 0.0},
    "base_load": {"annual_kwh": 2800},
    "devices": [
        {"id": "meter", "kind": "meter", "modbus": {"port": 0, "unit": 1, "template": "meter-3ph"}},
        {
            "id": "pv",
            "kind": "pv",
            "kwp": 4.0,
            "modbus": {"port": 0, "unit": 1, "template": "pv-inverter"},
        },
    ],
}


def test_the_data_path_report_shows_the_injected_gap_and_spike_and_nothing_else(
    cloud: Cloud, creds: CredsFactory, tmp_path: Path
) -> None:
    import asyncio

    from homeflex.cloud.history.report import box_report

    box = creds(BOX_ID)
    speed = 60.0  # a simulated minute a second
    anchor = time.time() + 4.0
    t0 = START.timestamp()
    home_file = tmp_path / "report-home.yaml"
    home_file.write_text(yaml.safe_dump(REPORT_HOME))
    with run_sim(home_file, tmp_path, speed=speed, start=START, anchor=anchor,
                 duration=3600) as sim:  # fmt: skip

        def at(sim_minutes: float) -> None:
            time.sleep(max(0.0, anchor + sim_minutes * 60 / speed - time.time()))

        gw = start_gateway(tmp_path, sim, box, cloud.broker.port, home_file)
        try:
            at(6)
            asyncio.run(sim.control({"cmd": "fault", "device": "meter", "fault": "timeout"}))
            at(9)
            asyncio.run(sim.control({"cmd": "clear", "device": "meter"}))
            at(14)
            asyncio.run(sim.control({"cmd": "fault", "device": "meter", "fault": "spike"}))
            at(22)
            drain_and_stop(sim, gw, tmp_path / "gateway" / "store.db")
        finally:
            if gw.poll() is None:
                gw.kill()
    pid = cloud.keys.pid(BOX_ID.name)
    report = box_report(cloud.store, pid, t0 + 120, t0 + 20 * 60)
    by_device = {d.device: d for d in report.devices}
    assert set(by_device) == {"meter", "pv"}
    meter, pv = by_device["meter"], by_device["pv"]
    assert pv.gaps == [] and pv.outliers == [], pv.render()
    (gap,) = meter.gaps
    # from the last poll before the fault to the first after it; the poller backs off while a
    # device times out, so it comes back up to a few simulated minutes after the clear
    assert t0 + 6 * 60 - 20 <= gap.start and gap.end <= t0 + 9 * 60 + 180, meter.render()
    assert gap.duration_s >= 120, meter.render()
    (spike,) = meter.outliers
    assert spike.reason == "power_spike" and t0 + 14 * 60 <= spike.ts <= t0 + 15 * 60
    assert meter.valid == meter.received - 1
    assert report.effectiveness_pct < 100.0


def test_the_ingest_command_refuses_bad_batches_over_the_broker_and_goes_on(
    creds: CredsFactory, tmp_path: Path
) -> None:
    """`homeflex cloud history ingest` as its own process behind a real Mosquitto."""
    from homeflex.mqtt_client import PublishRefused
    from homeflex.security import read_events
    from homeflex.telemetry import Ack, ReadingItem, ack_topic, new_batch_id, seal
    from homeflex.telemetry import Batch as TBatch
    from homeflex.telemetry import telemetry_topic as ttopic

    broker = Broker(creds(BROKER_ID), tmp_path / "broker", services=[INGEST_ID.name])
    broker.start()
    data = tmp_path / "history"
    ingest_creds = creds(INGEST_ID)
    log = (tmp_path / "ingest.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "homeflex.cli", "cloud", "history", "ingest", "--data", str(data),
         "--creds", str(ingest_creds.dir), "--broker", f"mqtts://127.0.0.1:{broker.port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    a, b = creds(BOX_ID), creds(Identity("tel-box-b", Role.HOME))
    acks: list[Ack] = []
    box = MqttLink(a, "127.0.0.1", broker.port)
    other = MqttLink(b, "127.0.0.1", broker.port)
    try:
        box.connect()
        other.connect()
        box.subscribe(ack_topic(BOX_ID.name), lambda t, p: acks.append(Ack.decode(p)))

        def frame(first: int) -> bytes:
            readings = [ReadingItem(first + i, "meter", "power_w", 1_700_000_000_000 + i, 5.0)
                        for i in range(3)]  # fmt: skip
            batch = TBatch(BOX_ID.name, new_batch_id(), time.time(), time.time(), readings)
            return seal(batch, ttopic(BOX_ID.name), a.key(), a.chain())

        def wait_for(what: str, ok: object) -> None:
            deadline = time.monotonic() + 15
            while not ok():  # type: ignore[operator]
                assert proc.poll() is None, (tmp_path / "ingest.log").read_text()
                assert time.monotonic() < deadline, (
                    f"{what}: {(tmp_path / 'ingest.log').read_text()}"
                )
                time.sleep(0.1)

        topic = ttopic(BOX_ID.name)
        good = frame(1)
        # the ingest may still be connecting: publish until the first batch is acknowledged
        wait_for("first ack", lambda: acks or box.publish(topic, good) or False)
        events = data / "security.log"
        box.publish(topic, good)  # a replay
        flipped = bytearray(frame(4))
        flipped[-3] ^= 0x10
        box.publish(topic, bytes(flipped))  # a bad signature
        box.publish(topic, b"HFT1 not a batch")  # malformed
        box.publish(topic, frame(4))  # the next good one
        wait_for("second ack", lambda: len({x.batch for x in acks}) >= 2)
        kinds = [e.kind for e in read_events(events)]
        assert kinds.count("telemetry-bad-signature") == 1
        assert kinds.count("telemetry-malformed") == 1
        assert kinds.count("telemetry-replay") >= 1  # the first good frame may have gone twice
        # another box cannot even publish on this box's topic: the broker refuses it
        with pytest.raises(PublishRefused):
            other.publish(topic, seal(TBatch("tel-box-b", new_batch_id(), time.time(),
                                             time.time(), [ReadingItem(1, "m", "power_w", 1, 1.0)]),
                                      topic, b.key(), b.chain()))  # fmt: skip
    finally:
        box.close()
        other.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        broker.stop()
    keys = HistoryKeys.load(data / "keys")
    history = SqliteHistory(data / "history.db", keys.integrity)
    try:
        pid = keys.pid(BOX_ID.name)
        counts = history.counts(pid)
        assert counts["readings"] == 6 and counts["batches"] == 2
        assert counts["replays"] >= 1
        assert history.check_integrity() == []
    finally:
        history.close()


def test_without_the_owners_consent_no_reading_leaves_the_box(
    cloud: Cloud, creds: CredsFactory, tmp_path: Path
) -> None:
    """The owner said no (preferences.json, set on the web page): the box records its home as
    ever, its outbox is emptied as it fills and the cloud receives nothing."""
    box = creds(BOX_ID)
    (tmp_path / "gateway").mkdir()
    (tmp_path / "gateway" / "preferences.json").write_text(
        json.dumps({"neighbourhood": {"share_telemetry": False}})
    )
    store_db = tmp_path / "gateway" / "store.db"
    with run_sim(HOME_FILE, tmp_path, speed=600.0, start=START) as sim:
        gw = start_gateway(tmp_path, sim, box, cloud.broker.port)
        try:
            wait_for_log(tmp_path / "gateway.log", "gateway sim-detached:", 1)
            deadline = time.monotonic() + 60
            while len(box_readings(store_db)) < 500:  # some minutes of the home recorded
                assert time.monotonic() < deadline and gw.poll() is None
                time.sleep(0.2)
            while outbox_size(store_db) > 0:  # emptied within the uplink's round (0.2 s)
                assert time.monotonic() < deadline
                time.sleep(0.05)
        finally:
            gw.send_signal(signal.SIGTERM)
            gw.wait(30)
    assert cloud.store.readings(cloud.keys.pid(BOX_ID.name), 0, 2**62) == []
    assert (tmp_path / "gateway.log").read_text().count("telemetry: withheld by the owner") == 1
