"""The simulated radio's host protocol: length-prefixed frames over TCP, like an NCP's serial link.

Every frame, both directions (integers little-endian, as in Zigbee itself):

    length  u16   number of bytes that follow (type + id + payload)
    type    u8    frame type, below; a response has the request's type | 0x80
    id      u8    request id chosen by the host, echoed in the response; 0 in indications
    payload ...

Requests (host → radio) and the payload of their responses (radio → host):

    0x01 PING        req: -                          rsp: version u8 (= 1)
    0x02 NET_INFO    req: -                          rsp: formed u8 (1 yes, 0 no), NETWORK
    0x03 NET_FORM    req: NETWORK (the radio keeps its own ieee, nwk 0x0000)   rsp: status u8
    0x04 NET_RESET   req: - (leave the network; all devices are forgotten)      rsp: status u8
    0x05 PERMIT      req: seconds u8 (0 closes)      rsp: status u8
    0x06 TX          req: addr_mode u8 (1 group, 2 nwk, 3 ieee, 15 broadcast),
                          address 8 bytes (nwk/group/broadcast in the first two, ieee all eight),
                          dst_ep u8, src_ep u8, profile u16, cluster u16, tsn u8, radius u8,
                          aps payload (the ZCL or ZDO frame, to the end)
                     rsp: status u8 — the transmit confirmation: 0 delivered,
                          1 no such device in the network (it left or never joined)

    NETWORK = ieee 8, nwk u16, pan_id u16, extended_pan_id 8, channel u8, nwk_update_id u8,
              network_key 16, key_seq u8, key_tx_counter u32          (49 bytes)

Indications (radio → host, id 0):

    0x40 RX          src_nwk u16, src_ieee 8, src_ep u8, dst_ep u8, profile u16, cluster u16,
                     lqi u8, rssi i8, aps payload (to the end)
    0x41 JOINED      nwk u16, ieee 8, parent_nwk u16     (trust-centre join of a new device)
    0x42 LEFT        nwk u16, ieee 8

Status codes: 0 success, 1 no such device, 2 not formed, 3 bad request. A device that rejoins
announces itself with a ZDO Device_annce in an RX frame, as real devices do.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

PING, NET_INFO, NET_FORM, NET_RESET, PERMIT, TX = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06
RSP = 0x80
RX, JOINED, LEFT = 0x40, 0x41, 0x42

OK, NO_DEVICE, NOT_FORMED, BAD_REQUEST = 0, 1, 2, 3

ADDR_GROUP, ADDR_NWK, ADDR_IEEE, ADDR_BROADCAST = 1, 2, 3, 15

MAX_FRAME = 4096

_NETWORK = struct.Struct("<8sHH8sBB16sBI")
_TX_HEAD = struct.Struct("<B8sBBHHBB")
_RX_HEAD = struct.Struct("<H8sBBHHBb")


class FrameError(Exception):
    """A frame that does not follow the protocol above."""


@dataclass(frozen=True, slots=True)
class Network:
    ieee: bytes
    nwk: int
    pan_id: int
    extended_pan_id: bytes
    channel: int
    nwk_update_id: int
    network_key: bytes
    key_seq: int
    key_tx_counter: int

    def pack(self) -> bytes:
        return _NETWORK.pack(
            self.ieee,
            self.nwk,
            self.pan_id,
            self.extended_pan_id,
            self.channel,
            self.nwk_update_id,
            self.network_key,
            self.key_seq,
            self.key_tx_counter,
        )

    @classmethod
    def unpack(cls, data: bytes) -> Network:
        if len(data) != _NETWORK.size:
            raise FrameError(f"network record has {len(data)} bytes, expected {_NETWORK.size}")
        return cls(*_NETWORK.unpack(data))


@dataclass(frozen=True, slots=True)
class Tx:
    addr_mode: int
    address: bytes
    dst_ep: int
    src_ep: int
    profile: int
    cluster: int
    tsn: int
    radius: int
    payload: bytes

    def pack(self) -> bytes:
        head = _TX_HEAD.pack(
            self.addr_mode,
            self.address,
            self.dst_ep,
            self.src_ep,
            self.profile,
            self.cluster,
            self.tsn,
            self.radius,
        )
        return head + self.payload

    @classmethod
    def unpack(cls, data: bytes) -> Tx:
        if len(data) < _TX_HEAD.size:
            raise FrameError(f"TX frame has {len(data)} bytes, shorter than its header")
        head = _TX_HEAD.unpack_from(data)
        return cls(*head, payload=data[_TX_HEAD.size :])  # type: ignore[misc]  # head fills the rest

    @property
    def nwk(self) -> int:
        return int.from_bytes(self.address[:2], "little")


@dataclass(frozen=True, slots=True)
class Rx:
    src_nwk: int
    src_ieee: bytes
    src_ep: int
    dst_ep: int
    profile: int
    cluster: int
    lqi: int
    rssi: int
    payload: bytes

    def pack(self) -> bytes:
        head = _RX_HEAD.pack(
            self.src_nwk,
            self.src_ieee,
            self.src_ep,
            self.dst_ep,
            self.profile,
            self.cluster,
            self.lqi,
            self.rssi,
        )
        return head + self.payload


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
