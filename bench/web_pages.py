"""Web page benchmark: response times of the owner's pages, over real HTTPS from the gateway's
own server, with a year of 15-minute history of the meter and a PV inverter in the store (target
of issue 8: the dashboard and the history page in 300 ms or less each).

The store is filled through its real write path (counters every 15 minutes for 366 days); the
gateway is started (store, planner, web page) but its devices are not polled, so nothing else
competes for the two cores. Each page is fetched `--rounds` times after one warm-up.
Usage: python -m bench.web_pages [--rounds 30] [--dir D]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import ssl
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from bench.machine import machine
from homeflex.clock import PTU_SECONDS, SystemClock
from homeflex.edge.config import GatewayConfig
from homeflex.edge.devices.capabilities import Quantity, Reading
from homeflex.edge.gateway import Gateway
from homeflex.edge.store import Store
from homeflex.pki.bundle import issue_credentials
from homeflex.pki.ca import init_fleet, init_root
from homeflex.pki.identity import Identity, Role

DAYS = 366
PASSWORD = "quiet-copper-lantern-81"
PAGES = ["/", "/history?period=day", "/history?period=week", "/history?period=month",
         "/history.csv?period=day&count=366", "/plan"]  # fmt: skip


def fill(path: Path, end: float) -> int:
    """A year of a meter and a PV inverter: energy counters every PTU, a day-shaped load and
    sun, written through Store.write (the PTU aggregation included)."""
    start = end - DAYS * 86400
    imp = exp = pv = 0.0
    readings = []
    t = start
    while t < end:
        hour = (t % 86400) / 3600
        sun = max(0.0, math.sin(math.pi * (hour - 6) / 12)) * 3000  # W
        load = 400 + (1500 if 17 <= hour < 21 else 0)
        net = load - sun
        imp += max(0.0, net) * PTU_SECONDS / 3600
        exp += max(0.0, -net) * PTU_SECONDS / 3600
        pv += sun * PTU_SECONDS / 3600
        readings += [
            Reading("meter", Quantity.IMPORT_WH, t, imp),
            Reading("meter", Quantity.EXPORT_WH, t, exp),
            Reading("meter", Quantity.POWER_W, t, net),
            Reading("pv", Quantity.EXPORT_WH, t, pv),
        ]
        t += PTU_SECONDS
    store = Store.open(path)
    try:
        for i in range(0, len(readings), 20_000):
            store.write(readings[i : i + 20_000])
    finally:
        store.close()
    return len(readings)


def config(base: Path) -> GatewayConfig:
    init_root(base / "root", b"bench passphrase")
    fleet = init_fleet(base / "root", b"bench passphrase", base / "fleet")
    creds = issue_credentials(fleet, Identity("bench-box", Role.HOME), base / "creds")
    fleet.close()
    (base / "prices.json").write_text(json.dumps({
        "start": "2020-01-01T00:00:00Z", "series_step_s": 3600,
        "import_price": [0.30], "export_price": [0.05]}))  # fmt: skip
    # the devices are configured (the home names them) but never polled: see run()
    unreachable = {"protocol": "modbus", "host": "127.0.0.1", "port": 9, "poll_s": 3600}
    return GatewayConfig.model_validate({
        "gateway_id": "bench-box",
        "data_dir": str(base / "gw"),
        "store": {"path": str(base / "store.db")},
        "credentials": str(creds.dir),
        "web": {"listen": "127.0.0.1", "port": 0},
        "devices": [{**unreachable, "id": "meter", "template": "meter-3ph"},
                    {**unreachable, "id": "pv", "template": "pv-inverter"}],
        "home": {"meter": "meter", "site": {"latitude": 50.85, "longitude": 4.35,
                                            "utc_offset_h": 1},
                 "prices": {"file": str(base / "prices.json")},
                 "devices": [{"kind": "pv", "id": "pv", "peak_w": 3000}]},
    })  # fmt: skip


async def measure(cfg: GatewayConfig, rounds: int) -> dict[str, list[float]]:
    gw = Gateway(cfg, SystemClock())
    stop = asyncio.Event()
    task = asyncio.create_task(gw.run(stop))
    try:
        for _ in range(600):  # the gateway starts: its page listens
            if gw.web_url is not None and gw.control is not None:
                break
            await asyncio.sleep(0.05)
        for p in gw.pollers:  # no polling: the figures are the page's alone
            for t in asyncio.all_tasks():
                if t.get_name() == f"poll-{p.device.id}":
                    t.cancel()
        assert cfg.credentials is not None
        ctx = ssl.create_default_context(cafile=str(cfg.credentials / "ca.pem"))
        ctx.check_hostname = False
        async with httpx.AsyncClient(base_url=gw.web_url, verify=ctx, timeout=30) as c:
            pre = re.search(r'name="pre" value="([^"]+)"', (await c.get("/claim")).text)
            code = (cfg.data_dir / "setup-code.txt").read_text().strip()
            assert pre is not None
            claimed = await c.post("/claim", data={"code": code, "user": "bench",
                "password": PASSWORD, "again": PASSWORD, "pre": pre.group(1)})  # fmt: skip
            assert claimed.status_code == 303, claimed.text
            times: dict[str, list[float]] = {p: [] for p in PAGES}
            for page in PAGES:
                assert (await c.get(page)).status_code == 200, page  # warm-up
                for _ in range(rounds):
                    began = time.perf_counter()
                    answer = await c.get(page)
                    times[page].append(time.perf_counter() - began)
                    assert answer.status_code == 200
        return times
    finally:
        stop.set()
        await task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        base = Path(tmp)
        cfg = config(base)
        began = time.perf_counter()
        n = fill(cfg.store.path, time.time())
        took, size_mb = time.perf_counter() - began, cfg.store.path.stat().st_size / 1e6
        print(f"store: {n:,} readings over {DAYS} days written in {took:.1f} s ({size_mb:.1f} MB)")
        times = asyncio.run(measure(cfg, args.rounds))
    print(f"machine: {machine()}")
    print(f"{'page':<38} {'median ms':>9} {'p90 ms':>7} {'max ms':>7}   ({args.rounds} requests)")
    for page, ts in times.items():
        ms = sorted(1000 * t for t in ts)
        p90 = ms[int(0.9 * (len(ms) - 1))]
        print(f"{page:<38} {statistics.median(ms):9.0f} {p90:7.0f} {ms[-1]:7.0f}")


if __name__ == "__main__":
    main()
