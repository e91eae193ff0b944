"""The gateway plans and drives a simulated home (firmware-sim over Modbus TCP on loopback, a
scaled clock): the battery charges while power is cheap and discharges while it is dear; with a
planner that always fails the fallback plan still drives the devices and the daemon runs on."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from homeflex.clock import ScaledClock
from homeflex.edge.config import GatewayConfig
from homeflex.edge.control import Command
from homeflex.edge.devices.capabilities import Quantity
from homeflex.edge.gateway import Gateway
from homeflex.edge.home import send
from homeflex.edge.planner.inputs import PlanInputs
from homeflex.edge.planner.planner import Plan, solve
from homeflex.pki.identity import Identity
from homeflex.pki.identity import Role as PkiRole
from tests.integration.simhome import SimHome, run_sim
from tests.pki_fixtures import CredsFactory, creds, fleet_ca  # noqa: F401

START = datetime(2026, 6, 1, 0, 0, tzinfo=UTC)  # night: the battery's moves are the prices'
T0 = START.timestamp()
SPEED = 600.0  # ten simulated minutes per real second
CHARGE_W = DISCHARGE_W = 5000.0

HOME: dict[str, Any] = {
    "name": "planned",
    "seed": 3,
    "step_s": 10,
    "site": {"latitude": 50.85, "longitude": 4.35, "utc_offset_h": 1},
    "devices": [
        {"id": "meter", "kind": "meter", "modbus": {"port": 0, "unit": 1, "template": "meter-3ph"}},
        {
            "id": "pv",
            "kind": "pv",
            "kwp": 4.0,
            "modbus": {"port": 0, "unit": 1, "template": "pv-inverter"},
        },
        {
            "id": "battery",
            "kind": "battery",
            "capacity_wh": 10_000,
            "soc_pct": 50,
            "max_charge_w": CHARGE_W,
            "max_discharge_w": DISCHARGE_W,
            "modbus": {"port": 0, "unit": 1, "template": "home-battery"},
        },
    ],
}

# 00:00-01:00 cheap, 01:00-02:00 dear (also to sell); the flat tariff after 02:00
PRICES = {
    "start": "2026-06-01T00:00:00Z",
    "series_step_s": 3600,
    "import_price": [0.05, 0.60],
    "export_price": [0.00, 0.50],
}


def gateway_config(
    sim: SimHome, tmp_path: Path, planned: bool, credentials: Path | None = None
) -> GatewayConfig:
    devices = [
        {
            "protocol": "modbus",
            "id": dev_id,
            "template": ep["template"],
            "host": ep["host"],
            "port": ep["port"],
            "unit": ep["unit"],
            "poll_s": 30,
            "timeout_s": 0.5,
        }
        for dev_id, ep in sim.endpoints["devices"].items()
    ]
    (tmp_path / "prices.json").write_text(json.dumps(PRICES))
    home = {
        "meter": "meter",
        "site": {"latitude": 50.85, "longitude": 4.35, "utc_offset_h": 1},
        "prices": {
            "file": str(tmp_path / "prices.json"),
            "flat_import_eur_per_kwh": 0.25,
            "flat_export_eur_per_kwh": 0.02,
        },
        "cycle_s": 30,
        "devices": [
            {
                "kind": "battery",
                "id": "battery",
                "capacity_wh": 10_000,
                "max_charge_w": CHARGE_W,
                "max_discharge_w": DISCHARGE_W,
                "soc_min_pct": 10,
            },
            # the PV inverter is not planned: a box without history would count on a share of
            # its peak tomorrow, and the battery would rightly leave room for the sun; here the
            # battery's moves are the prices' alone
        ],
    }
    return GatewayConfig.model_validate(
        {
            "gateway_id": "planned-box",
            "data_dir": str(tmp_path / "gw"),
            "store": {"path": str(tmp_path / "store.db")},
            "devices": devices,
            "home": home if planned else None,
            "credentials": str(credentials) if credentials else None,
            "web": {"listen": "127.0.0.1", "port": 0} if credentials else None,
        }
    )


@asynccontextmanager
async def running(
    tmp_path: Path,
    planner: Callable[[PlanInputs], Plan] = solve,
    planned: bool = True,
    credentials: Path | None = None,
) -> AsyncIterator[tuple[SimHome, Gateway]]:
    with run_sim(HOME, tmp_path, speed=SPEED, start=START) as sim:
        c = sim.endpoints["clock"]
        clock = ScaledClock(start=c["start"], speed=c["speed"], anchor=c["anchor"])
        cfg = gateway_config(sim, tmp_path, planned, credentials)
        gw = Gateway(cfg, clock, planner=planner)
        stop = asyncio.Event()
        task = asyncio.create_task(gw.run(stop))
        for _ in range(500):  # until it has started: its drivers exist
            if gw.pollers:
                break
            await asyncio.sleep(0.01)
        try:
            yield sim, gw
            assert not task.done(), "the gateway stopped on its own"
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)  # the gateway bounds its own stop; never hang here


async def battery_until(sim: SimHome, until: float) -> list[tuple[float, float, float]]:
    """(sim time, setpoint W, SoC %) of the simulated battery, sampled until sim time `until`."""
    samples = []
    while True:
        state = await sim.control({"cmd": "state"})
        bat = state["devices"]["battery"]
        samples.append((state["sim_time"] - T0, bat["setpoint_w"], bat["soc_pct"]))
        if samples[-1][0] >= until:
            return samples
        await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_the_battery_charges_cheap_and_discharges_dear(tmp_path: Path) -> None:
    async with running(tmp_path) as (sim, _):
        samples = await battery_until(sim, 2 * 3600 + 60)
        status = json.loads((tmp_path / "gw" / "status.json").read_text())
        plan = json.loads((tmp_path / "gw" / "plan.json").read_text())

    def during(lo_min: float, hi_min: float) -> list[tuple[float, float, float]]:
        return [s for s in samples if lo_min * 60 <= s[0] < hi_min * 60]

    # the first plan may take a cycle or two; from 00:10 on, each PTU follows a plan
    cheap, dear = during(10, 60), during(70, 117)
    assert len(cheap) > 10 and len(dear) > 10
    assert [s for s in cheap if s[1] != CHARGE_W] == []
    assert [s for s in dear if s[1] != -DISCHARGE_W] == []

    def soc_at(minute: float) -> float:
        return min(samples, key=lambda s: abs(s[0] - minute * 60))[2]

    # 5 kW for 50 minutes into 10 kWh at 95 %: about +40 %; out at 95 %: about -44 %
    assert soc_at(60) - soc_at(10) == pytest.approx(5000 * 50 / 60 * 0.95 / 100, abs=4)
    assert soc_at(117) - soc_at(70) == pytest.approx(-5000 * 47 / 60 / 0.95 / 100, abs=4)
    assert status["plan"]["status"] in ("optimal", "feasible")
    assert status["plan"]["last_error"] == "" and status["plan"]["price_error"] == ""
    assert plan["status"] in ("optimal", "feasible")
    # the receding horizon: re-planned every PTU, the last plan from 01:45 or 02:00
    assert datetime.fromisoformat(plan["start"]).timestamp() >= T0 + 7200 - 900


def boom(inputs: PlanInputs) -> Plan:
    raise RuntimeError("boom: the planner is broken")


@pytest.mark.slow
async def test_a_failing_planner_leaves_the_fallback_in_charge(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with running(tmp_path, planner=boom) as (sim, gw):
        samples = await battery_until(sim, 20 * 60)
        # new prices mid-PTU: a plan is asked for at once, not at the next PTU
        (tmp_path / "prices.json").write_text(json.dumps({**PRICES, "import_price": [0.1, 0.2]}))
        samples += await battery_until(sim, 50 * 60)
        await asyncio.sleep(2.5)  # real seconds: the status writer's period
        status = json.loads((tmp_path / "gw" / "status.json").read_text())
        assert all(p.health.state == "ok" for p in gw.pollers)
        assert gw.control is not None
        reasons = [why for _, why in gw.control.replans]
        assert reasons[:5] == ["new PTU", "new PTU", "new prices", "new PTU", "new PTU"], reasons
    # self-consumption: at night the battery covers the base load the fallback assumes (400 W
    # by default while there is no history)
    later = [s for s in samples if s[0] >= 10 * 60]
    assert later and all(setpoint == -400 for _, setpoint, _ in later), later
    assert later[-1][2] < later[0][2]  # and the battery really discharges
    assert status["plan"]["status"] == "fallback"
    assert status["plan"]["last_error"] == "planner failed: boom: the planner is broken"
    # the plan published is the fallback's, the one the devices follow
    assert json.loads((tmp_path / "gw" / "plan.json").read_text())["status"] == "fallback"
    assert caplog.text.count("planner failed: boom") == 1  # once, not once per solve


async def test_send_reports_refused_commands_and_sends_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # monitor only: no control loop that would send its own commands meanwhile
    async with running(tmp_path, planned=False) as (sim, gw):
        devices = {p.device.id: p.device for p in gw.pollers}
        await send(
            [
                Command("meter", Quantity.SETPOINT_W, 1000),  # a meter has no setpoint
                Command("ghost", Quantity.SETPOINT_W, 1000),  # not a device of this gateway
                Command("pv", Quantity.POWER_LIMIT_PCT, 140),  # out of the register's range
                Command("pv", Quantity.POWER_LIMIT_PCT, 37.5),
            ],
            devices,
        )
        state = (await sim.control({"cmd": "state"}))["devices"]
    assert state["pv"]["power_limit_pct"] == pytest.approx(37.5)
    text = caplog.text
    assert "command meter setpoint_w=1000 failed: meter: template meter-3ph has no setpoint" in text
    assert "command ghost setpoint_w=1000 failed: ghost: no such device in the gateway" in text
    assert "failed: pv: setpoint power_limit_pct: 140 % is outside 0..100" in text


async def test_the_gateway_serves_its_page_with_the_homes_power_now(
    tmp_path: Path,
    creds: CredsFactory,  # noqa: F811
) -> None:
    box = creds(Identity("planned-box", PkiRole.HOME))
    async with running(tmp_path, credentials=box.dir) as (_, gw):
        for _ in range(400):  # until the page listens and the meter and battery were read
            live = gw.live()["flows"]
            if gw.web_url and live["grid"] is not None and "battery" in live:
                break
            await asyncio.sleep(0.05)
        assert gw.web_url is not None
        code = (tmp_path / "gw" / "setup-code.txt").read_text().strip()
        ctx = ssl.create_default_context(cafile=str(box.ca_path))
        ctx.check_hostname = False  # the box is reached by address; the chain is checked
        async with httpx.AsyncClient(base_url=gw.web_url, verify=ctx) as c:
            form = await c.get("/claim")
            pre = re.search(r'name="pre" value="([^"]+)"', form.text)
            assert pre is not None
            data = {"code": code, "user": "anna", "password": "lentils-and-rice-42",
                    "again": "lentils-and-rice-42", "pre": pre.group(1)}  # fmt: skip
            assert (await c.post("/claim", data=data)).status_code == 303
            before = gw.live()
            now = (await c.get("/api/now")).json()
            after = gw.live()
            assert gw.control is not None
            meter = gw.control.snapshot()[("meter", Quantity.POWER_W)]
    status = json.loads((tmp_path / "gw" / "status.json").read_text())  # as it stopped
    # what the page shows is what the control loop last read (a poll may land in between);
    # the grid is the meter (no await between `after` and the snapshot: the same instant)
    assert now in (before, after)
    assert (after["flows"]["grid"], after["read_at"]) == (meter.value, meter.ts)
    flows = now["flows"]
    # the rest of the house: the meter less the battery
    assert flows["house"] == pytest.approx(flows["grid"] - flows["battery"])
    assert status["web"]["url"] == gw.web_url
