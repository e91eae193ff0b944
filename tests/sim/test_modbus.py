"""The Modbus TCP servers seen from a real pymodbus client on loopback: values, writes, faults."""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import AsyncIterator

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from homeflex_sim.faults import Fault
from homeflex_sim.home import Home
from homeflex_sim.modbus import DeviceServer
from tests.sim.conftest import WINTER, battery, ev, heat_pump, home_spec, pv


@pytest.fixture
async def served() -> AsyncIterator[tuple[Home, dict[str, int]]]:
    """A home whose meter, PV and battery share one port (units 1..3); the heat pump and the
    EV charger have their own. Yields the home and each device's port."""
    home = Home(home_spec(pv(), battery(), heat_pump(), ev()), WINTER + 12 * 3600)
    # Meter, PV and battery on one server by hand (port 0 in a home file gives each its own).
    bus = [home.devices["meter"], home.devices["pv"], home.devices["battery"]]
    for unit, device in enumerate(bus, start=1):
        device.unit = unit
    servers = [
        DeviceServer("127.0.0.1", 0, bus),
        DeviceServer("127.0.0.1", 0, [home.devices["hp"]]),
        DeviceServer("127.0.0.1", 0, [home.devices["ev"]]),
    ]
    ports = [await s.start() for s in servers]
    home.step()
    yield (
        home,
        {"meter": ports[0], "pv": ports[0], "battery": ports[0], "hp": ports[1], "ev": ports[2]},
    )
    for s in servers:
        await s.stop()


async def client(port: int) -> AsyncModbusTcpClient:
    c = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=0.3, retries=0)
    assert await c.connect()
    return c


def u64(words: list[int]) -> int:
    return int(struct.unpack(">Q", struct.pack(">4H", *words))[0])


def i32(words: list[int]) -> int:
    return int(struct.unpack(">i", struct.pack(">2H", *words))[0])


def f32(words: list[int]) -> float:
    return float(struct.unpack(">f", struct.pack(">2H", *words))[0])


async def test_meter_block_matches_physics_and_clock(served: tuple[Home, dict[str, int]]) -> None:
    home, ports = served
    for _ in range(30):
        home.step()
    c = await client(ports["meter"])
    r = await c.read_input_registers(0, count=24, device_id=1)
    w = r.registers
    m = home.meter
    assert (w[0] << 16 | w[1]) == home.t
    assert i32(w[2:4]) == round(m.power_w)
    assert i32(w[4:6]) + i32(w[6:8]) + i32(w[8:10]) == pytest.approx(m.power_w, abs=2)
    assert w[10] == round(m.voltage_l1_v * 10)
    assert u64(w[16:20]) == round(m.import_wh * 100)
    assert u64(w[20:24]) == round(m.export_wh * 100)
    c.close()


async def test_units_on_a_shared_port(served: tuple[Home, dict[str, int]]) -> None:
    home, ports = served
    c = await client(ports["pv"])
    pv_words = (await c.read_input_registers(0, count=8, device_id=2)).registers
    assert i32(pv_words[2:4]) == round(home.physics["pv"].power_w) < 0  # midday, producing
    bat_words = (await c.read_input_registers(4, count=1, device_id=3)).registers
    assert bat_words == [round(home.physics["battery"].soc_pct * 100)]
    r = await c.read_input_registers(0, count=2, device_id=9)
    assert r.isError() and r.exception_code == 0x0B  # no such unit behind this port
    c.close()


async def test_writes_reach_physics_and_bad_values_are_refused(
    served: tuple[Home, dict[str, int]],
) -> None:
    home, ports = served
    c = await client(ports["battery"])
    setpoint = list(struct.unpack(">2H", struct.pack(">i", -2500)))
    assert not (await c.write_registers(100, setpoint, device_id=3)).isError()
    assert home.physics["battery"].setpoint_w == -2500
    assert (await c.read_holding_registers(100, count=2, device_id=3)).registers == setpoint
    home.step()
    assert home.physics["battery"].power_w == -2500
    too_much = list(struct.unpack(">2H", struct.pack(">i", 9000)))
    r = await c.write_registers(100, too_much, device_id=3)
    assert r.isError() and r.exception_code == 0x03
    assert home.physics["battery"].setpoint_w == -2500
    r = await c.write_registers(102, [0, 1], device_id=3)  # capacity: read-only
    assert r.isError() and r.exception_code == 0x02
    r = await c.write_register(101, 5, device_id=3)  # the second half of a 32-bit setpoint
    assert r.isError() and r.exception_code == 0x02
    r = await c.read_input_registers(40, count=2, device_id=3)
    assert r.isError() and r.exception_code == 0x02
    r = await c.write_register(100, 550, device_id=2)  # PV limit 55.0 %
    assert not r.isError() and home.physics["pv"].power_limit_pct == pytest.approx(55.0)
    c.close()
    hp = await client(ports["hp"])
    r = await hp.write_register(100, 5, device_id=1)  # SG-Ready 5: outside the template's range
    assert r.isError() and r.exception_code == 0x03
    assert not (await hp.write_register(100, 1, device_id=1)).isError()
    assert home.physics["hp"].sg_ready_mode == 1
    hp.close()
    charger = await client(ports["ev"])
    r = await charger.write_register(100, 30, device_id=1)  # 3.0 A: refused by the charger
    assert r.isError() and r.exception_code == 0x03
    assert not (await charger.write_register(100, 80, device_id=1)).isError()
    assert home.physics["ev"].setpoint_a == pytest.approx(8.0)
    charger.close()


async def test_exception_timeout_and_clear(served: tuple[Home, dict[str, int]]) -> None:
    home, ports = served
    c = await client(ports["meter"])
    home.devices["meter"].set_fault(Fault("exception", 6))
    r = await c.read_input_registers(0, count=2, device_id=1)
    assert r.isError() and r.exception_code == 6
    r = await c.read_input_registers(0, count=2, device_id=2)
    assert not r.isError()  # the PV on the same port is fine
    home.devices["meter"].set_fault(Fault("timeout"))
    with pytest.raises(ModbusIOException):
        await c.read_input_registers(0, count=2, device_id=1)
    home.devices["meter"].set_fault(None)
    c.close()
    c = await client(ports["meter"])
    r = await c.read_input_registers(0, count=2, device_id=1)
    assert (r.registers[0] << 16 | r.registers[1]) == home.t
    c.close()


async def test_nan_and_out_of_range_values(served: tuple[Home, dict[str, int]]) -> None:
    home, ports = served
    c = await client(ports["hp"])
    home.devices["hp"].set_fault(Fault("nan"))
    w = (await c.read_input_registers(0, count=15, device_id=1)).registers
    assert (w[0] << 16 | w[1]) == home.t  # the clock still reads
    assert w[4:6] == [0x7FC0, 0x0000] and math.isnan(f32(w[4:6]))  # room temperature
    assert math.isnan(f32(w[10:12]))  # COP
    assert i32(w[2:4]) == round(home.physics["hp"].power_w)  # integer registers unchanged
    home.devices["hp"].set_fault(Fault("out_of_range"))
    w = (await c.read_input_registers(0, count=15, device_id=1)).registers
    assert w[2:4] == [0x8000, 0x0000]  # int32 "not available"
    assert w[12:14] == [0xFFFF, 0xFFFF]  # uint32 "not available"
    assert f32(w[4:6]) > 1e38  # absurd float
    home.devices["hp"].set_fault(None)
    w = (await c.read_input_registers(4, count=2, device_id=1)).registers
    assert f32(w) == pytest.approx(home.physics["hp"].room_temp_c)
    c.close()


def _read_frame(tid: int, unit: int) -> bytes:
    return struct.pack(">HHHBBHH", tid, 0, 6, unit, 4, 0, 2)


async def test_drop_closes_the_connection(served: tuple[Home, dict[str, int]]) -> None:
    home, ports = served
    reader, writer = await asyncio.open_connection("127.0.0.1", ports["ev"])
    writer.write(_read_frame(1, 1))
    reply = await asyncio.wait_for(reader.readexactly(13), 2)
    assert reply[7] == 4 and reply[8] == 4  # fc 4, 4 bytes
    home.devices["ev"].set_fault(Fault("drop"))
    writer.write(_read_frame(2, 1))
    assert await asyncio.wait_for(reader.read(100), 2) == b""  # closed by the server
    writer.close()


async def test_single_client_refuses_a_second_connection(
    served: tuple[Home, dict[str, int]],
) -> None:
    home, ports = served
    home.devices["ev"].set_fault(Fault("single_client"))
    r1, w1 = await asyncio.open_connection("127.0.0.1", ports["ev"])
    w1.write(_read_frame(1, 1))
    assert len(await asyncio.wait_for(r1.readexactly(13), 2)) == 13
    r2, w2 = await asyncio.open_connection("127.0.0.1", ports["ev"])
    assert await asyncio.wait_for(r2.read(100), 2) == b""  # closed at once
    w1.write(_read_frame(2, 1))  # the first client still works
    assert len(await asyncio.wait_for(r1.readexactly(13), 2)) == 13
    w1.close()
    w2.close()
