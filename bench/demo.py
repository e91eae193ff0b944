"""The neighbourhood demo's wall time and memory, as a user runs it (`homeflex demo`).

Runs the demo as a child process and samples, every half second, the resident memory of every
process it started (the XMPP server, each home's firmware-sim and gateway, the platform): the
figure is the peak of their sum, with the largest single process beside it. Prints the demo's
own progress lines as they come.
Usage: PYTHONPATH=. python -m bench.demo [--homes 10] [--speed 500]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from bench.machine import machine

MIB = 1024 * 1024


def tree_rss(root: psutil.Process) -> tuple[int, int, int]:
    """(sum of RSS, largest RSS, processes) over `root` and its descendants."""
    total, largest, n = 0, 0, 0
    for p in [root, *root.children(recursive=True)]:
        try:
            rss = p.memory_info().rss
        except psutil.Error:
            continue  # ended between the listing and the reading
        total += rss
        largest = max(largest, rss)
        n += 1
    return total, largest, n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--homes", type=int, default=10)
    ap.add_argument("--speed", type=float, default=500.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp) / "demo"
        cmd = [sys.executable, "-m", "homeflex.cli", "demo", "--homes", str(args.homes)]
        cmd += ["--speed", str(args.speed), "--workdir", str(workdir)]
        began = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        root = psutil.Process(proc.pid)
        peak = [0, 0, 0]

        def sample() -> None:
            while proc.poll() is None:
                total, largest, n = tree_rss(root)
                if total > peak[0]:
                    peak[:] = [total, largest, n]
                time.sleep(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        assert proc.stdout is not None
        for line in proc.stdout:
            print(f"  | {line.rstrip()}")
        code = proc.wait()
        wall = time.monotonic() - began
        sampler.join()
    print(f"machine: {machine()}")
    print(f"demo: {args.homes} homes at {args.speed:g}x, exit {code}")
    print(f"wall time: {wall:.1f} s")
    print(
        f"peak memory: {peak[0] / MIB:.0f} MiB resident over {peak[2]} processes "
        f"(largest {peak[1] / MIB:.0f} MiB)"
    )


if __name__ == "__main__":
    main()
