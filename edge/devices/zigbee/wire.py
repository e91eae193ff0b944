"""Host side of the homeflex-sim radio protocol: length-prefixed frames over TCP.

The format is the simulated NCP's, specified in firmware-sim/homeflex_sim/zigbee/wire.py (the
two programs share no code; they meet on this wire). In short: `length u16 | type u8 | id u8 |
payload`, little-endian; requests PING 0x01, NET_INFO 0x02, NET_FORM 0x03, NET_RESET 0x04,
PERMIT 0x05, TX 0x06 are answered with type | 0x80 and the same id; the radio indicates RX 0x40
(a received APS frame with its source nwk/ieee, endpoints, profile, cluster, LQI, RSSI),
JOINED 0x41 and LEFT 0x42 with id 0.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

PING, NET_INFO, NET_FORM, NET_RESET, PERMIT, TX = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06
RSP = 0x80
RX, JOINED, LEFT = 0x40, 0x41, 0x42

OK, NO_DEVICE, NOT_FORMED, BAD_REQUEST = 0, 1, 2, 3
STATUS_NAMES = {
    OK: "ok",
    NO_DEVICE: "no such device in the network",
    NOT_FORMED: "no network formed",
    BAD_REQUEST: "bad request",
}

ADDR_GROUP, ADDR_NWK, ADDR_IEEE, ADDR_BROADCAST = 1, 2, 3, 15
MAX_FRAME = 4096

NETWORK = struct.Struct("<8sHH8sBB16sBI")  # ieee, nwk, pan, epid, channel, update id, key, seq, ctr
TX_HEAD = struct.Struct(
    "<B8sBBHHBB"
)  # addr mode, address, dst_ep, src_ep, profile, cluster, tsn, radius
RX_HEAD = struct.Struct(
    "<H8sBBHHBb"
)  # src nwk, src ieee, src_ep, dst_ep, profile, cluster, lqi, rssi
JOINED_BODY = struct.Struct("<H8sH")
LEFT_BODY = struct.Struct("<H8s")


class FrameError(Exception):
    """A frame that does not follow the protocol."""


@dataclass(frozen=True, slots=True)
class RxFrame:
    src_nwk: int
    src_ieee: bytes
    src_ep: int
    dst_ep: int
    profile: int
    cluster: int
    lqi: int
    rssi: int
    payload: bytes

    @classmethod
    def unpack(cls, data: bytes) -> RxFrame:
        if len(data) < RX_HEAD.size:
            raise FrameError(f"RX frame has {len(data)} bytes, shorter than its header")
        head = RX_HEAD.unpack_from(data)
        return cls(*head, payload=data[RX_HEAD.size :])  # type: ignore[misc]  # head fills the rest


def frame(kind: int, request_id: int, payload: bytes = b"") -> bytes:
    body = bytes((kind, request_id)) + payload
    return struct.pack("<H", len(body)) + body


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, int, bytes]:
    """The next frame as (type, id, payload); raises IncompleteReadError at end of stream."""
    (length,) = struct.unpack("<H", await reader.readexactly(2))
    if not 2 <= length <= MAX_FRAME:
        raise FrameError(f"frame length {length} is outside 2..{MAX_FRAME}")
    body = await reader.readexactly(length)
    return body[0], body[1], body[2:]
