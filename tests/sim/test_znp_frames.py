"""The simulated ZNP's MT framing (SOF, length, command, payload, FCS) on known bytes, and its
radio answering raw frames over TCP."""

from __future__ import annotations

import asyncio
import logging

import pytest
import zigpy_znp.commands as c
import zigpy_znp.types as t

from homeflex_sim.zigbee import ZigbeeNetwork, ZigbeeSpec
from homeflex_sim.zigbee.znp import (
    CAPABILITIES,
    MtFrameError,
    decode,
    encode,
    encode_command,
    read_frame,
)

PING_REQ = bytes.fromhex("fe00210120")  # SYS_PING: SREQ subsystem SYS (0x21), id 0x01
PING_RSP = bytes.fromhex("fe02610179011a")  # SRSP (0x61), capabilities 0x0179, as a CC2531


def test_known_frames_encode_with_their_fcs() -> None:
    assert encode_command(c.SYS.Ping.Req()) == PING_REQ
    assert encode_command(c.SYS.Ping.Rsp(Capabilities=CAPABILITIES)) == PING_RSP
    # FCS = XOR of length, cmd0, cmd1 and payload: 02 ^ 61 ^ 01 ^ 79 ^ 01 = 1a
    rsp = c.SYS.Ping.Rsp.from_frame(decode(PING_RSP))
    assert rsp.Capabilities == 0x0179


def test_decoding_checks_sof_length_and_fcs() -> None:
    confirm = bytes.fromhex("fe034480000105c3")  # AF_DATA_CONFIRM, AREQ 0x44
    frame = decode(confirm)
    assert frame.data == bytes([0x00, 0x01, 0x05])
    got = c.AF.DataConfirm.Callback.from_frame(frame)
    assert (got.Status, got.Endpoint, got.TSN) == (t.Status.SUCCESS, 1, 5)
    assert encode(frame) == confirm
    with pytest.raises(MtFrameError, match="FCS 0x21, computed 0x20"):
        decode(PING_REQ[:-1] + b"\x21")
    with pytest.raises(MtFrameError, match="length 1 has 0 payload bytes"):
        decode(bytes.fromhex("fe01210120"))
    with pytest.raises(MtFrameError, match="not an MT frame"):
        decode(bytes.fromhex("ef00210120"))


async def test_reading_skips_bytes_before_a_start_of_frame() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(b"\xef\xef" + PING_REQ + PING_RSP)  # a bootloader's skip bytes first
    reader.feed_eof()
    assert (await read_frame(reader)).header == c.SYS.Ping.Req.header
    assert (await read_frame(reader)).header == c.SYS.Ping.Rsp.header
    with pytest.raises(asyncio.IncompleteReadError):
        await read_frame(reader)


async def test_the_radio_answers_raw_frames_and_survives_bad_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    network = ZigbeeNetwork(ZigbeeSpec.model_validate({"radio": "znp"}), seed=1)
    port = await network.serve("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        caplog.set_level(logging.WARNING, logger="homeflex_sim.zigbee.znp")
        writer.write(PING_REQ[:-1] + b"\x00")  # bad FCS: dropped, the link stays up
        writer.write(encode_command(c.SYS.OSALNVLength.Req(Id=0x0001)))  # EXTADDR: 8 bytes
        writer.write(bytes.fromhex("fe002fff") + bytes([0x00 ^ 0x2F ^ 0xFF]))  # no such command
        writer.write(PING_REQ)
        async with asyncio.timeout(5):
            length = c.SYS.OSALNVLength.Rsp.from_frame(await read_frame(reader))
            unknown = c.RPCError.CommandNotRecognized.Rsp.from_frame(await read_frame(reader))
            ping = await reader.readexactly(len(PING_RSP))
        assert length.ItemLen == 8
        assert unknown.RequestHeader == t.CommandHeader(0xFF2F)
        assert ping == PING_RSP
        assert any(
            "bad frame" in r.getMessage() and "FCS" in r.getMessage() for r in caplog.records
        )
    finally:
        writer.close()
        await writer.wait_closed()
        await network.close()
