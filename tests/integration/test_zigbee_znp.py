"""The gateway on radio `znp` — zigpy-znp unchanged, as with a real TI stick — against the
simulator's ZNP radio (MT frames over TCP on loopback): forming, joining and interview, reports,
polling, commands, deferral and faults, through TI's protocol instead of our own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from homeflex.edge.config import ZigbeeConfig
from homeflex.edge.devices.capabilities import Quantity
from homeflex.edge.devices.zigbee import ZigbeeGateway
from homeflex_sim.zigbee import ZigbeeNetwork, ZigbeeSpec
from homeflex_sim.zigbee.znp import ZnpRadio
from tests.integration import test_zigbee_gateway as sim_radio

# The homeflex-sim radio's tests, collected again here, where `rig` below runs them over ZNP.
from tests.integration.test_zigbee_gateway import (  # noqa: F401
    test_a_plug_that_refuses_reporting_is_polled_for_its_summation,
    test_a_silent_device_times_out_and_recovers,
    test_deferring_the_washer_moves_its_load,
    test_joining_devices_are_interviewed_with_their_real_clusters,
    test_leave_gives_device_error_until_rejoin,
    test_malformed_frames_are_logged_and_dropped,
    test_reports_flow_into_poll_without_radio_round_trips,
    test_switching_off_stops_the_simulated_load_and_is_read_back,
)

Rig = sim_radio.Rig


async def start_znp_rig(data_dir: Path, seed: int = 7) -> Rig:
    spec = ZigbeeSpec.model_validate({**sim_radio.SPEC, "radio": "znp"})
    network = ZigbeeNetwork(spec, seed)
    port = await network.serve("127.0.0.1", 0)
    clock = sim_radio.ManualClock(sim_radio.START)
    network.after_step(sim_radio.START)
    config = ZigbeeConfig(radio="znp", path=f"socket://127.0.0.1:{port}")
    gateway = ZigbeeGateway(config, data_dir, clock)
    await gateway.start()
    return Rig(network, gateway, clock)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    rig = await start_znp_rig(tmp_path)
    yield rig
    await sim_radio.stop_rig(rig)


def znp_of(rig: Rig) -> ZnpRadio:
    radio = rig.network._znp
    assert radio is not None
    return radio


async def test_the_gateway_forms_a_network_in_the_radios_nvram(rig: Rig) -> None:
    app = rig.gateway.app
    assert app is not None, "zigpy-znp did not start on the simulated ZNP"
    info, node = app.state.network_info, app.state.node_info
    assert node.nwk == 0x0000 and node.ieee.serialize() == rig.network.radio_ieee
    assert node.model == "CC2531" and node.version.startswith("Z-Stack Home 1.2")
    assert info.channel == 15  # the gateway's configured channel
    formed = rig.network.network
    assert formed is not None  # the simulated devices see the same network
    assert (formed.channel, formed.pan_id) == (info.channel, info.pan_id)
    assert formed.extended_pan_id == info.extended_pan_id.serialize()
    assert formed.network_key == info.network_key.key.serialize()
    # zigpy-znp registered its endpoints on the radio; Z-Stack answers the interview of itself
    radio = znp_of(rig)
    assert 1 in radio.endpoints and radio.endpoints[1].ProfileId == 0x0104
    assert sorted(app._device.endpoints) == [0, *sorted(radio.endpoints)]


async def test_a_restarted_gateway_finds_the_network_it_formed(tmp_path: Path) -> None:
    rig = await start_znp_rig(tmp_path)
    try:
        await rig.join_all()
        app = rig.gateway.app
        assert app is not None
        pan_id, key = app.state.network_info.pan_id, app.state.network_info.network_key.key
        await rig.gateway.close()
        gateway = ZigbeeGateway(rig.gateway.config, tmp_path, rig.clock)
        await gateway.start()
        rig = Rig(rig.network, gateway, rig.clock)
        assert gateway.app is not None
        assert gateway.app.state.network_info.pan_id == pan_id  # not formed anew
        assert gateway.app.state.network_info.network_key.key == key
        assert all(d.joined for d in rig.network.devices.values())  # nobody had to re-pair
        fridge = rig.device("fridge", "zigbee-plug", sim_radio.FRIDGE)
        await rig.advance(60)
        got = sim_radio.by_quantity(await fridge.poll())
        assert got[Quantity.POWER_W].value == 100.0
    finally:
        await sim_radio.stop_rig(rig)
