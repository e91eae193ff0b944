"""Telemetry ingest benchmark: many boxes, each on its own MQTT/TLS connection with its own home
certificate, publish one signed batch a second through a real Mosquitto to the cloud ingest,
which verifies and stores them in the SQLite history and acknowledges each. Prints the readings
and batches stored per second, the ingest lag (stored minus the batch's `sent`), whether the
ingest kept up (backlog when the publishers stop, time to catch up), CPU per process, and where
one batch's handling time goes (measured offline on one thread, and profiled).
Usage: PYTHONPATH=. python -m bench.telemetry_ingest [--boxes 1000] [--readings 20] [--seconds 30]

Layout: the broker (mosquitto and the Python process reading its log, as `homeflex cloud mqtt`
runs it) in a child process; the ingest's front in this process and its --ingest-workers worker
processes, as `homeflex cloud history ingest` runs them (paho's thread queues the batches, the
workers verify and store them, several batches a transaction, side by side in one SQLite file);
the boxes spread over --workers publisher
processes, each driving its paho clients from one selector loop (no thread per client). The
batches are sealed before the timed part, each with the `sent` time it is published at, so a
publisher only writes bytes to a socket; its lateness against that plan is printed too.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import logging
import multiprocessing
import os
import pstats
import random
import selectors
import sqlite3
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psutil
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from bench.machine import machine
from homeflex.agents.chains import ChainVerifier, b64decode_strict
from homeflex.cloud.history.handler import BatchHandler
from homeflex.cloud.history.ingest import Handler, Ingest
from homeflex.cloud.history.keys import HistoryKeys, Identities
from homeflex.cloud.history.layout import HistoryDir
from homeflex.cloud.history.sqlite import SqliteHistory
from homeflex.cloud.history.workers import WorkerProcess
from homeflex.cloud.mqtt.broker import Broker
from homeflex.mqtt_client import MqttLink, make_client
from homeflex.pki.bundle import Credentials, issue_credentials
from homeflex.pki.ca import init_fleet, init_root
from homeflex.pki.identity import Identity, Role
from homeflex.pki.trust import TrustStore
from homeflex.security import SecurityLog
from homeflex.telemetry import (
    SIGN_LABEL,
    Ack,
    Batch,
    ReadingItem,
    ack_topic,
    decode_body,
    encode_body,
    open_batch,
    seal,
    telemetry_topic,
)

PASSPHRASE = b"bench root passphrase"
HOST = "127.0.0.1"
BROKER_ID = Identity("bench-mqtt", Role.SERVICE, dns=("localhost",), ips=(HOST,))
INGEST_ID = Identity("bench-ingest", Role.SERVICE)
QUANTITIES = ("import_wh", "export_wh", "power_w", "voltage_v")
TARGET_READINGS_S = 20_000

log = logging.getLogger("bench.telemetry_ingest")


def box_name(index: int) -> str:
    return f"bench-box-{index + 1:04d}"


def batch_id(index: int, k: int) -> str:
    """32 hex digits that say which box sent the batch and which second it belongs to, so the
    ingest's side knows when it was sent without decoding it again."""
    return f"{index:08x}{k:08x}{random.getrandbits(64):016x}"


def planned_sent(t0: float, index: int, k: int, boxes: int) -> float:
    """When box `index` publishes its k-th batch: spread evenly over each second."""
    return t0 + k + index / boxes


def make_batch(index: int, k: int, readings: int, sent: float) -> Batch:
    ts_ms = round(sent * 1000)
    items = []
    for j in range(readings):
        quantity = QUANTITIES[j % len(QUANTITIES)]
        if quantity == "power_w":
            value = round(random.uniform(0.0, 3000.0), 1)
        elif quantity == "voltage_v":
            value = round(random.uniform(225.0, 235.0), 1)
        else:
            value = round(1000.0 + k * 0.8 + j, 3)
        items.append(ReadingItem(k * readings + j + 1, f"dev-{j // 4}", quantity, ts_ms, value))
    devices = {r.device for r in items}
    return Batch(
        box=box_name(index),
        id=batch_id(index, k),
        sent=sent,
        clock=sent,
        readings=items,
        poll_s=dict.fromkeys(sorted(devices), 1.0),
    )


def pct(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def ms(values: Sequence[float]) -> str:
    if not values:
        return "none"
    return (
        f"p50 {pct(values, 50) * 1000:,.0f} ms, p95 {pct(values, 95) * 1000:,.0f} ms, "
        f"max {max(values) * 1000:,.0f} ms"
    )


# --- the broker, in a child process -----------------------------------------------------------


def broker_process(creds_dir: str, workdir: str, services: list[str], conn: Connection) -> None:
    """Run the Broker (mosquitto + its log reader) until told to stop; sends its port first."""
    broker = Broker(Credentials(Path(creds_dir)), Path(workdir), host=HOST, services=services)
    broker.start()
    try:
        conn.send(broker.port)
        conn.recv()
    finally:
        broker.stop()
        conn.send("stopped")


# --- the publishers: many paho clients per process, one selector loop -------------------------


@dataclass(frozen=True)
class WorkerSpec:
    boxes: list[tuple[int, str]]  # (box index, credentials directory)
    port: int
    total_boxes: int
    readings: int
    seconds: int  # batches each box publishes (warm-up included)


@dataclass
class WorkerResult:
    published: int = 0
    publish_errors: int = 0
    puback_refused: int = 0
    acks: int = 0
    disconnects: int = 0
    connect_s: float = 0.0
    seal_s: float = 0.0
    frame_bytes: int = 0
    body_bytes: int = 0
    lateness: list[float] = field(default_factory=list)  # publish time minus planned `sent`
    ack_rtt: list[tuple[int, float]] = field(default_factory=list)  # (k, ack time - sent)


class _Box:
    def __init__(self, index: int, client: mqtt.Client, worker: _Worker) -> None:
        self.index = index
        self.name = box_name(index)
        self.topic = telemetry_topic(self.name)
        self.client = client
        self.worker = worker
        self.sock: Any = None
        self.writing = False
        self.connected = False
        self.subscribed = False
        self.frames: list[bytes] = []


class _Worker:
    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.result = WorkerResult()
        self.t0 = 0.0
        self.sel = selectors.DefaultSelector()
        self.boxes: list[_Box] = []
        self.stopping = False

    # paho callbacks (API version 2); userdata is the _Box
    @staticmethod
    def on_connect(
        client: mqtt.Client,
        box: _Box,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            raise RuntimeError(f"{box.name}: CONNACK {reason}")
        box.connected = True
        client.subscribe(ack_topic(box.name), qos=1)

    @staticmethod
    def on_subscribe(
        client: mqtt.Client,
        box: _Box,
        mid: int,
        codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        if any(c.is_failure for c in codes):
            raise RuntimeError(f"{box.name}: subscription to its acknowledgements refused")
        box.subscribed = True

    @staticmethod
    def on_publish(
        client: mqtt.Client, box: _Box, mid: int, reason: ReasonCode, properties: Properties
    ) -> None:
        if reason.is_failure:
            box.worker.result.puback_refused += 1

    @staticmethod
    def on_message(client: mqtt.Client, box: _Box, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        ack = Ack.decode(bytes(msg.payload))
        k = int(ack.batch[8:16], 16)
        w = box.worker
        sent = planned_sent(w.t0, box.index, k, w.spec.total_boxes)
        w.result.acks += 1
        w.result.ack_rtt.append((k, now - sent))

    @staticmethod
    def on_disconnect(
        client: mqtt.Client,
        box: _Box,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if not box.worker.stopping:
            box.worker.result.disconnects += 1
        box.connected = False

    def add(self, index: int, creds_dir: str) -> None:
        client = make_client(Credentials(Path(creds_dir)))
        box = _Box(index, client, self)
        client.user_data_set(box)
        client.on_connect = self.on_connect
        client.on_subscribe = self.on_subscribe
        client.on_publish = self.on_publish
        client.on_message = self.on_message
        client.on_disconnect = self.on_disconnect
        client.connect(HOST, self.spec.port, keepalive=60)  # TCP and TLS handshake, blocking
        box.sock = client.socket()
        self.sel.register(box.sock, selectors.EVENT_READ, box)
        self.boxes.append(box)
        self.flush(box)

    def flush(self, box: _Box) -> None:
        """Write what paho queued; watch for writability while some is left."""
        client = box.client
        if client.want_write():
            client.loop_write()
        want = client.want_write()
        if want != box.writing and box.sock is not None:
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if want else 0)
            with contextlib.suppress(KeyError, ValueError):
                self.sel.modify(box.sock, events, box)
            box.writing = want

    def service(self, box: _Box, mask: int) -> None:
        client = box.client
        if mask & selectors.EVENT_READ:
            rc = client.loop_read()
            # TLS may hold decrypted bytes select() does not see
            while rc == mqtt.MQTT_ERR_SUCCESS and isinstance(box.sock, ssl.SSLSocket):
                if not box.sock.pending():
                    break
                rc = client.loop_read()
            if rc != mqtt.MQTT_ERR_SUCCESS:
                with contextlib.suppress(KeyError, ValueError):
                    self.sel.unregister(box.sock)
                box.sock = None
                return
        self.flush(box)

    def poll(self, timeout: float, conn: Connection | None = None) -> bool:
        """One round of the selector loop; True when the main process said stop."""
        stop = False
        for key, mask in self.sel.select(timeout):
            if key.data is None:
                assert conn is not None
                stop = conn.recv() == "stop"
            else:
                self.service(key.data, mask)
        return stop

    def misc(self) -> None:
        for box in self.boxes:
            if box.sock is not None:
                box.client.loop_misc()
                self.flush(box)


def publisher(spec: WorkerSpec, conn: Connection) -> None:
    w = _Worker(spec)
    start = time.perf_counter()
    for index, creds_dir in spec.boxes:
        w.add(index, creds_dir)
    deadline = time.monotonic() + 120
    while not all(b.subscribed for b in w.boxes):
        if time.monotonic() > deadline:
            raise RuntimeError("publishers: not all boxes connected and subscribed in 120 s")
        w.poll(0.1)
    w.result.connect_s = time.perf_counter() - start
    conn.send("connected")

    # seal every batch, each with the time it will be published at
    w.t0 = conn.recv()
    start = time.perf_counter()
    schedule: list[tuple[float, int, int]] = []
    for n, box in enumerate(w.boxes):
        key = Credentials(Path(spec.boxes[n][1])).key()
        chain = Credentials(Path(spec.boxes[n][1])).chain()
        for k in range(spec.seconds):
            sent = planned_sent(w.t0, box.index, k, spec.total_boxes)
            box.frames.append(seal(make_batch(box.index, k, spec.readings, sent), box.topic,
                                   key, chain))  # fmt: skip
            schedule.append((sent, n, k))
    w.result.seal_s = time.perf_counter() - start
    w.result.frame_bytes = len(w.boxes[0].frames[0])
    w.result.body_bytes = len(encode_body(make_batch(0, 0, spec.readings, w.t0)))
    schedule.sort()
    conn.send(("sealed", w.result.seal_s))

    w.sel.register(conn, selectors.EVENT_READ, None)
    pos, last_misc, stop = 0, time.monotonic(), False
    while not stop:
        now = time.time()
        while pos < len(schedule) and schedule[pos][0] <= now:
            sent, n, k = schedule[pos]
            box = w.boxes[n]
            frame, box.frames[k] = box.frames[k], b""
            if box.sock is None:
                w.result.publish_errors += 1
            else:
                info = box.client.publish(box.topic, frame, qos=1)
                w.result.lateness.append(time.time() - sent)
                if info.rc == mqtt.MQTT_ERR_SUCCESS:
                    w.result.published += 1
                else:
                    w.result.publish_errors += 1
                w.flush(box)
            pos += 1
            now = time.time()
        timeout = min(0.5, schedule[pos][0] - now) if pos < len(schedule) else 0.5
        stop = w.poll(max(0.0, timeout), conn)
        if time.monotonic() - last_misc >= 1.0:
            w.misc()
            last_misc = time.monotonic()
    w.stopping = True
    for box in w.boxes:
        if box.sock is not None:
            box.client.disconnect()
    conn.send(w.result)


# --- the ingest, in this process --------------------------------------------------------------


class TimedIngest(Ingest):
    """The ingest, noting when each batch was done and how long its handling took (a group's
    round trip through a worker, shared by its batches)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.done: list[tuple[str, float, float]] = []  # (batch id, done at, handling s)
        self.refusals = 0

    def handle_many(
        self, messages: Sequence[tuple[str, bytes]], handler: Handler | None = None
    ) -> list[Ack | None]:
        start = time.perf_counter()
        acks = super().handle_many(messages, handler)
        took = (time.perf_counter() - start) / max(1, len(messages))  # a batch's share
        done = time.time()
        for ack in acks:
            if ack is None:
                self.refusals += 1
            else:
                self.done.append((ack.batch, done, took))
        return acks


def cpu_seconds(proc: psutil.Process) -> float:
    try:
        t = proc.cpu_times()
    except psutil.Error:
        return 0.0
    return float(t.user + t.system)


@dataclass
class CpuSnapshot:
    at: float
    procs: dict[str, float]
    machine_busy: float
    machine_total: float


def snapshot(procs: dict[str, list[psutil.Process]]) -> CpuSnapshot:
    sys_times = psutil.cpu_times()
    idle = sys_times.idle + getattr(sys_times, "iowait", 0.0)
    total = sum(sys_times)
    return CpuSnapshot(
        time.monotonic(),
        {name: sum(cpu_seconds(p) for p in ps) for name, ps in procs.items()},
        total - idle,
        total,
    )


# --- offline: where one batch's handling goes -------------------------------------------------


def macs(store: SqliteHistory, pid: str, batch: Batch) -> None:
    """The MACs SqliteHistory.add computes for a batch: one a reading, the box's and the
    fleet's totals (private methods: the bench times them alone)."""
    for r in batch.readings:
        store._reading_mac(pid, r.seq, r.device, r.quantity, r.ts_ms, r.value, 0, 0)
    store._box_mac(pid, 0, b"", 0, 0)
    store._fleet_mac(0, b"")


def per_op_us(fn: Callable[[], object], n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e6


def offline(
    base: Path, boxes: list[Credentials], ingest_creds: Credentials, readings: int, count: int
) -> list[str]:
    """Handle `count` batches from the boxes on this thread, without MQTT; lines to print."""
    work = base / "offline"
    work.mkdir()
    keys = HistoryKeys.load(work / "keys")
    now = time.time()
    frames: list[tuple[str, bytes]] = []
    signer = [(c.key(), c.chain()) for c in boxes]
    for n in range(count):
        index = n % len(boxes)
        k = n // len(boxes)
        topic = telemetry_topic(box_name(index))
        key, chain = signer[index]
        frames.append((topic, seal(make_batch(index, k, readings, now), topic, key, chain)))

    def fresh(name: str) -> tuple[Ingest, SqliteHistory]:
        store = SqliteHistory(work / f"{name}.db", keys.integrity)
        handler = BatchHandler(
            store,
            keys,
            Identities(work / f"{name}-identities.db"),
            ChainVerifier(TrustStore.of(ingest_creds)),
        )
        return Ingest([handler], SecurityLog(work / f"{name}-security.log")), store

    # warm: every chain verified once, as in steady state
    ingest, store = fresh("warm")
    t = time.perf_counter()
    for topic, frame in frames[: len(boxes)]:
        ingest.handle(topic, frame)
    cold_us = (time.perf_counter() - t) / min(len(boxes), len(frames)) * 1e6
    rest = frames[len(boxes) :] or frames
    t = time.perf_counter()
    for topic, frame in rest:
        ingest.handle(topic, frame)
    handle_s = (time.perf_counter() - t) / len(rest)
    store.close()

    # the steps of one batch, each alone
    topic, frame = rest[0]
    verifier = ChainVerifier(TrustStore.of(ingest_creds))
    head_len = int.from_bytes(frame[4:8], "big")
    head, body = json.loads(frame[8 : 8 + head_len]), frame[8 + head_len :]
    chain_b64 = tuple(head["chain"])
    sig = b64decode_strict(head["sig"])
    verified = verifier.verify(chain_b64, now)
    signed = SIGN_LABEL + topic.encode() + b"\x00" + body
    box = box_name(0)
    sample = open_batch(frame, topic, verifier, now)
    pid = keys.pid(sample.box)
    n = min(500, len(rest))
    opened = [open_batch(f, tp, verifier, now) for tp, f in rest[:n]]
    store2 = SqliteHistory(work / "add.db", keys.integrity)
    t = time.perf_counter()
    for b in opened:
        store2.add(keys.pid(b.box), b, now)
    add_us = (time.perf_counter() - t) / n * 1e6
    store2.close()
    steps = {
        "open_batch (all checks)": per_op_us(lambda: open_batch(frame, topic, verifier, now), n),
        "  chain verify (cached)": per_op_us(lambda: verifier.verify(chain_b64, now), n),
        "  ECDSA P-256 verify": per_op_us(
            lambda: verified.key.verify(sig, signed, ec.ECDSA(hashes.SHA256())), n
        ),
        "  decode_body (inflate, JSON, checks)": per_op_us(lambda: decode_body(body), n),
        "SqliteHistory.add (one transaction)": add_us,
        "  of which the rows' MACs (HMAC-SHA256)": per_op_us(lambda: macs(store2, pid, sample), n),
        "pseudonym (HMAC of the box name)": per_op_us(lambda: keys.pid(box), n),
    }

    ingest3, store3 = fresh("profile")
    for topic_, frame_ in frames[: len(boxes)]:
        ingest3.handle(topic_, frame_)
    prof = cProfile.Profile()
    prof.enable()
    for topic_, frame_ in rest:
        ingest3.handle(topic_, frame_)
    prof.disable()
    store3.close()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.strip_dirs().sort_stats("tottime").print_stats(14)

    lines = [
        f"offline, one thread, no MQTT ({len(rest):,} batches of {readings} readings, "
        f"{len(boxes):,} boxes, chains cached):",
        f"  Ingest.handle        {1 / handle_s:10,.0f} batches/s = {readings / handle_s:,.0f} "
        f"readings/s ({handle_s * 1e6:,.0f} µs a batch; first batch of a box "
        f"{cold_us:,.0f} µs with its chain check)",
    ]
    for name, us in steps.items():
        lines.append(f"  {name:38} {us:8,.0f} µs")
    lines.append("  profile of Ingest.handle, by own time (cProfile adds overhead):")
    keep = False
    for line in out.getvalue().splitlines():
        if line.strip().startswith("ncalls"):
            keep = True
        if keep and line.strip():
            lines.append("    " + line.rstrip())
    return lines


# --- the run ----------------------------------------------------------------------------------


def issue_boxes(fleet: Any, base: Path, boxes: int) -> list[Credentials]:
    return [
        issue_credentials(fleet, Identity(box_name(i), Role.HOME), base / "boxes" / box_name(i))
        for i in range(boxes)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\nUsage:")[0])
    parser.add_argument("--boxes", type=int, default=1000, help="simulated boxes")
    parser.add_argument("--readings", type=int, default=20, help="readings per box per batch")
    parser.add_argument("--seconds", type=int, default=30, help="measured seconds of publishing")
    parser.add_argument("--warmup", type=int, default=5, help="seconds published before that")
    parser.add_argument("--workers", type=int, default=4, help="publisher processes")
    parser.add_argument(
        "--catch-up", type=float, default=120.0, help="seconds to wait for the ingest afterwards"
    )
    parser.add_argument("--offline", type=int, default=3000, help="batches handled offline")
    parser.add_argument(
        "--ack-inflight",
        type=int,
        default=0,
        help="paho's in-flight window for the ingest's QoS 1 acknowledgements (the product's "
        "ingest uses 0, no limit; paho's default is 20)",
    )
    parser.add_argument(
        "--ingest-workers",
        type=int,
        default=os.cpu_count() or 1,
        help="the ingest's worker processes (the command's default: the machine's cores)",
    )
    parser.add_argument("--dir", type=Path, default=None, help="where to put the databases")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    ctx = multiprocessing.get_context("spawn")
    load = os.getloadavg()[0]

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        base = Path(tmp)
        init_root(base / "root", PASSPHRASE)
        fleet = init_fleet(base / "root", PASSPHRASE, base / "fleet")
        broker_creds = issue_credentials(fleet, BROKER_ID, base / "broker-creds")
        ingest_creds = issue_credentials(fleet, INGEST_ID, base / "ingest-creds")
        t = time.perf_counter()
        boxes = issue_boxes(fleet, base, args.boxes)
        issue_s = time.perf_counter() - t
        fleet.close()

        # the broker
        broker_conn, child_conn = ctx.Pipe()
        broker_proc = ctx.Process(
            target=broker_process,
            args=(
                str(broker_creds.dir),
                str(base / "broker"),
                [INGEST_ID.name],
                child_conn,
            ),
            name="broker",
        )
        broker_proc.start()
        if not broker_conn.poll(30):
            raise SystemExit("the broker did not start in 30 s")
        port: int = broker_conn.recv()
        assert broker_proc.pid is not None
        broker_ps = psutil.Process(broker_proc.pid)
        mosquitto_ps = broker_ps.children()

        # the ingest, as `homeflex cloud history ingest` runs it
        data = HistoryDir(base / "history")
        keys = HistoryKeys.load(data.keys)
        history_path = data.db
        store = SqliteHistory(history_path, keys.integrity)
        pool = [
            WorkerProcess(data, ingest_creds.dir, f"ingest-worker-{n + 1}")
            for n in range(args.ingest_workers)
        ]
        for worker in pool:
            worker.start()
        ingest = TimedIngest(pool, SecurityLog(data.security_log))
        link = MqttLink(ingest_creds, HOST, port, max_inflight=args.ack_inflight)
        link.connect()
        ingest.attach(link)

        # the publishers
        seconds = args.warmup + args.seconds
        workers = max(1, min(args.workers, args.boxes))
        conns: list[Connection] = []
        procs = []
        for w in range(workers):
            mine = [(i, str(boxes[i].dir)) for i in range(w, args.boxes, workers)]
            spec = WorkerSpec(mine, port, args.boxes, args.readings, seconds)
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=publisher, args=(spec, child), name=f"publisher-{w}")
            proc.start()
            conns.append(parent)
            procs.append(proc)
        t = time.perf_counter()
        for c in conns:
            if not c.poll(300):
                raise SystemExit("a publisher did not connect its boxes in 300 s")
            assert c.recv() == "connected"
        connect_s = time.perf_counter() - t

        # seal: estimate how long the publishers need, then give them a common start
        sample = [
            make_batch(0, k, args.readings, time.time()) for k in range(min(200, seconds * 10))
        ]
        key, chain = boxes[0].key(), boxes[0].chain()
        t = time.perf_counter()
        for b in sample:
            seal(b, telemetry_topic(b.box), key, chain)
        seal_each = (time.perf_counter() - t) / len(sample)
        cores = len(os.sched_getaffinity(0))
        seal_est = seal_each * args.boxes * seconds / min(cores, workers)
        t0 = time.time() + 2.0 + 2.0 * seal_est
        for c in conns:
            c.send(t0)
        seal_took = 0.0
        for c in conns:
            if not c.poll(max(60.0, 10 * seal_est)):
                raise SystemExit("a publisher did not seal its batches in time")
            _, took = c.recv()
            seal_took = max(seal_took, took)
        if time.time() > t0:
            log.warning("sealing took longer than planned: the first batches go out late")

        # the timed part
        procs_cpu = {
            "mosquitto": mosquitto_ps,
            "broker log reader": [broker_ps],
            "ingest front": [psutil.Process()],
            "ingest workers": [psutil.Process(w.pid()) for w in pool if w.pid() is not None],
            "publishers": [psutil.Process(p.pid) for p in procs if p.pid is not None],
        }
        window_start = t0 + args.warmup
        window_end = t0 + seconds
        time.sleep(max(0.0, window_start - time.time()))
        cpu0 = snapshot(procs_cpu)
        time.sleep(max(0.0, window_end - time.time()))
        cpu1 = snapshot(procs_cpu)
        handled_at_end = len(ingest.done)
        offered = args.boxes * seconds
        last_progress, seen = time.monotonic(), handled_at_end
        while len(ingest.done) + ingest.refusals < offered:
            time.sleep(0.2)
            if len(ingest.done) != seen:
                seen, last_progress = len(ingest.done), time.monotonic()
            if time.monotonic() - last_progress > 10 or time.time() - window_end > args.catch_up:
                break
        time.sleep(1.0)  # the last acknowledgements reach the boxes
        results: list[WorkerResult] = []
        for c in conns:
            c.send("stop")
        for c in conns:
            results.append(c.recv())
        for p in procs:
            p.join(30)
        link.close()
        ingest.close()
        broker_conn.send("stop")
        broker_conn.recv()
        broker_proc.join(30)
        mosquitto_log = (base / "broker" / "mosquitto.log").read_text(errors="replace")

        # what the history holds
        db = sqlite3.connect(history_path)
        stored_readings, first_ms, last_ms = db.execute(
            "SELECT COUNT(*), MIN(stored_ms), MAX(stored_ms) FROM readings"
        ).fetchone()
        stored_batches = db.execute("SELECT COUNT(*) FROM batches").fetchone()[0]
        db.close()
        t = time.perf_counter()
        tampered = store.check_integrity()
        check_s = time.perf_counter() - t
        store.close()

        lines = offline(base, boxes, ingest_creds, args.readings, max(args.offline, 2 * args.boxes))

    # figures
    published = sum(r.published for r in results)
    lag: list[float] = []
    in_window = 0
    for bid, done_at, _ in ingest.done:
        index, k = int(bid[:8], 16), int(bid[8:16], 16)
        if k >= args.warmup:
            lag.append(done_at - planned_sent(t0, index, k, args.boxes))
        if window_start <= done_at < window_end:
            in_window += 1
    service = [took for _, done_at, took in ingest.done if window_start <= done_at < window_end]
    rtt = [r for res in results for k, r in res.ack_rtt if k >= args.warmup]
    late = [x for res in results for x in res.lateness]
    done_times = [d for _, d, _ in ingest.done]
    caught_up = len(ingest.done) >= offered
    backlog = offered - handled_at_end
    catch_up_s = max(done_times) - window_end if done_times else float("nan")
    window = args.seconds
    span = (cpu1.at - cpu0.at) or 1.0

    def cpu(name: str) -> str:
        return f"{(cpu1.procs[name] - cpu0.procs[name]) / span * 100:5.0f} %"

    busy = (cpu1.machine_busy - cpu0.machine_busy) / (cpu1.machine_total - cpu0.machine_total)
    frame_bytes = results[0].frame_bytes
    body_bytes = results[0].body_bytes
    rate = in_window / window * args.readings
    dropped_lines = sum(1 for line in mosquitto_log.splitlines() if "dropped" in line.lower())

    print(f"machine:   {machine()}, mosquitto {mosquitto_version()}, paho-mqtt "
          f"{version('paho-mqtt')}, cryptography {version('cryptography')}")  # fmt: skip
    print(
        f"setup:     {args.boxes:,} home certificates issued in {issue_s:.1f} s "
        f"({issue_s / args.boxes * 1000:.1f} ms each); {args.boxes:,} MQTT/TLS connections "
        f"from {workers} publisher processes in {connect_s:.1f} s; "
        f"{args.boxes * seconds:,} batches sealed in {seal_took:.1f} s"
    )
    print(
        f"workload:  {args.boxes:,} boxes × 1 batch/s × {args.readings} readings = "
        f"{args.boxes * args.readings:,} readings/s offered, QoS 1, for {args.seconds} s after "
        f"{args.warmup} s of warm-up; a batch is {frame_bytes:,} bytes on the wire, "
        f"its body {body_bytes} ({body_bytes / args.readings:.1f} bytes a reading), the rest "
        "the chain and signature"
    )
    rows = [
        ("offered", f"{args.boxes * args.readings:,} readings/s, {args.boxes:,} batches/s"),
        (
            f"stored during the {window} s window",
            f"{rate:,.0f} readings/s, {in_window / window:,.0f} batches/s",
        ),
        (
            "stored in all",
            f"{stored_readings:,} readings in {stored_batches:,} batches of {published:,} "
            f"published ({offered:,} planned); over "
            f"{(last_ms - first_ms) / 1000:.1f} s"
            if stored_readings
            else "nothing",
        ),
        ("ingest lag (done − sent)", ms(lag)),
        ("box's view (ack − sent)", ms(rtt)),
        ("publishers' lateness", ms(late)),
        (
            "backlog when publishing stopped",
            f"{backlog:,} batches ({backlog / max(1, args.boxes):.1f} s of offer); "
            + (
                f"caught up {max(0.0, catch_up_s):.1f} s later"
                if caught_up
                else f"NOT caught up: {offered - len(ingest.done):,} batches never stored"
            ),
        ),
        (
            "not stored",
            f"{offered - len(ingest.done):,} batches (a real box sends them again after "
            f"ack_timeout_s); broker log lines about dropping messages {dropped_lines}; "
            f"refused {ingest.refusals}, publish "
            f"errors {sum(r.publish_errors for r in results)}, PUBACK refusals "
            f"{sum(r.puback_refused for r in results)}, disconnects "
            f"{sum(r.disconnects for r in results)}",
        ),
        (
            "ingest handling time in situ",
            ms(service)
            + f"; the {len(pool)} workers busy {sum(service) / window * 100:.0f} % of the "
            + "window, summed",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    print()
    for name, value in rows:
        print(f"  {name:{width}}  {value}")
    print()
    print("CPU over the window (% of one core; the machine has 2 cores = 200 %):")
    print(f"  mosquitto              {cpu('mosquitto')}")
    print(f"  broker log reader      {cpu('broker log reader')}   (Python, reads mosquitto's log)")
    print(f"  ingest front           {cpu('ingest front')}   (paho, acknowledgements, pipes)")
    print(f"  ingest workers         {cpu('ingest workers')}   ({len(pool)} processes)")
    print(f"  publishers             {cpu('publishers')}   ({workers} processes; the bench's load)")
    ours = sum(cpu1.procs[n] - cpu0.procs[n] for n in cpu1.procs) / span
    others = max(0.0, busy * 2 - ours) * 100
    print(
        f"  machine busy           {busy * 200:5.0f} %   (other processes: {others:.0f} %; "
        f"load average before the run {load:.2f})"
    )
    offered_rate = args.boxes * args.readings
    if offered_rate < TARGET_READINGS_S:
        target = f"not tested: only {offered_rate:,} readings/s offered"
    elif caught_up and rate >= offered_rate * 0.99:
        target = "met"
    else:
        target = (
            f"NOT met: {rate:,.0f} readings/s stored while {offered_rate:,} were offered; "
            f"the ingest's {len(pool)} workers were busy {sum(service) / window * 100:.0f} % "
            "of the window, summed"
        )
    print(f"target, keeps up with ≥ {TARGET_READINGS_S:,} readings/s: {target}")
    if args.ack_inflight != 0:
        print(
            f"experiment: the ingest's ack in-flight window {args.ack_inflight}, not the "
            "product's (0: no limit)"
        )
    print(
        f"history integrity check: {check_s:.1f} s for {stored_readings:,} readings "
        f"({stored_readings / check_s:,.0f} rows/s), {len(tampered)} findings"
    )
    print()
    for line in lines:
        print(line)


def mosquitto_version() -> str:
    out = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True, check=False)
    first = (out.stdout or out.stderr).splitlines()
    return first[0].split()[-1] if first else "?"


if __name__ == "__main__":
    main()
