"""The gateway's zigpy stack against the simulated Zigbee network over real TCP on loopback:
joining and interview, reports, polling, commands, deferral and faults."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from homeflex.edge.config import ZigbeeConfig, ZigbeeDeviceConfig
from homeflex.edge.devices.capabilities import (
    DeferrableAppliance,
    DeviceError,
    Quantity,
    Reading,
    Switchable,
)
from homeflex.edge.devices.zigbee import ZigbeeGateway
from homeflex_sim.zigbee import ZigbeeNetwork, ZigbeeSpec

DAY0 = 1767225600.0  # 2026-01-01T00:00:00Z
STEP_S = 10.0

FRIDGE = "00:12:4b:00:00:00:00:01"
TV = "00:12:4b:00:00:00:00:02"
WASHER = "00:12:4b:00:00:00:00:03"
DISHWASHER = "00:12:4b:00:00:00:00:04"
SPEC = {
    "plugs": [
        {"id": "fridge", "ieee": FRIDGE, "load": {"profile": "constant", "power_w": 100}},
        {"id": "tv", "ieee": TV, "reports": False, "load": {"profile": "constant", "power_w": 50}},
    ],
    "appliances": [
        {
            "id": "washer",
            "ieee": WASHER,
            "kind": "washing_machine",
            "ready": "08:00",
            "finish_by": "18:00",
        },
        {
            "id": "dishwasher",
            "ieee": DISHWASHER,
            "kind": "dishwasher",
            "ready": "08:00",
            "finish_by": "12:00",
        },
    ],
}
START = DAY0 + 7 * 3600 + 50 * 60  # 07:50


class ManualClock:
    """Simulated time that moves only when the test steps the physics."""

    def __init__(self, t: float) -> None:
        self.t = t

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)

    async def sleep_until(self, instant: float) -> None:
        await asyncio.sleep(0)


@dataclass
class Rig:
    network: ZigbeeNetwork
    gateway: ZigbeeGateway
    clock: ManualClock

    async def sync(self) -> None:
        """Wait until every frame the radio sent so far has been handled by zigpy: the radio
        answers a PING after the frames before it, and the gateway reads them in order."""
        assert self.gateway.app is not None
        await self.gateway.app.watchdog_feed()

    async def advance(self, seconds: float) -> None:
        """Run the physics for `seconds` in 10-s steps, as the home runtime does; the gateway
        handles each step's reports before the next (at the time they were sent)."""
        for _ in range(round(seconds / STEP_S)):
            t = self.clock.t
            for load in self.network.loads:
                load.step(t, STEP_S)
            self.clock.t = t + STEP_S
            self.network.after_step(t + STEP_S)
            await self.sync()

    def device(self, dev_id: str, template: str, ieee: str, **kw: Any) -> Any:
        cfg = ZigbeeDeviceConfig(
            protocol="zigbee",
            id=dev_id,
            template=template,
            ieee=ieee,
            timeout_s=kw.pop("timeout_s", 0.3),
            **kw,
        )
        return self.gateway.device(cfg)

    async def join_all(self, timeout_s: float = 10.0) -> None:
        """Open permit join and wait until zigpy has interviewed every simulated device."""
        app = self.gateway.app
        assert app is not None
        waiting = {d.ieee for d in self.network.devices.values()}
        done = asyncio.Event()

        class Listener:
            def device_initialized(self, device: Any) -> None:
                waiting.discard(device.ieee)
                if not waiting:
                    done.set()

        listener = Listener()
        app.add_listener(listener)
        try:
            await self.gateway.permit_join(60)
            async with asyncio.timeout(timeout_s):
                await done.wait()
        finally:
            app.remove_listener(listener)


async def start_rig(spec: dict[str, Any], data_dir: Path, seed: int = 7, t0: float = DAY0) -> Rig:
    network = ZigbeeNetwork(ZigbeeSpec.model_validate(spec), seed)
    port = await network.serve("127.0.0.1", 0)
    clock = ManualClock(t0)
    network.after_step(t0)
    gateway = ZigbeeGateway(
        ZigbeeConfig(radio="homeflex-sim", path=f"socket://127.0.0.1:{port}"), data_dir, clock
    )
    await gateway.start()
    return Rig(network, gateway, clock)


async def stop_rig(rig: Rig) -> None:
    await rig.gateway.close()
    await rig.network.close()


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    rig = await start_rig(SPEC, tmp_path, t0=START)
    yield rig
    await stop_rig(rig)


def by_quantity(readings: list[Reading]) -> dict[Quantity, Reading]:
    return {r.quantity: r for r in readings}


async def test_joining_devices_are_interviewed_with_their_real_clusters(rig: Rig) -> None:
    fridge = rig.device("fridge", "zigbee-plug", FRIDGE)
    washer = rig.device("washer", "zigbee-appliance", WASHER)
    assert isinstance(fridge, Switchable) and isinstance(washer, DeferrableAppliance)
    await rig.join_all()
    app = rig.gateway.app
    assert app is not None
    plug = app.get_device(ieee=fridge.ieee)
    assert plug.model == "SP-120" and plug.manufacturer == "Homeflex Sim"
    assert plug.node_desc.is_router and plug.node_desc.is_mains_powered
    assert list(plug.non_zdo_endpoints[0].in_clusters) == [0x0000, 0x0006, 0x0702, 0x0B04]
    assert plug.endpoints[1].profile_id == 0x0104 and plug.endpoints[1].device_type == 0x0051
    appliance = app.get_device(ieee=washer.ieee)
    assert list(appliance.endpoints[1].in_clusters) == [0x0000, 0x001B, 0x0702]
    assert appliance.model == "WM-800" and appliance.endpoints[1].device_type == 0x0052
    assert (rig.gateway.data_dir / "zigbee.db").stat().st_size > 0  # zigpy's app database


async def test_reports_flow_into_poll_without_radio_round_trips(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    fridge = rig.device("fridge", "zigbee-plug", FRIDGE)
    await rig.join_all()
    await fridge.poll()  # binds and configures reporting
    await rig.advance(1200)
    frames: list[int] = []
    transmit = rig.network._transmit
    monkeypatch.setattr(
        rig.network, "_transmit", lambda tx: (frames.append(tx.cluster), transmit(tx))
    )
    got = by_quantity(await fridge.poll())
    assert frames == []  # everything came from reports
    assert got[Quantity.POWER_W].value == 100.0
    assert got[Quantity.ON].value == 1.0
    assert 228.0 < got[Quantity.VOLTAGE_V].value < 232.0
    assert got[Quantity.CURRENT_A].value == pytest.approx(
        100 / got[Quantity.VOLTAGE_V].value, abs=0.002
    )
    energy = got[Quantity.IMPORT_WH]
    # a report carries the device's count at the instant it was sent: 100 W since START
    assert energy.value == pytest.approx(100 * (energy.ts - START) / 3600, abs=0.01)
    assert rig.clock.t - energy.ts < 60  # reported at least every max_s = 60 s


async def test_a_plug_that_refuses_reporting_is_polled_for_its_summation(rig: Rig) -> None:
    tv = rig.device("tv", "zigbee-plug", TV)
    await rig.join_all()
    await tv.poll()
    await rig.advance(900)
    got = by_quantity(await tv.poll())
    assert got[Quantity.IMPORT_WH].value == pytest.approx(12.5)  # 50 W × 900 s, 0.01 Wh steps
    assert got[Quantity.IMPORT_WH].ts == rig.clock.t
    assert got[Quantity.POWER_W].value == 50.0
    assert rig.network.devices["tv"].clusters[0x0702].reporting == {}


async def test_switching_off_stops_the_simulated_load_and_is_read_back(rig: Rig) -> None:
    fridge = rig.device("fridge", "zigbee-plug", FRIDGE)
    await rig.join_all()
    await rig.advance(60)
    await fridge.switch(False)
    assert by_quantity(await fridge.poll())[Quantity.ON].value == 0.0
    sim = rig.network.devices["fridge"]
    before = sim.energy_wh
    await rig.advance(600)
    assert sim.power_w == 0.0 and sim.energy_wh == before  # the home meter sees 0 W
    assert by_quantity(await fridge.poll())[Quantity.POWER_W].value == 0.0
    await fridge.switch(True)
    await rig.advance(10)
    assert sim.power_w == 100.0


async def test_deferring_the_washer_moves_its_load(rig: Rig) -> None:
    washer = rig.device("washer", "zigbee-appliance", WASHER)
    rig.device("dishwasher", "zigbee-appliance", DISHWASHER)
    await rig.join_all()
    await rig.advance(10 * 60 + 10)  # 08:00:10: both programmes are prepared
    got = by_quantity(await washer.poll())
    assert got[Quantity.APPLIANCE_STATE].value == 4  # Programmed_Waiting_To_Start
    assert got[Quantity.START_DELAY_S].value == 8 * 3600  # latest start 16:00, whole minutes
    with pytest.raises(DeviceError, match="refused a start in 540 min"):
        await washer.defer_start(9 * 3600)  # 17:00 + 2 h would miss 18:00
    await washer.defer_start(30 * 60)
    assert by_quantity(await washer.poll())[Quantity.START_DELAY_S].value == 30 * 60

    power: dict[str, list[tuple[float, float]]] = {"washer": [], "dishwasher": []}
    for _ in range(4 * 360):  # to 12:00:10, recording each step's power
        t = rig.clock.t
        await rig.advance(10)
        for name in power:
            power[name].append((t, rig.network.devices[name].power_w))

    def first_on(name: str) -> float:
        return next(t for t, p in power[name] if p > 0)

    def energy_wh(name: str, until: float) -> float:
        return sum(p * 10 / 3600 for t, p in power[name] if t < until)

    assert first_on("washer") == DAY0 + 8 * 3600 + 30 * 60 + 10  # the deferred start
    assert first_on("dishwasher") == DAY0 + 9 * 3600  # by itself: 12:00 − 3 h
    assert energy_wh("washer", DAY0 + 8.5 * 3600) == 0.0
    assert energy_wh("washer", DAY0 + 10.5 * 3600 + 10) == pytest.approx(1020.83, abs=0.01)
    # heating (2 kW) in the programme's minutes 5..24
    heating = [t for t, p in power["washer"] if p == 2000.0]
    assert heating[0] == first_on("washer") + 5 * 60 and len(heating) == 20 * 6
    got = by_quantity(await washer.poll())
    assert got[Quantity.APPLIANCE_STATE].value == 7  # End_Programmed
    assert got[Quantity.IMPORT_WH].value == 1020.0  # the meter counts whole Wh


async def test_leave_gives_device_error_until_rejoin(rig: Rig) -> None:
    fridge = rig.device("fridge", "zigbee-plug", FRIDGE)
    await rig.join_all()
    await fridge.poll()
    rig.network.apply_fault("fridge", "leave", {})
    await rig.sync()
    with pytest.raises(DeviceError, match=r"fridge \(00:12:4b:00:00:00:00:01\): has left"):
        await fridge.poll()
    rig.network.apply_fault("fridge", "rejoin", {})
    await rig.advance(10)
    got = by_quantity(await fridge.poll())
    assert got[Quantity.POWER_W].value == 100.0
    assert rig.network.devices["fridge"].clusters[0x0702].reporting  # reporting set up again


async def test_malformed_frames_are_logged_and_dropped(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    fridge = rig.device("fridge", "zigbee-plug", FRIDGE)
    tv = rig.device("tv", "zigbee-plug", TV)
    await rig.join_all()
    await fridge.poll()
    await tv.poll()
    caplog.set_level(logging.WARNING, logger="homeflex.edge.devices.zigbee")
    rig.network.apply_fault("fridge", "malformed", {"count": 2})  # the next two reports
    await rig.advance(120)
    dropped = [r.getMessage() for r in caplog.records if "malformed ZCL frame" in r.getMessage()]
    assert len(dropped) == 2 and all(FRIDGE in m and "cluster 0x" in m for m in dropped)
    assert by_quantity(await fridge.poll())[Quantity.POWER_W].value == 100.0
    rig.network.apply_fault("tv", "malformed", {})  # the next response: zigpy asks again
    got = by_quantity(await tv.poll())
    assert got[Quantity.IMPORT_WH].value == pytest.approx(50 * 120 / 3600, abs=0.01)
    assert any(TV in r.getMessage() for r in caplog.records if "malformed" in r.getMessage())


async def test_a_silent_device_times_out_and_recovers(rig: Rig) -> None:
    tv = rig.device("tv", "zigbee-plug", TV)
    await rig.join_all()
    await rig.advance(10)
    rig.network.apply_fault("tv", "silent", {})
    with pytest.raises(DeviceError, match=r"tv .*no answer to Read Attributes"):
        await tv.poll()
    rig.network.apply_fault("tv", "clear", {})
    assert by_quantity(await tv.poll())[Quantity.POWER_W].value == 50.0
