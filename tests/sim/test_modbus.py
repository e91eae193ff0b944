"""The Modbus TCP servers seen from a real pymodbus client on loopback: values, writes, faults."""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import AsyncIterator
from types import SimpleNamespace

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from homeflex_sim.control import Control
from homeflex_sim.faults import SPIKE_W, Fault
from homeflex_sim.home import Home
from homeflex_sim.modbus import DeviceServer
from homeflex_sim.register_device import RegisterDevice
from homeflex_sim.templates import Template
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


async def test_spike_shows_plus_20_kw_on_one_read_then_clears(
    served: tuple[Home, dict[str, int]],
) -> None:
    """Injected over the control channel: the first read covering the meter's power registers
    shows total and per-phase power + 20 kW with unchanged counters, then the fault is gone."""
    home, ports = served
    for _ in range(30):
        home.step()
    m = home.meter
    control = Control(home, lambda: None, {})
    assert control.handle({"cmd": "fault", "device": "meter", "fault": "spike"}) == {"ok": True}
    assert control.handle({"cmd": "state"})["devices"]["meter"]["fault"] == "spike"
    c = await client(ports["meter"])
    r = await c.read_input_registers(0, count=8, device_id=2)  # the PV on the same port
    assert i32(r.registers[2:4]) == round(home.physics["pv"].power_w)  # not spiked
    # Reads that miss the power registers (the clock, the counters) do not spend the spike.
    clock = (await c.read_input_registers(0, count=2, device_id=1)).registers
    counters = (await c.read_input_registers(16, count=8, device_id=1)).registers
    assert home.devices["meter"].fault == Fault("spike")  # still armed
    w = (await c.read_input_registers(0, count=24, device_id=1)).registers
    assert SPIKE_W == 20_000
    assert i32(w[2:4]) == round(m.power_w + 20_000)
    phases = (m.power_l1_w, m.power_l2_w, m.power_l3_w)
    assert [i32(w[a : a + 2]) for a in (4, 6, 8)] == [round(p + 20_000) for p in phases]
    assert w[0:2] == clock and w[16:24] == counters  # energy counters unchanged
    assert u64(w[16:20]) == round(m.import_wh * 100) and u64(w[20:24]) == round(m.export_wh * 100)
    assert w[10] == round(m.voltage_l1_v * 10)  # other measurements true
    assert home.devices["meter"].fault is None
    assert control.handle({"cmd": "state"})["devices"]["meter"]["fault"] is None
    again = (await c.read_input_registers(0, count=24, device_id=1)).registers
    assert i32(again[2:4]) == round(m.power_w)
    assert [i32(again[a : a + 2]) for a in (4, 6, 8)] == [round(p) for p in phases]
    assert again[16:24] == counters
    c.close()


async def test_spike_waits_for_a_power_read_across_steps_and_devices(
    served: tuple[Home, dict[str, int]],
) -> None:
    """Armed until a read covers power_w: a physics step re-encodes the spike on the new value,
    a failed read (exception 2) or a read of another unit does not spend it. PV (negative power),
    battery, heat pump and EV charger templates spike power_w only."""
    home, ports = served
    c = await client(ports["pv"])
    for dev_id in ("pv", "battery", "hp", "ev"):
        home.devices[dev_id].set_fault(Fault("spike"))
    home.step()
    home.step()
    pv = home.physics["pv"]
    assert pv.power_w < 0  # midday, producing
    r = await c.read_input_registers(0, count=40, device_id=2)
    assert r.isError() and r.exception_code == 0x02
    await c.read_input_registers(0, count=8, device_id=1)  # the meter behind the same port
    assert home.devices["pv"].fault == Fault("spike")
    w = (await c.read_input_registers(0, count=8, device_id=2)).registers
    assert i32(w[2:4]) == round(pv.power_w + 20_000)
    assert (w[4] << 16 | w[5]) == round(pv.export_wh * 10)  # counter unchanged
    assert (w[6] << 16 | w[7]) == round(pv.available_w)  # not an active power measurement
    assert home.devices["pv"].fault is None
    w = (await c.read_input_registers(2, count=2, device_id=2)).registers
    assert i32(w) == round(pv.power_w)
    bat = home.physics["battery"]
    w = (await c.read_input_registers(2, count=7, device_id=3)).registers
    assert i32(w[0:2]) == round(bat.power_w + 20_000)
    assert (w[3] << 16 | w[4]) == round(bat.import_wh * 10)
    assert (w[5] << 16 | w[6]) == round(bat.export_wh * 10)
    assert home.devices["battery"].fault is None
    c.close()
    for dev_id, count in (("hp", 14), ("ev", 8)):
        dc = await client(ports[dev_id])
        phys = home.physics[dev_id]
        w = (await dc.read_input_registers(0, count=count, device_id=1)).registers
        assert i32(w[2:4]) == round(phys.power_w + 20_000)
        at = 12 if dev_id == "hp" else 6
        assert (w[at] << 16 | w[at + 1]) == round(phys.import_wh * 10)
        assert home.devices[dev_id].fault is None
        w = (await dc.read_input_registers(2, count=2, device_id=1)).registers
        assert i32(w) == round(phys.power_w)
        dc.close()


async def test_spike_on_float_and_clamped_integer_registers() -> None:
    """A float32 power register shows exactly true + 20 kW; integer registers too small for it
    saturate just inside their range instead of wrapping round."""
    template = Template.model_validate(
        {
            "name": "odd-meter",
            "kind": "meter",
            "registers": [
                {"name": "clock_s", "address": 0, "table": "input", "type": "uint32"},
                {"name": "power_w", "address": 2, "table": "input", "type": "float32"},
                {"name": "power_l1_w", "address": 4, "table": "input", "type": "int16"},
                {"name": "power_l2_w", "address": 5, "table": "input", "type": "uint16"},
                {
                    "name": "power_l3_w",
                    "address": 6,
                    "table": "input",
                    "type": "int16",
                    "scale": 10,
                },
                {"name": "import_wh", "address": 7, "table": "input", "type": "float32"},
            ],
        }
    )
    physics = SimpleNamespace(
        power_w=1234.5, power_l1_w=15000.0, power_l2_w=50000.0, power_l3_w=-300.0, import_wh=42.25
    )
    device = RegisterDevice("odd", template, physics, unit=1)
    server = DeviceServer("127.0.0.1", 0, [device])
    c = await client(await server.start())
    device.set_fault(Fault("spike"))
    w = (await c.read_input_registers(0, count=9, device_id=1)).registers
    assert f32(w[2:4]) == 21234.5
    assert w[4] == 0x7FFF  # int16, scale 1: 35000 W clamps to 32767
    assert w[5] == 0xFFFE  # uint16: 70000 W clamps to 65534, one short of "not available"
    assert struct.unpack(">h", struct.pack(">H", w[6]))[0] == 1970  # scale 10: 19700 W fits
    assert f32(w[7:9]) == 42.25
    assert device.fault is None
    w = (await c.read_input_registers(2, count=5, device_id=1)).registers
    assert f32(w[0:2]) == 1234.5 and w[2] == 15000 and w[3] == 50000
    c.close()
    await server.stop()
    no_power = Template.model_validate(
        {
            "name": "clock-only",
            "kind": "meter",
            "registers": [{"name": "clock_s", "address": 0, "table": "input", "type": "uint32"}],
        }
    )
    with pytest.raises(ValueError, match="no power register to spike"):
        RegisterDevice("clock", no_power, physics, unit=1).set_fault(Fault("spike"))


def test_spike_from_the_home_file() -> None:
    home = Home(home_spec(pv(faults=[{"fault": "spike"}])), WINTER + 12 * 3600)
    home.step()
    device = home.devices["pv"]
    assert device.fault == Fault("spike")
    assert home.state()["devices"]["pv"]["fault"] == "spike"
    words = device.read("input", 0, 6)
    assert isinstance(words, list)
    assert i32(words[2:4]) == round(home.physics["pv"].power_w + 20_000)
    assert home.state()["devices"]["pv"]["fault"] is None


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
