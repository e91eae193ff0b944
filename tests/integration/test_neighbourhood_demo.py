"""Acceptance: the README's main job, `homeflex demo`, as a user runs it. Every party is its own
process (a firmware-sim and a gateway with its home agent per home, the embedded XMPP server with
TLS, Mosquitto and the history ingest, the aggregator and DSO platform): a whole day of the
cycle, the evening congestion bought away, the day settled from the metered energies, the report
written, and no process left behind, also when the demo is stopped midway."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest

from homeflex.edge.store import Store

pytestmark = pytest.mark.slow

HOMES = 3
SPEED = 800  # the same day as the default's 500x, in less time: three homes leave CPU to spare


def demo(workdir: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "homeflex.cli", "demo", "--workdir", str(workdir), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def leftovers(workdir: Path) -> list[str]:
    """Processes whose command line names the demo's work directory."""
    out = []
    for p in psutil.process_iter(["cmdline", "status"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if str(workdir) in cmd and p.info["status"] != psutil.STATUS_ZOMBIE:
            out.append(cmd)
    return out


def held_orders(workdir: Path) -> list[tuple[str, str]]:
    out = []
    for i in range(HOMES):
        home = f"home-{i + 1:02d}"
        agent = json.loads((workdir / "homes" / home / "gateway/agent.json").read_text())
        out += [(home, oid) for oid in agent["orders"]]
    return out


def test_the_demo_runs_a_day_buys_the_evening_congestion_away_and_cleans_up(
    tmp_path: Path,
) -> None:
    workdir = tmp_path / "demo"
    proc = demo(workdir, "--homes", str(HOMES), "--speed", str(SPEED))
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert leftovers(workdir) == []
    lines = out.splitlines()
    assert f"round lfa-1.2026-03-10 closed: {HOMES} of {HOMES} homes answered" in lines, out
    assert any(line.startswith("DSO: bought ") for line in lines), out
    assert "DSO: 2026-03-10 is safe" in out, out
    report = workdir / "report" / "index.html"
    assert f"open {report.resolve().as_uri()} in a browser" in lines
    for chart in ("transformer.png", "prices.png", "homes.png"):
        assert (workdir / "report" / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    kpis = json.loads((workdir / "report" / "kpis.json").read_text())
    limit = 2.4 * HOMES
    assert kpis["congested_before"] > 0 and kpis["peak_before_kw"] > limit
    assert kpis["congested_after"] == 0 and kpis["peak_after_kw"] <= limit + 1e-6
    assert kpis["failed"] == 0 and kpis["sent"] > 0

    # The DSO's view: the sum over the homes over the limit, a request, orders that bring the
    # planned load under it.
    (check,) = json.loads((workdir / "cloud" / "dso-1" / "status.json").read_text())["checks"]
    assert check["limit_kw"] == pytest.approx(limit)
    assert check["safe"] is True and check["request_kw"] and check["orders"]
    over = {int(t) for t in check["request_kw"]}
    assert all(check["prognosis_kw"][t] > limit for t in over)
    assert max(check["after_kw"]) <= limit + 1e-6
    bought = sum(o["kwh"] for o in check["orders"])
    assert kpis["flex_eur"] > 0 and bought > 0

    # The homes hold the orders the aggregator sent them, for the PTUs the DSO asked about.
    held: dict[int, float] = {}
    for i in range(HOMES):
        agent = json.loads((workdir / "homes" / f"home-{i + 1:02d}/gateway/agent.json").read_text())
        for o in agent["orders"].values():
            for t, kw in o["order"]["profile_kw"].items():
                held[int(t)] = held.get(int(t), 0.0) + kw
    assert set(held) & over

    # Settle: every order a home holds is settled from the history the telemetry filled, and
    # the DSO settled every order it placed, from the aggregator's sum
    (settled,) = [line for line in lines if line.startswith("settled: ")]
    n = sum(1 for _ in held_orders(workdir))
    assert settled.startswith(f"settled: {n} of {n} home orders"), settled
    d = len(check["orders"])
    assert f"the DSO settled {d} of {d} orders" in settled, settled
    for home, order_id in held_orders(workdir):
        agent = json.loads((workdir / "homes" / home / "gateway/agent.json").read_text())
        s = agent["settlements"][order_id]
        assert s["delivered_kwh"] + s["shortfall_kwh"] > 0
    # every home's gateway measured the whole day, PTU by PTU
    day0 = datetime(2026, 3, 10, tzinfo=UTC).timestamp()
    for i in range(HOMES):
        store = Store.open(workdir / "homes" / f"home-{i + 1:02d}/gateway/store.db", read_only=True)
        try:
            rows = store.ptu_energy("meter", day0, day0 + 86400)
        finally:
            store.close()
        assert [r.ptu_start for r in rows] == [day0 + 900 * t for t in range(96)]


def test_a_stopped_demo_stops_every_process_it_started(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    proc = demo(workdir, "--homes", "2")
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "homes: a firmware-sim and a gateway each" in line:
            break
    started = leftovers(workdir)
    assert len(started) >= 1 + 2 * 2, seen  # the XMPP server, and a simulator and gateway each
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    deadline = time.monotonic() + 30
    while leftovers(workdir) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert leftovers(workdir) == []
    # and the next run may take the directory back
    assert (workdir / ".homeflex-demo").exists()
