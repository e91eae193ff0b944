"""The simulated Zigbee network: its devices, and the radio (NCP) a gateway talks to over TCP:
our own frame protocol (`wire`, radio `homeflex-sim`) or TI's ZNP (`znp`, radio `znp`)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random

from homeflex_sim.loads import SimLoad
from homeflex_sim.zigbee import wire
from homeflex_sim.zigbee.devices import Outgoing, SimAppliance, SimDevice, SimPlug
from homeflex_sim.zigbee.spec import ZigbeeSpec
from homeflex_sim.zigbee.znp import ZnpRadio

LOG = logging.getLogger(__name__)


class ZigbeeNetwork:
    """Devices from the home file's `zigbee:` section behind one simulated radio.

    Devices join when the host opens permit join; their physics advance with the home's steps
    (`loads`), and after each step their attributes are refreshed and due reports are sent.
    The radio front-end is the spec's `radio`: this class serves `homeflex-sim` itself, and
    hands frames to and from a `ZnpRadio` for `znp`.
    """

    def __init__(self, spec: ZigbeeSpec, seed: int) -> None:
        rng = random.Random(f"{seed}:zigbee")
        nwks = rng.sample(range(0x0001, 0xFFF8), len(spec.plugs) + len(spec.appliances))
        self.radio_ieee = bytes(rng.randrange(256) for _ in range(8))
        devices: list[SimDevice] = [
            SimPlug(p, nwks.pop(), seed, spec.utc_offset_h) for p in spec.plugs
        ]
        devices += [SimAppliance(a, nwks.pop(), seed, spec.utc_offset_h) for a in spec.appliances]
        self.devices = {d.name: d for d in devices}
        self.loads: list[SimLoad] = list(devices)  # type: ignore[arg-type]  # structural
        self.network: wire.Network | None = None
        self.now = 0.0
        self._server: asyncio.Server | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._znp = ZnpRadio(self, seed) if spec.radio == "znp" else None

    # --- the home's interface ------------------------------------------------------------------

    def after_step(self, t: float) -> None:
        self.now = t
        for dev in self.devices.values():
            dev.update(t)
            if dev.joined:
                for out in dev.reports_due(t):
                    self._deliver(dev, out)

    async def serve(self, host: str, port: int) -> int:
        if self._znp is not None:
            return await self._znp.serve(host, port)
        self._server = await asyncio.start_server(self._connected, host, port)
        bound: int = self._server.sockets[0].getsockname()[1]
        LOG.info("zigbee radio listening on %s:%d", host, bound)
        return bound

    async def close(self) -> None:
        if self._znp is not None:
            await self._znp.close()
        if self._writer is not None:
            self._writer.close()  # the handler then reads end-of-stream and returns
            self._writer = None
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=2.0)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def apply_fault(self, device: str, fault: str, args: dict[str, object]) -> None:
        dev = self.devices.get(device)
        if dev is None:
            raise ValueError(f"no zigbee device {device!r}; known: {', '.join(self.devices)}")
        was_joined = dev.joined
        dev.apply_fault(fault, args)
        if fault == "leave" and was_joined:
            self._left(dev)
        elif fault == "rejoin" and self.network is not None and not dev.joined:
            dev.joined = True
            self._deliver(dev, dev.announce())

    # --- what both radio front-ends do -----------------------------------------------------------

    def form(self, network: wire.Network) -> None:
        self.network = network

    def leave(self) -> None:
        """The radio leaves its network: all devices are forgotten."""
        self.network = None
        for dev in self.devices.values():
            dev.forget()

    def tx_status(self, tx: wire.Tx) -> int:
        return self._tx_status(tx)

    def transmit(self, tx: wire.Tx) -> None:
        self._transmit(tx)

    def join_waiting(self) -> None:
        self._join_waiting()

    # --- the homeflex-sim radio -------------------------------------------------------------------

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._writer is not None:  # one host per radio, as on a serial port
            self._writer.close()
        self._writer = writer
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        try:
            while True:
                kind, request_id, payload = await wire.read_frame(reader)
                self._send(wire.frame(kind | wire.RSP, request_id, self._request(kind, payload)))
                if kind == wire.TX:
                    self._transmit(wire.Tx.unpack(payload))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except wire.FrameError as exc:
            LOG.warning("zigbee radio: closing the host connection: %s", exc)
        finally:
            if self._writer is writer:
                self._writer = None
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _request(self, kind: int, payload: bytes) -> bytes:
        """The response payload of a request."""
        if kind == wire.PING:
            return bytes([1])
        if kind == wire.NET_INFO:
            if self.network is None:
                return bytes([0]) + bytes(49)
            return bytes([1]) + self.network.pack()
        if kind == wire.NET_FORM:
            net = wire.Network.unpack(payload)
            self.form(dataclasses.replace(net, ieee=self.radio_ieee, nwk=0x0000))
            return bytes([wire.OK])
        if kind == wire.NET_RESET:
            self.leave()
            return bytes([wire.OK])
        if kind == wire.PERMIT:
            if len(payload) != 1:
                return bytes([wire.BAD_REQUEST])
            if self.network is None:
                return bytes([wire.NOT_FORMED])
            if payload[0] > 0:
                self._join_waiting()
            return bytes([wire.OK])
        if kind == wire.TX:
            return bytes([self._tx_status(wire.Tx.unpack(payload))])
        raise wire.FrameError(f"unknown request type 0x{kind:02x}")

    def _join_waiting(self) -> None:
        """Permit join is open: every device waiting to be paired joins (its button pressed)."""
        for dev in self.devices.values():
            if not dev.joined and not dev.away:
                dev.joined = True
                if self._znp is not None:
                    self._znp.joined(dev)
                    continue
                body = dev.nwk.to_bytes(2, "little") + dev.ieee.serialize() + bytes(2)
                self._send(wire.frame(wire.JOINED, 0, body))

    def _target(self, tx: wire.Tx) -> list[SimDevice] | None:
        """The devices a TX reaches; None when its unicast destination is not in the network."""
        joined = [d for d in self.devices.values() if d.joined]
        if tx.addr_mode == wire.ADDR_BROADCAST:
            return joined
        if tx.addr_mode == wire.ADDR_GROUP or (tx.addr_mode == wire.ADDR_NWK and tx.nwk == 0):
            return []  # groups are not simulated; the coordinator itself needs nothing
        if tx.addr_mode == wire.ADDR_NWK:
            found = [d for d in joined if d.nwk == tx.nwk]
        elif tx.addr_mode == wire.ADDR_IEEE:
            found = [d for d in joined if d.ieee.serialize() == tx.address]
        else:
            return None
        return found or None

    def _tx_status(self, tx: wire.Tx) -> int:
        if self.network is None:
            return wire.NOT_FORMED
        return wire.OK if self._target(tx) is not None else wire.NO_DEVICE

    def _transmit(self, tx: wire.Tx) -> None:
        if self.network is None:
            return
        broadcast = tx.addr_mode == wire.ADDR_BROADCAST
        for dev in self._target(tx) or []:
            for out in dev.receive(
                tx.dst_ep, tx.profile, tx.cluster, tx.payload, self.now, broadcast
            ):
                self._deliver(dev, out)
            if not dev.joined:  # it was told to leave
                self._left(dev)

    def _left(self, dev: SimDevice) -> None:
        if self._znp is not None:
            self._znp.left(dev)
            return
        self._send(wire.frame(wire.LEFT, 0, dev.nwk.to_bytes(2, "little") + dev.ieee.serialize()))

    def _deliver(self, dev: SimDevice, out: Outgoing) -> None:
        if self._znp is not None:
            self._znp.received(dev, out)
            return
        rx = wire.Rx(
            dev.nwk,
            dev.ieee.serialize(),
            out.src_ep,
            out.dst_ep,
            out.profile,
            out.cluster,
            dev.lqi,
            dev.rssi,
            out.payload,
        )
        self._send(wire.frame(wire.RX, 0, rx.pack()))

    def _send(self, data: bytes) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(data)
