"""Telemetry drain benchmark: how long a box takes to send a 24-hour backlog (15 devices polled
every second, 4 quantities each: about 5.2 million readings) to the cloud while current readings
keep arriving, through the real uplink (edge/uplink.py), a real Mosquitto and the ingest.
Prints the time until the outbox holds only current data, the readings drained per second, the
latency of current readings during and after the drain, and the CPU each side used; with lists
for --batch-max and --in-flight it runs every combination on a copy of the same backlog.
Usage: PYTHONPATH=. python -m bench.telemetry_drain [--hours 24] [--batch-max 5000] [--in-flight 8]

Layout: the box (its store on one thread, as the gateway runs it, the uplink on the event loop,
paho's thread) in this process; the cloud (the broker: mosquitto and its log reader; the ingest
and its history) in a child process, as it runs on other machines. Both share this machine's
cores, so the box here is faster and the cloud slower than in the field: the box's CPU per
million readings is printed to scale the figure to slower hardware.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import multiprocessing
import os
import random
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.metadata import version
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil

from bench.machine import machine
from homeflex.agents.chains import ChainVerifier
from homeflex.clock import SystemClock
from homeflex.cloud.history.ingest import Ingest
from homeflex.cloud.history.keys import HistoryKeys, Identities
from homeflex.cloud.history.sqlite import SqliteHistory
from homeflex.cloud.mqtt.broker import Broker
from homeflex.edge.config import TelemetryConfig
from homeflex.edge.devices.capabilities import Quantity, Reading
from homeflex.edge.store import Store
from homeflex.edge.uplink import Uplink
from homeflex.mqtt_client import MqttLink
from homeflex.pki.bundle import Credentials, issue_credentials
from homeflex.pki.ca import init_fleet, init_root
from homeflex.pki.identity import Identity, Role
from homeflex.pki.trust import TrustStore
from homeflex.security import SecurityLog
from homeflex.telemetry import Batch, encode_body, new_batch_id

PASSPHRASE = b"bench root passphrase"
HOST = "127.0.0.1"
BROKER_ID = Identity("bench-mqtt", Role.SERVICE, dns=("localhost",), ips=(HOST,))
INGEST_ID = Identity("bench-ingest", Role.SERVICE)
BOX_ID = Identity("bench-box-0001", Role.HOME)
Q = Quantity
TARGET_S = 120.0

log = logging.getLogger("bench.telemetry_drain")


class Home:
    """`devices` devices polled every second: import and export counters, power, voltage."""

    def __init__(self, devices: int, seed: int = 1) -> None:
        self.names = [f"dev-{i:02d}" for i in range(devices)]
        self.rng = random.Random(seed)
        self.counters = {(d, q): 1000.0 for d in self.names for q in (Q.IMPORT_WH, Q.EXPORT_WH)}

    def poll(self, ts: float) -> list[Reading]:
        out = []
        for d in self.names:
            watts = self.rng.uniform(-2000.0, 4000.0)
            q = Q.IMPORT_WH if watts >= 0 else Q.EXPORT_WH
            self.counters[(d, q)] += abs(watts) / 3600
            out += [
                Reading(d, Q.IMPORT_WH, ts, round(self.counters[(d, Q.IMPORT_WH)], 3)),
                Reading(d, Q.EXPORT_WH, ts, round(self.counters[(d, Q.EXPORT_WH)], 3)),
                Reading(d, Q.POWER_W, ts, round(watts, 1)),
                Reading(d, Q.VOLTAGE_V, ts, round(self.rng.uniform(225.0, 235.0), 1)),
            ]
        return out


def pct(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


# --- the cloud, in a child process ------------------------------------------------------------


def cloud_process(base: str, conn: Connection) -> None:
    """Broker and ingest until told to stop; sends the port first and the ingest's counts last."""
    root = Path(base)
    broker = Broker(Credentials(root / "broker-creds"), root / "broker", host=HOST,
                 services=[INGEST_ID.name])  # fmt: skip
    broker.start()
    ingest_creds = Credentials(root / "ingest-creds")
    keys = HistoryKeys.load(root / "history" / "keys")
    store = SqliteHistory(root / "history" / "history.db", keys.integrity)
    ingest = Ingest(
        store,
        keys,
        Identities(root / "history" / "keys" / "identities.db"),
        ChainVerifier(TrustStore.of(ingest_creds)),
        SecurityLog(root / "history" / "security.log"),
    )
    link = MqttLink(ingest_creds, HOST, broker.port, max_inflight=0)
    try:
        link.connect()
        ingest.attach(link)
        conn.send(broker.port)
        conn.recv()
    finally:
        link.close()
        ingest.close()
        broker.stop()
        store.close()
        conn.send(
            {
                "batches": ingest.batches,
                "new": ingest.items_new,
                "duplicates": ingest.duplicates,
                "refused": dict(ingest.refused),
            }
        )


# --- one drain --------------------------------------------------------------------------------


@dataclass
class Run:
    batch_max: int
    in_flight: int
    backlog_items: int = 0
    drain_s: float = math.nan
    drained: bool = False
    uplink_batches: int = 0
    acked: int = 0
    cloud: dict[str, Any] = field(default_factory=dict)
    during: list[float] = field(default_factory=list)  # current readings: stored − taken
    after: list[float] = field(default_factory=list)
    span_s: float = 0.0  # seconds the CPU figures cover
    box_cpu_s: float = 0.0
    cloud_cpu_s: float = 0.0
    mosquitto_cpu_s: float = 0.0
    machine_busy_s: float = 0.0  # all processes, in CPU seconds
    progress: list[tuple[float, int]] = field(default_factory=list)  # (s since start, left)
    written: int = 0
    last_error: str | None = None
    store_s: dict[str, float] = field(default_factory=dict)  # store thread time per call
    store_n: dict[str, int] = field(default_factory=dict)


def machine_busy() -> float:
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def cpu_of(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


async def drain(
    run: Run,
    work: Path,
    box_creds: Credentials,
    home: Home,
    after_s: float,
    timeout_s: float,
) -> None:
    """Copy of the filled store in `work`; cloud started here; the uplink runs until the backlog
    is gone and `after_s` more seconds."""
    ctx = multiprocessing.get_context("spawn")
    conn, child = ctx.Pipe()
    cloud = ctx.Process(target=cloud_process, args=(str(work), child), name="cloud")
    cloud.start()
    if not conn.poll(60):
        raise SystemExit("the cloud did not start in 60 s")
    port: int = conn.recv()
    assert cloud.pid is not None
    cloud_ps = psutil.Process(cloud.pid)
    mosquitto_ps = [p for p in cloud_ps.children() if "mosquitto" in p.name()]
    me = psutil.Process()

    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
    loop = asyncio.get_running_loop()

    def timed(fn: Callable[..., Any], *args: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*args)
        finally:
            name = getattr(fn, "__name__", "?")
            name = "outbox_take" if name == "<lambda>" else name  # the uplink's one lambda
            run.store_s[name] = run.store_s.get(name, 0.0) + time.perf_counter() - t
            run.store_n[name] = run.store_n.get(name, 0) + 1

    async def db(fn: Callable[..., Any], *args: Any) -> Any:
        """The gateway's `_db`: store calls one at a time on the store thread (timed here)."""
        return await loop.run_in_executor(executor, timed, fn, *args)

    store: Store = await db(Store.open, work / "store.db")
    await db(store.enable_outbox)
    backlog_last: int = await db(store.outbox_last_seq)
    run.backlog_items = await db(store.outbox_size)
    cfg = TelemetryConfig(
        broker=f"mqtts://{HOST}:{port}", batch_max=run.batch_max, in_flight=run.in_flight
    )
    uplink = Uplink(cfg, box_creds.dir, store, db, SystemClock(), dict.fromkeys(home.names, 1.0))

    async def writer() -> None:
        """The devices' polls: each second's readings, stamped with that second."""
        while True:
            now = time.time()
            await asyncio.sleep(math.ceil(now) - now)
            run.written += await db(store.write, home.poll(float(math.floor(time.time()))))

    monitor = sqlite3.connect(f"file:{work / 'store.db'}?mode=ro", uri=True)
    cpu0 = (cpu_of([me]), cpu_of([cloud_ps]), cpu_of(mosquitto_ps), machine_busy())
    start = time.time()
    tasks = [asyncio.create_task(writer()), asyncio.create_task(uplink.run())]
    drained_at = None
    try:
        while time.time() - start < timeout_s:
            await asyncio.sleep(0.5)
            low = monitor.execute("SELECT MIN(seq) FROM outbox").fetchone()[0]
            left = 0 if low is None or low > backlog_last else backlog_last - low + 1
            run.progress.append((time.time() - start, left))
            if left == 0:
                drained_at = time.time()
                break
        if drained_at is not None:
            run.drained = True
            run.drain_s = drained_at - start
            await asyncio.sleep(after_s)
    finally:
        cpu1 = (cpu_of([me]), cpu_of([cloud_ps]), cpu_of(mosquitto_ps), machine_busy())
        run.span_s = time.time() - start
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        monitor.close()
        run.uplink_batches = uplink.stats.batches
        run.acked = uplink.stats.items_acked
        run.last_error = uplink.stats.last_error
        await db(store.close)
        executor.shutdown(wait=True)
        conn.send("stop")
        if conn.poll(60):
            run.cloud = conn.recv()
        cloud.join(30)
    run.box_cpu_s = cpu1[0] - cpu0[0]
    run.cloud_cpu_s = cpu1[1] - cpu0[1] - (cpu1[2] - cpu0[2])
    run.mosquitto_cpu_s = cpu1[2] - cpu0[2]
    run.machine_busy_s = cpu1[3] - cpu0[3]

    # the current readings' latency, from the history: stored (received) minus taken
    history = sqlite3.connect(work / "history" / "history.db")
    start_ms = round(start * 1000)
    end_ms = round((drained_at or time.time()) * 1000)
    for ts_ms, stored_ms in history.execute(
        "SELECT ts_ms, stored_ms FROM readings WHERE ts_ms >= ?", (start_ms,)
    ):
        (run.during if ts_ms < end_ms else run.after).append((stored_ms - ts_ms) / 1000)
    history.close()


# --- the run ----------------------------------------------------------------------------------


def fill(path: Path, home: Home, hours: float, chunk_s: int) -> tuple[int, float, float]:
    """`hours` of readings ending now, into a new store with the outbox on; (readings written,
    seconds it took, seconds of that inside Store.write)."""
    store = Store.open(path)
    store.enable_outbox()
    end = math.floor(time.time())
    start_ts = end - round(hours * 3600)
    written, in_write = 0, 0.0
    t0 = time.perf_counter()
    for chunk in range(start_ts, end, chunk_s):
        readings = [r for ts in range(chunk, min(end, chunk + chunk_s)) for r in home.poll(ts)]
        t = time.perf_counter()
        written += store.write(readings)
        in_write += time.perf_counter() - t
    took = time.perf_counter() - t0
    store.close()  # checkpoints the WAL into the file
    return written, took, in_write


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\nUsage:")[0])
    parser.add_argument("--hours", type=float, default=24.0, help="backlog to drain")
    parser.add_argument("--devices", type=int, default=15, help="devices, 4 readings each a second")
    parser.add_argument(
        "--batch-max", type=ints, default=[5000], help="items a batch, e.g. 2000,5000,10000"
    )
    parser.add_argument("--in-flight", type=ints, default=[8], help="batches unacked, e.g. 4,8,16")
    parser.add_argument("--after", type=float, default=10.0, help="seconds run after the drain")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after (s)")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the databases")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    load = os.getloadavg()[0]

    runs: list[Run] = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        base = Path(tmp)
        init_root(base / "root", PASSPHRASE)
        fleet = init_fleet(base / "root", PASSPHRASE, base / "fleet")
        issue_credentials(fleet, BROKER_ID, base / "broker-creds")
        issue_credentials(fleet, INGEST_ID, base / "ingest-creds")
        box_creds = issue_credentials(fleet, BOX_ID, base / "box-creds")
        fleet.close()

        home = Home(args.devices)
        filled = base / "filled.db"
        written, fill_s, in_write = fill(filled, home, args.hours, 60)
        store_mib = filled.stat().st_size / 2**20
        sample = Store.open(filled, read_only=True)
        items = sample.outbox_take(5000)
        sample.close()

        for bm in args.batch_max:
            for inf in args.in_flight:
                work = base / f"run-{bm}-{inf}"
                work.mkdir()
                for name in ("broker-creds", "ingest-creds"):
                    shutil.copytree(base / name, work / name)
                shutil.copyfile(filled, work / "store.db")
                run = Run(bm, inf)
                asyncio.run(drain(run, work, box_creds, home, args.after, args.timeout))
                runs.append(run)
                shutil.rmtree(work)

    # what one 5000-item batch of the backlog weighs
    body = encode_body(Batch(BOX_ID.name, new_batch_id(), 0.0, 0.0, *items))
    print(f"machine:   {machine()}, paho-mqtt {version('paho-mqtt')}, "
          f"load average before the run {load:.2f}")  # fmt: skip
    print(
        f"backlog:   {args.hours:g} h of {args.devices} devices × 4 quantities at 1 s = "
        f"{written:,} readings, written to the store (outbox on) in {fill_s:.1f} s "
        f"({in_write:.1f} s in Store.write, {written / in_write:,.0f} readings/s); store file "
        f"{store_mib:,.0f} MiB; a 5,000-item batch body is {len(body):,} bytes "
        f"({len(body) / 5000:.1f} bytes an item)"
    )
    print(
        f"meanwhile: {args.devices * 4} current readings a second written through the same store "
        f"thread; the run goes on {args.after:g} s after the backlog is gone"
    )
    print()
    header = (
        f"{'batch_max':>9} {'in_flight':>9} {'drain':>8} {'readings/s':>11} "
        f"{'current during drain (stored − taken)':>40} {'after':>22} {'box CPU':>9} "
        f"{'cloud':>7} {'mosq.':>6} {'others':>7}"
    )
    print(header)
    for r in runs:
        drain_txt = f"{r.drain_s:7.1f}s" if r.drained else "  >limit"
        rate = written / r.drain_s if r.drained else float("nan")
        others = max(0.0, r.machine_busy_s - r.box_cpu_s - r.cloud_cpu_s - r.mosquitto_cpu_s)
        print(
            f"{r.batch_max:>9,} {r.in_flight:>9} {drain_txt} {rate:>11,.0f} "
            f"{short(r.during):>40} {short(r.after):>22} "
            f"{cpu_pct(r.box_cpu_s, r):>9} {cpu_pct(r.cloud_cpu_s, r):>7} "
            f"{cpu_pct(r.mosquitto_cpu_s, r):>6} {cpu_pct(others, r):>7}"
        )
    print()
    print("CPU as % of one core over the run (the machine has 2 cores): box = this process,")
    print("cloud = the ingest and the broker's log reader, others = the rest of the machine.")
    print("The box's CPU seconds per million readings drained scale the figure to a slower box:")
    for r in runs:
        per_m = r.box_cpu_s / max(1, r.backlog_items) * 1e6
        print(
            f"  {r.batch_max:>6,} × {r.in_flight:<3} box {per_m:5.1f} CPU-s per million; "
            f"{r.uplink_batches:,} batches sent, {r.acked:,} items acknowledged; ingest "
            f"{r.cloud.get('batches', '?'):,} batches, {r.cloud.get('new', '?'):,} new items, "
            f"{r.cloud.get('duplicates', '?'):,} duplicates, refused {r.cloud.get('refused')}"
            + (f"; uplink error: {r.last_error}" if r.last_error else "")
        )
        calls = sorted(
            ((n, s) for n, s in r.store_s.items() if s >= 0.02 * sum(r.store_s.values())),
            key=lambda kv: -kv[1],
        )
        busy = sum(r.store_s.values()) / (r.span_s or 1.0) * 100
        print(
            f"           store thread busy {busy:.0f} %: "
            + ", ".join(
                f"{n} {s:.1f} s ({s / r.store_n[n] * 1000:.0f} ms × {r.store_n[n]:,})"
                for n, s in calls
            )
        )
        every = max(1, len(r.progress) // 8)
        steps = [f"{t:.0f} s {left / 1e6:.2f} M" for t, left in r.progress[::every]]
        print(f"           backlog left: {', '.join(steps)}")
    done = [r for r in runs if r.drained]
    if done:
        best = min(done, key=lambda r: r.drain_s)
        verdict = "met" if best.drain_s <= TARGET_S else "NOT met"
        print(
            f"fastest: batch_max {best.batch_max:,}, in_flight {best.in_flight}: "
            f"{best.drain_s:.1f} s; target ≤ {TARGET_S:.0f} s: {verdict}"
        )


def short(values: Sequence[float]) -> str:
    if not values:
        return "none"
    return (
        f"{pct(values, 50) * 1000:,.0f}/{pct(values, 95) * 1000:,.0f}/{max(values) * 1000:,.0f} ms"
    )


def cpu_pct(cpu_s: float, r: Run) -> str:
    return f"{cpu_s / (r.span_s or 1.0) * 100:.0f} %"


if __name__ == "__main__":
    main()
