"""Crash-test writer: ingests numbered batches of synthetic meter readings into the store given
as argument and prints each batch number once write() has returned (i.e. after the commit).

On start it resumes from what the store holds, re-sending its last batch first as a gateway does
after a crash (at-least-once delivery); the store must ignore the repeat.
Usage: python store_writer.py STORE_PATH
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from homeflex.edge.devices.capabilities import Quantity, Reading
from homeflex.edge.store import Store

DEVICES = ("m0", "m1", "m2")
STEPS_PER_BATCH = 50
STEP_S = 7.0  # does not divide 900: most PTU boundaries fall inside an interval
T0 = 1_700_000_100.0  # a PTU boundary


def _wobble(step: int, salt: int) -> float:
    """Deterministic in [0, 1): keeps counters increasing at uneven rates."""
    return ((step * 7919 + salt * 104_729) % 13) / 13


def import_wh(device: int, step: int) -> float:
    return 1000.0 * device + (device + 1) * (3 * step + _wobble(step, device))


def export_wh(device: int, step: int) -> float:
    return 500.0 + step + _wobble(step, device + 7)


def power_w(device: int, step: int) -> float:
    return 1000.0 + 100.0 * device + 10.0 * (step % 17)


def batch(seq: int) -> list[Reading]:
    readings = []
    for step in range(seq * STEPS_PER_BATCH, (seq + 1) * STEPS_PER_BATCH):
        ts = T0 + STEP_S * step
        for d, name in enumerate(DEVICES):
            readings += [
                Reading(name, Quantity.IMPORT_WH, ts, import_wh(d, step)),
                Reading(name, Quantity.EXPORT_WH, ts, export_wh(d, step)),
                Reading(name, Quantity.POWER_W, ts, power_w(d, step)),
            ]
    random.Random(seq).shuffle(readings)  # a batch comes in any order
    return readings


def main() -> None:
    store = Store.open(Path(sys.argv[1]))
    newest = [r.ts for r in store.latest(DEVICES[0]) if r.quantity == Quantity.IMPORT_WH]
    seq = round((newest[0] - T0) / STEP_S) // STEPS_PER_BATCH if newest else 0
    while seq < 100_000:
        store.write(batch(seq))
        print(seq, flush=True)
        seq += 1


if __name__ == "__main__":
    main()
