"""The gateway against firmware-sim over real Modbus TCP on loopback: readings, commands confirmed
by read-back, and every device fault recovered or reported while the daemon keeps running."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from homeflex.clock import ScaledClock
from homeflex.edge.config import GatewayConfig
from homeflex.edge.devices.capabilities import CommandNotConfirmed, DeviceError, Quantity
from homeflex.edge.devices.modbus import ModbusDevice
from homeflex.edge.gateway import Gateway
from homeflex.edge.poller import Poller
from tests.integration.simhome import SimHome, run_sim

START = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)  # a June morning: the sun is up
SPEED = 60.0

HOME: dict[str, Any] = {
    "name": "faults",
    "seed": 5,
    "step_s": 10,
    "site": {"latitude": 50.85, "longitude": 4.35, "utc_offset_h": 1},
    "devices": [
        # meter, PV and battery behind one RS-485 gateway (one port, three unit ids)
        {"id": "meter", "kind": "meter", "modbus": {"port": 0, "unit": 1, "template": "meter-3ph"}},
        {
            "id": "pv",
            "kind": "pv",
            "kwp": 5.0,
            "modbus": {"port": 0, "unit": 1, "template": "pv-inverter"},
        },
        {
            "id": "battery",
            "kind": "battery",
            "capacity_wh": 10000,
            "soc_pct": 50,
            "modbus": {"port": 0, "unit": 1, "template": "home-battery"},
        },
        {
            "id": "hp",
            "kind": "heat_pump",
            "modbus": {"port": 0, "unit": 1, "template": "heat-pump"},
        },
        {
            "id": "ev",
            "kind": "ev_charger",
            "visits": [{"arrive": "06:00", "leave": "23:00", "soc_pct": 20, "capacity_wh": 60000}],
            "modbus": {"port": 0, "unit": 1, "template": "ev-charger"},
        },
    ],
}


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimHome]:
    with run_sim(HOME, tmp_path_factory.mktemp("sim"), speed=SPEED, start=START) as home:
        yield home


@pytest.fixture
async def gateway(sim: SimHome, tmp_path: Path) -> AsyncIterator[Gateway]:
    c = sim.endpoints["clock"]
    clock = ScaledClock(start=c["start"], speed=c["speed"], anchor=c["anchor"])
    devices = [
        {
            "protocol": "modbus",
            "id": dev_id,
            "template": ep["template"],
            "host": ep["host"],
            "port": ep["port"],
            "unit": ep["unit"],
            "poll_s": 10,
            "timeout_s": 0.5,
        }
        for dev_id, ep in sim.endpoints["devices"].items()
    ]
    cfg = GatewayConfig.model_validate(
        {
            "gateway_id": "test-box",
            "data_dir": str(tmp_path),
            "store": {"path": str(tmp_path / "store.db")},
            "devices": devices,
        }
    )
    gw = Gateway(cfg, clock)
    stop = asyncio.Event()
    task = asyncio.create_task(gw.run(stop))
    await asyncio.sleep(0.3)
    yield gw
    for dev in ("meter", "pv", "battery", "hp", "ev"):
        await sim.control({"cmd": "clear", "device": dev})
    stop.set()
    await task


def poller(gw: Gateway, dev_id: str) -> Poller:
    return next(p for p in gw.pollers if p.device.id == dev_id)


def device(gw: Gateway, dev_id: str) -> ModbusDevice:
    dev = poller(gw, dev_id).device
    assert isinstance(dev, ModbusDevice)
    return dev


async def until(condition: Any, timeout_s: float = 10.0) -> None:
    """Wait (real time) for a condition of the running gateway; no fixed sleeps."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_readings_match_the_simulated_devices(sim: SimHome, gateway: Gateway) -> None:
    await until(lambda: all(p.health.state == "ok" for p in gateway.pollers))
    readings = {r.quantity: r for r in await device(gateway, "meter").poll()}
    state = await sim.control({"cmd": "state"})
    meter = state["devices"]["meter"]
    # The reading carries the meter's own clock, so it can be matched to the physics exactly.
    assert readings[Quantity.IMPORT_WH].ts % 10 == 0
    assert readings[Quantity.IMPORT_WH].value == pytest.approx(meter["import_wh"], abs=50)
    assert readings[Quantity.VOLTAGE_L1_V].value == pytest.approx(230, abs=10)
    pv = {r.quantity: r.value for r in await device(gateway, "pv").poll()}
    assert pv[Quantity.POWER_W] < -500  # producing on a June morning
    await until(lambda: gateway.written > 0)
    await gateway.flush()
    assert gateway.store is not None
    stored = {r.device for r in gateway.store.latest()}
    assert stored == {"meter", "pv", "battery", "hp", "ev"}


async def test_setpoints_are_confirmed_by_read_back(sim: SimHome, gateway: Gateway) -> None:
    battery, ev, pv = device(gateway, "battery"), device(gateway, "ev"), device(gateway, "pv")
    await battery.set_power(-1500)
    await ev.set_current(8)
    await pv.set_power_limit(40)
    state = (await sim.control({"cmd": "state"}))["devices"]
    assert state["battery"]["setpoint_w"] == -1500
    assert state["ev"]["setpoint_a"] == pytest.approx(8)
    assert state["pv"]["power_limit_pct"] == pytest.approx(40)

    # the physics follows at its next step
    async def discharging() -> bool:
        bat = {r.quantity: r.value for r in await battery.poll()}
        return bat[Quantity.POWER_W] == pytest.approx(-1500, abs=1)

    for _ in range(100):
        if await discharging():
            break
        await asyncio.sleep(0.02)
    assert await discharging()
    # a value the device refuses is an error naming the device, not a silent success
    with pytest.raises(DeviceError, match=r"ev: setpoint setpoint_a: 40 A is outside 0..32"):
        await ev.set_current(40)
    with pytest.raises(DeviceError, match=r"exception 3 \(illegal data value\)"):
        await ev.set_current(3)  # the charger accepts 0 or 6..16 A
    await pv.set_power_limit(100)
    await battery.set_power(0)


@pytest.mark.parametrize(
    ("dev_id", "fault", "extra", "message"),
    [
        ("hp", "timeout", {}, "no answer"),
        ("hp", "exception", {"code": 4}, "exception 4 (device failure)"),
        ("hp", "exception", {"code": 6}, "exception 6 (device busy)"),
        ("ev", "drop", {}, "no answer reading"),
    ],
)
async def test_device_faults_are_reported_then_recovered(
    sim: SimHome,
    gateway: Gateway,
    caplog: pytest.LogCaptureFixture,
    dev_id: str,
    fault: str,
    extra: dict[str, Any],
    message: str,
) -> None:
    caplog.set_level(logging.INFO)
    p = poller(gateway, dev_id)
    await until(lambda: p.health.state == "ok")
    await sim.control({"cmd": "fault", "device": dev_id, "fault": fault, **extra})
    await until(lambda: p.health.state == "failing")
    assert message in (p.health.last_error or "")
    assert f"device {dev_id} failing" in caplog.text
    # the other devices carry on meanwhile
    meter = poller(gateway, "meter")
    polls = meter.health.polls
    await until(lambda: meter.health.polls > polls + 2)
    assert meter.health.state == "ok"
    await sim.control({"cmd": "clear", "device": dev_id})
    await until(lambda: p.health.state == "ok", timeout_s=20)
    assert f"device {dev_id} recovered" in caplog.text


async def test_nan_and_not_available_values_are_refused_and_named(
    sim: SimHome, gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    hp = device(gateway, "hp")
    await sim.control({"cmd": "fault", "device": "hp", "fault": "nan"})
    await asyncio.sleep(0.25)
    values = {r.quantity: r.value for r in await hp.poll()}
    # float registers are refused, integer registers of the same read are kept
    assert Quantity.ROOM_TEMP_C not in values and Quantity.FLOW_TEMP_C not in values
    assert Quantity.IMPORT_WH in values
    assert any(
        "hp: register room_temp_c (input 4, raw 7fc0 0000): raw value nan is not a number" in p
        for p in hp.problems
    )
    pv = device(gateway, "pv")
    await sim.control({"cmd": "fault", "device": "pv", "fault": "out_of_range"})
    await asyncio.sleep(0.25)
    values = {r.quantity: r.value for r in await pv.poll()}
    assert Quantity.POWER_W not in values
    assert (
        "pv: register power_w (input 2, raw 8000 0000): raw -0x80000000 means 'not available'"
        in caplog.text
    )
    # nothing wrong was stored
    await gateway.flush()
    assert gateway.store is not None
    temps = gateway.store.readings("hp", Quantity.ROOM_TEMP_C, 0, 1e12)
    assert all(15 < r.value < 30 for r in temps)


async def test_single_client_device_is_shared_through_one_connection(
    sim: SimHome, gateway: Gateway
) -> None:
    """meter, pv and battery sit behind one port that accepts a single client: the gateway reads
    all three through its one link, while a second client is turned away."""
    await sim.control({"cmd": "fault", "device": "meter", "fault": "single_client"})
    polls = {d: poller(gateway, d).health.polls for d in ("meter", "pv", "battery")}
    ep = sim.device("meter")
    intruder = AsyncModbusTcpClient(ep["host"], port=ep["port"], timeout=0.5, retries=0)
    await intruder.connect()
    await asyncio.sleep(0.1)
    try:
        rr = await intruder.read_input_registers(0, count=2, device_id=1)
        refused = rr.isError()
    except (ModbusException, OSError):  # the server closed the connection under it
        refused = True
    intruder.close()
    assert refused, "a second client read the device"
    await until(lambda: all(poller(gateway, d).health.polls > polls[d] + 2 for d in polls))
    assert all(poller(gateway, d).health.state == "ok" for d in polls)


async def test_command_not_confirmed_when_read_back_differs(sim: SimHome, gateway: Gateway) -> None:
    """A write the device acknowledges but ignores is caught by reading it back."""
    hp = device(gateway, "hp")
    await hp.set_sg_ready(3)
    assert await hp.read_register("sg_ready_mode") == 3
    await sim.control({"cmd": "fault", "device": "hp", "fault": "ignore_writes"})
    with pytest.raises(CommandNotConfirmed, match="hp: wrote sg_ready_mode = 4 , read back 3"):
        await hp.set_sg_ready(4)
    await sim.control({"cmd": "clear", "device": "hp"})
    await hp.set_sg_ready(2)
