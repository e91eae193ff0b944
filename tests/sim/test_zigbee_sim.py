"""The simulated Zigbee network on its own: physics, the appliance's schedule, faults, and the
radio's frame protocol seen by a raw TCP client."""

from __future__ import annotations

import asyncio
import struct

import pytest
import zigpy.types as t
from pydantic import ValidationError
from zigpy.zcl import foundation

from homeflex_sim.zigbee import ZigbeeNetwork, ZigbeeSpec, wire
from homeflex_sim.zigbee.devices import decode_relative_time, encode_relative_time

DAY0 = 1767225600.0  # 2026-01-01T00:00:00Z
PLUG = "00:12:4b:00:00:00:00:01"
SPEC = {
    "plugs": [{"id": "kettle", "ieee": PLUG, "load": {"profile": "constant", "power_w": 2000}}],
    "appliances": [
        {
            "id": "dw",
            "ieee": "00:12:4b:00:00:00:00:02",
            "kind": "dishwasher",
            "ready": "20:00",
            "finish_by": "06:00",
        }
    ],
}


def run(
    net: ZigbeeNetwork, t0: float, seconds: float, dt: float = 10.0
) -> list[tuple[float, float]]:
    """Step the physics; returns (t, appliance power) per step."""
    trace = []
    for k in range(round(seconds / dt)):
        t = t0 + k * dt
        for load in net.loads:
            load.step(t, dt)
        net.after_step(t + dt)
        trace.append((t, net.devices["dw"].power_w))
    return trace


def test_plug_energy_is_the_integral_of_its_power_and_stops_when_off() -> None:
    net = ZigbeeNetwork(ZigbeeSpec.model_validate(SPEC), seed=3)
    plug = net.devices["kettle"]
    run(net, DAY0, 900)
    assert plug.energy_wh == pytest.approx(500.0)  # 2 kW for a quarter hour
    assert plug.clusters[0x0702].get("current_summ_delivered") == 50000  # 0.01 Wh units
    assert plug.clusters[0x0B04].get("active_power") == 20000  # 0.1 W units
    plug.on = False
    run(net, DAY0 + 900, 600)
    assert plug.power_w == 0.0 and plug.energy_wh == pytest.approx(500.0)


def test_appliance_starts_by_itself_at_the_latest_start_over_midnight() -> None:
    net = ZigbeeNetwork(ZigbeeSpec.model_validate(SPEC), seed=3)
    trace = run(net, DAY0 + 19 * 3600, 12 * 3600)
    on = [t for t, p in trace if p > 0]
    assert on[0] == DAY0 + 27 * 3600  # 06:00 next day − 3 h
    assert sum(p * 10 / 3600 for _, p in trace) == pytest.approx(1183.33, abs=0.01)
    assert net.devices["dw"].energy_wh == pytest.approx(1183.33, abs=0.01)


def test_relative_time_encoding_round_trips_in_whole_minutes() -> None:
    assert encode_relative_time(0) == 0
    assert encode_relative_time(61) == 2  # a countdown rounds up
    assert encode_relative_time(2 * 3600 + 5 * 60) == 0x0205
    assert decode_relative_time(0x0205) == 7500
    assert decode_relative_time(0x0045) is None  # absolute encoding


def test_spec_errors_name_the_field() -> None:
    bad = {"plugs": [{"id": "a", "ieee": PLUG, "load": {"profile": "toaster"}}]}
    with pytest.raises(ValidationError, match=r"plugs\.0\.load\.profile"):
        ZigbeeSpec.model_validate(bad)
    twice = {"plugs": [SPEC["plugs"][0], SPEC["plugs"][0]]}  # type: ignore[index]
    with pytest.raises(ValidationError, match="used twice"):
        ZigbeeSpec.model_validate(twice)
    net = ZigbeeNetwork(ZigbeeSpec.model_validate(SPEC), seed=3)
    with pytest.raises(ValueError, match="unknown zigbee fault 'melt'"):
        net.apply_fault("kettle", "melt", {})


class Host:
    """A raw client of the radio protocol."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.indications: list[tuple[int, bytes]] = []

    async def request(self, kind: int, payload: bytes = b"") -> bytes:
        self.writer.write(wire.frame(kind, 7, payload))
        while True:
            got, request_id, body = await wire.read_frame(self.reader)
            if got == kind | wire.RSP:
                assert request_id == 7
                return body
            self.indications.append((got, body))

    async def next_indication(self) -> tuple[int, bytes]:
        if self.indications:
            return self.indications.pop(0)
        got, request_id, body = await asyncio.wait_for(wire.read_frame(self.reader), 2)
        assert request_id == 0
        return got, body


async def test_radio_protocol_join_read_and_leave() -> None:
    net = ZigbeeNetwork(ZigbeeSpec.model_validate(SPEC), seed=3)
    run(net, DAY0, 60)
    port = await net.serve("127.0.0.1", 0)
    host = Host(*await asyncio.open_connection("127.0.0.1", port))
    try:
        assert await host.request(wire.PING) == b"\x01"
        assert (await host.request(wire.NET_INFO))[0] == 0  # not formed
        assert await host.request(wire.PERMIT, b"\x3c") == bytes([wire.NOT_FORMED])
        record = wire.Network(bytes(8), 0, 0x1A2B, bytes(range(8)), 15, 0, bytes(16), 0, 0)
        assert await host.request(wire.NET_FORM, record.pack()) == bytes([wire.OK])
        info = wire.Network.unpack((await host.request(wire.NET_INFO))[1:])
        assert (info.pan_id, info.channel, info.ieee) == (0x1A2B, 15, net.radio_ieee)
        assert await host.request(wire.PERMIT, b"\x3c") == bytes([wire.OK])
        joined = [await host.next_indication() for _ in range(2)]
        assert {k for k, _ in joined} == {wire.JOINED}
        nwk, ieee, _ = struct.unpack("<H8sH", joined[0][1])
        assert t.EUI64(ieee) == t.EUI64.convert(PLUG)

        # Read Attributes of Metering: CurrentSummationDelivered, Divisor
        zcl = foundation.ZCLHeader.general(0x42, foundation.GeneralCommand.Read_Attributes)
        payload = zcl.serialize() + t.List[t.uint16_t]([0x0000, 0x0302]).serialize()
        head = struct.pack(
            "<B8sBBHHBB",
            wire.ADDR_NWK,
            nwk.to_bytes(2, "little") + bytes(6),
            1,
            1,
            0x0104,
            0x0702,
            0x42,
            0,
        )
        assert await host.request(wire.TX, head + payload) == bytes([wire.OK])
        kind, body = await host.next_indication()
        assert kind == wire.RX
        src_nwk, _, src_ep, _, profile, cluster, _, _ = struct.unpack_from("<H8sBBHHBb", body)
        assert (src_nwk, src_ep, profile, cluster) == (nwk, 1, 0x0104, 0x0702)
        hdr, rest = foundation.ZCLHeader.deserialize(body[18:])
        assert hdr.tsn == 0x42 and hdr.command_id == foundation.GeneralCommand.Read_Attributes_rsp
        records, _ = t.List[foundation.ReadAttributeRecord].deserialize(rest)
        assert [r.value.value for r in records] == [round(2000 * 60 / 3600 * 100), 100_000]

        net.apply_fault("kettle", "leave", {})
        assert (await host.next_indication())[0] == wire.LEFT
        assert await host.request(wire.TX, head + payload) == bytes([wire.NO_DEVICE])
    finally:
        host.writer.close()
        await net.close()
