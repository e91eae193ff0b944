"""Store ingest benchmark: sustained readings/s of Store.write() on a 15-device home (counters
included, so PTU aggregation is part of the work), the database size per million readings, and
the machine it ran on. Usage: python -m bench.store_ingest [--seconds 30] [--batch 1000] [--dir D]
"""

from __future__ import annotations

import argparse
import itertools
import random
import tempfile
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

from bench.machine import machine
from homeflex.edge.devices.capabilities import Quantity, Reading
from homeflex.edge.store import Store

Q = Quantity
POLL_S = 5.0
START = 1_700_000_100.0

# (device, nominal power in W, the quantities its poll returns): 57 readings per round.
HOME: list[tuple[str, float, tuple[Quantity, ...]]] = [
    (
        "grid-meter",
        3000.0,
        (
            *(Q.POWER_W, Q.POWER_L1_W, Q.POWER_L2_W, Q.POWER_L3_W, Q.CURRENT_A),
            *(Q.VOLTAGE_L1_V, Q.VOLTAGE_L2_V, Q.VOLTAGE_L3_V, Q.IMPORT_WH, Q.EXPORT_WH),
        ),
    ),
    ("pv", 4000.0, (Q.POWER_W, Q.EXPORT_WH, Q.POWER_LIMIT_PCT)),
    ("battery", 2500.0, (Q.POWER_W, Q.SOC_PCT, Q.IMPORT_WH, Q.EXPORT_WH)),
    (
        "heat-pump",
        2000.0,
        (Q.POWER_W, Q.IMPORT_WH, Q.FLOW_TEMP_C, Q.ROOM_TEMP_C, Q.OUTDOOR_TEMP_C, Q.SG_READY_MODE),
    ),
    ("ev-charger", 7400.0, (Q.POWER_W, Q.IMPORT_WH, Q.EV_CONNECTED, Q.SETPOINT_A)),
    *((f"plug-{i}", 150.0 * (i + 1), (Q.POWER_W, Q.IMPORT_WH, Q.ON)) for i in range(10)),
]


def readings(rng: random.Random) -> Iterator[Reading]:
    """An endless stream of poll rounds, all devices every POLL_S seconds."""
    counters: dict[tuple[str, Quantity], float] = {}
    for round_ in itertools.count():
        ts = START + POLL_S * round_
        for device, nominal, quantities in HOME:
            watts = nominal * rng.uniform(0.0, 1.0)
            for q in quantities:
                if q in (Q.IMPORT_WH, Q.EXPORT_WH):
                    key = (device, q)
                    counters[key] = counters.get(key, 1000.0) + watts * POLL_S / 3600
                    value = counters[key]
                elif q == Q.POWER_W:
                    value = watts
                else:
                    value = rng.uniform(0.0, 1.0)
                yield Reading(device, q, ts, value)


def filesystem(path: Path) -> str:
    """The mount holding `path` (fsync costs differ wildly between disks and tmpfs)."""
    best = ("?", "?")
    with open("/proc/mounts") as f:
        for line in f:
            _, mount, fstype, *_ = line.split()
            if str(path.resolve()).startswith(mount) and len(mount) >= len(best[0]):
                best = (mount, fstype)
    return f"{best[1]} at {best[0]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="time spent in write()")
    parser.add_argument("--batch", type=int, default=1000, help="readings per write()")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the database")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "bench.db"
        store = Store.open(path)
        stream = readings(random.Random(1))
        written = batches = 0
        in_write = slowest = 0.0
        wall_start = time.perf_counter()
        while in_write < args.seconds:
            batch = list(itertools.islice(stream, args.batch))
            t = time.perf_counter()
            written += store.write(batch)
            took = time.perf_counter() - t
            in_write += took
            slowest = max(slowest, took)
            batches += 1
        wall = time.perf_counter() - wall_start
        ptus = sum(len(store.ptu_energy(d, 0, 2e9)) for d, *_ in HOME)
        store.close()  # the last connection to close checkpoints the WAL into the file
        size = sum(p.stat().st_size for p in Path(tmp).iterdir())

    print(f"machine:    {machine()}, sqlite-utils {version('sqlite-utils')}")
    print(
        f"database:   {filesystem(Path(args.dir or tempfile.gettempdir()))}, WAL, synchronous=FULL"
    )
    print(
        f"workload:   {len(HOME)} devices, {sum(len(q) for *_, q in HOME)} readings per poll "
        f"round, {args.batch}-reading batches, {written:,} readings "
        f"({written * POLL_S / sum(len(q) for *_, q in HOME) / 86400:.1f} simulated days), "
        f"{ptus:,} PTU rows"
    )
    print(
        f"ingest:     {written / in_write:,.0f} readings/s in write() "
        f"({in_write / batches * 1000:.1f} ms per batch on average, "
        f"slowest {slowest * 1000:.1f} ms)"
    )
    print(f"end to end: {written / wall:,.0f} readings/s including generating the readings")
    print(f"size:       {size / written * 1e6 / 2**20:.1f} MiB per million readings")


if __name__ == "__main__":
    main()
