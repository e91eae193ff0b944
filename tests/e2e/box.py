"""A whole simulated home and its box for the end-to-end tests: firmware-sim's detached example
home as a separate process, the gateway in the test's event loop with its web page over HTTPS
(the box's own certificate, from the test fleet CA), as on a first boot."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from homeflex.clock import Clock, ScaledClock, SystemClock
from homeflex.demo import gateway_config
from homeflex.edge.config import GatewayConfig
from homeflex.edge.gateway import Gateway
from homeflex.pki.bundle import Credentials
from tests.integration.simhome import REPO, run_sim

HOME_FILE = REPO / "firmware-sim" / "homes" / "detached.yaml"
# 19:00 local (UTC+1) on a winter evening: the car is plugged in (18:00-07:30), the heat pump runs
START = datetime(2026, 1, 15, 18, 0, tzinfo=UTC)
# ten simulated seconds per real second: the meter (read every 10 simulated s, taken in by the
# control loop every CYCLE_S) moves between two of the page's refreshes (every 3 s), the plan
# holds (a 15-minute PTU lasts 90 s), and a reading stays on the page for 6 real s (the control
# loop's 60 simulated s): at 60x a busy machine would blank the page's values now and then
SPEED = 10.0
CYCLE_S = 10.0
# the devices the page shows once read: the meter and every planned Modbus device (the Zigbee
# appliances may come later; they are not waited for)
FLOWS = ("grid", "pv", "battery", "ev", "heat_pump", "house")
STARTUP_S = 60.0  # bound on the gateway's start until every flow above is read


@dataclass
class RunningBox:
    gw: Gateway
    url: str  # https://127.0.0.1:port/
    data_dir: Path
    creds: Credentials

    @property
    def setup_code(self) -> str:
        return (self.data_dir / "setup-code.txt").read_text().strip()


def spki_pin(creds: Credentials) -> str:
    """Base64 SHA-256 of the box certificate's SubjectPublicKeyInfo: what Chromium's
    `--ignore-certificate-errors-spki-list` takes. The leaf's only (cert.pem holds the chain
    after it): pinning the fleet CA would let every box of the fleet through."""
    leaf = x509.load_pem_x509_certificates(creds.cert_path.read_bytes())[0]
    spki = leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def home_spec() -> dict[str, Any]:
    """The detached example home, each Modbus device on a port of its own chosen by the
    system: its fixed shared port 15020 may be taken on a busy machine."""
    home: dict[str, Any] = yaml.safe_load(HOME_FILE.read_text())
    for dev in home["devices"]:
        if "modbus" in dev:
            dev["modbus"]["port"] = 0
    return home


@asynccontextmanager
async def serving(
    cfg: dict[str, Any],
    clock: Clock,
    creds: Credentials,
    ready: Callable[[Gateway], bool] = lambda gw: True,
) -> AsyncIterator[RunningBox]:
    """The gateway of `cfg` with its web page on loopback (the box's certificate), from when its
    page listens and `ready(gateway)` holds until the block ends."""
    cfg = {**cfg, "credentials": str(creds.dir), "web": {"listen": "127.0.0.1", "port": 0}}
    gw = Gateway(GatewayConfig.model_validate(cfg), clock)
    stop = asyncio.Event()
    task = asyncio.create_task(gw.run(stop), name="gateway")
    try:
        try:
            async with asyncio.timeout(STARTUP_S):  # a bound, not a measurement
                while gw.web_url is None or not ready(gw):
                    if task.done():
                        task.result()  # its exception, if it raised
                        raise AssertionError("the gateway stopped while starting")
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise AssertionError(f"not ready: page {gw.web_url}, {gw.live()}") from None
        assert gw.web_url is not None
        yield RunningBox(gw, gw.web_url, Path(cfg["data_dir"]), creds)
        assert not task.done(), "the gateway stopped on its own"
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)  # the gateway bounds its own stop; never hang here


@asynccontextmanager
async def home_with_box(tmp_path: Path, creds: Credentials) -> AsyncIterator[RunningBox]:
    """The detached home (firmware-sim) and its box, on first boot, until the block ends; from
    when the page listens and the meter and the planned Modbus devices have been read."""
    with run_sim(home_spec(), tmp_path, speed=SPEED, start=START) as sim:
        c = sim.endpoints["clock"]
        clock = ScaledClock(start=c["start"], speed=c["speed"], anchor=c["anchor"])
        cfg = gateway_config(sim.endpoints, tmp_path / "home.yaml", tmp_path)  # run_sim wrote it
        # the gateway's own default cycle, not the demo's minute: the control loop takes in the
        # readings once a cycle and holds them for 60 s, so with a 60 s cycle the Now page
        # would show "—" for the last seconds of each cycle
        cfg["home"]["cycle_s"] = CYCLE_S

        def read(gw: Gateway) -> bool:
            return all(gw.live()["flows"].get(f) is not None for f in FLOWS)

        async with serving(cfg, clock, creds, read) as box:
            yield box


@asynccontextmanager
async def bare_box(tmp_path: Path, creds: Credentials) -> AsyncIterator[RunningBox]:
    """A box with no devices, on first boot: its web page alone."""
    cfg = {
        "gateway_id": creds.dir.name,
        "data_dir": str(tmp_path / "gateway"),
        "store": {"path": str(tmp_path / "gateway" / "store.db")},
    }
    async with serving(cfg, SystemClock(), creds) as box:
        yield box
