"""zigpy's ControllerApplication for the homeflex-sim radio (`radio: homeflex-sim`, path
`socket://host:port`): the real zigpy stack above, our TCP frame protocol (see `wire`) below."""

# mypy: disable-error-code="no-untyped-call"
# (zigpy's int types and structs have unannotated constructors)

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator
from typing import Any, cast
from urllib.parse import urlsplit

import zigpy.application
import zigpy.config as conf
import zigpy.endpoint
import zigpy.exceptions
import zigpy.state
import zigpy.types as t
import zigpy.zdo.types as zdo_t
from zigpy.config.defaults import CONF_NWK_TC_LINK_KEY_DEFAULT
from zigpy.device import ZigbeeDevice

from homeflex.edge.devices.zigbee import wire
from homeflex.edge.devices.zigbee.frames import MalformedFrameFilter

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 5.0  # real seconds for the radio (not a device) to answer a request
PROTOCOL_VERSION = 1


def parse_socket_path(path: str) -> tuple[str, int]:
    """`socket://host:port` → (host, port), with an error saying what is expected."""
    parts = urlsplit(path)
    if parts.scheme != "socket" or not parts.hostname or parts.port is None:
        raise ValueError(f"zigbee path {path!r}: the homeflex-sim radio needs socket://HOST:PORT")
    return parts.hostname, parts.port


class Unsupported(zigpy.exceptions.ControllerException):
    """Something zigpy can ask of a radio that the simulated radio does not do."""

    def __init__(self, what: str) -> None:
        super().__init__(f"the homeflex-sim radio does not support {what}")


class HomeflexSimApplication(MalformedFrameFilter):
    """A coordinator whose NCP is the simulated radio of firmware-sim."""

    DISPLAY_NAME = "Homeflex simulated radio"
    DESCRIPTION = "The firmware-sim Zigbee network over TCP"

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._rx_task: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[bytes]] = {}
        self._next_id = 0
        self._endpoints: list[zdo_t.SimpleDescriptor] = []

    # --- the link ---------------------------------------------------------------------------

    async def connect(self) -> None:
        host, port = parse_socket_path(self._config[conf.CONF_DEVICE][conf.CONF_DEVICE_PATH])
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            self._reader, self._writer = await asyncio.open_connection(host, port)
        self._rx_task = asyncio.create_task(self._receive(self._reader), name="zigbee-radio-rx")
        try:
            version = await self._request(wire.PING)
            if version != bytes([PROTOCOL_VERSION]):
                raise zigpy.exceptions.ControllerException(
                    f"radio at {host}:{port} speaks protocol {version.hex()}, "
                    f"not {PROTOCOL_VERSION}"
                )
        except BaseException:
            await self.disconnect()
            raise

    async def disconnect(self) -> None:
        if self._rx_task is not None:
            self._rx_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._rx_task
            self._rx_task = None
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError):
                await self._writer.wait_closed()
            self._writer = None
        self._fail_pending(ConnectionError("the radio connection is closed"))

    def _fail_pending(self, exc: Exception) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(exc)
        self._pending.clear()

    async def _request(self, kind: int, payload: bytes = b"") -> bytes:
        if self._writer is None or self._writer.is_closing():
            raise ConnectionError("the zigbee radio is not connected")
        self._next_id = self._next_id % 255 + 1
        request_id = self._next_id
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            self._writer.write(wire.frame(kind, request_id, payload))
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                return await future
        finally:
            self._pending.pop(request_id, None)

    async def _receive(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                kind, request_id, payload = await wire.read_frame(reader)
                if kind & wire.RSP:
                    future = self._pending.get(request_id)
                    if future is not None and not future.done():
                        future.set_result(payload)
                else:
                    self._indication(kind, payload)
        except asyncio.CancelledError:
            raise
        except (asyncio.IncompleteReadError, ConnectionError, wire.FrameError) as exc:
            log.warning("zigbee radio: connection lost (%s)", exc or type(exc).__name__)
            self._fail_pending(ConnectionError(f"the radio connection was lost: {exc}"))
            self.connection_lost(exc)

    def _indication(self, kind: int, payload: bytes) -> None:
        try:
            if kind == wire.RX:
                self._rx(wire.RxFrame.unpack(payload))
            elif kind == wire.JOINED:
                nwk, ieee, parent = wire.JOINED_BODY.unpack(payload)
                self.handle_join(t.NWK(nwk), t.EUI64(ieee), t.NWK(parent))
            elif kind == wire.LEFT:
                nwk, ieee = wire.LEFT_BODY.unpack(payload)
                self.handle_leave(t.NWK(nwk), t.EUI64(ieee))
            else:
                log.warning("zigbee radio: unknown indication 0x%02x: %s", kind, payload.hex())
        except (ValueError, wire.FrameError) as exc:  # struct.error is a ValueError
            log.warning("zigbee radio: bad indication 0x%02x (%s): %s", kind, exc, payload.hex())

    def _rx(self, rx: wire.RxFrame) -> None:
        self.packet_received(
            t.ZigbeePacket(
                src=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(rx.src_nwk)),
                src_ep=t.uint8_t(rx.src_ep),
                dst=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=self.state.node_info.nwk),
                dst_ep=t.uint8_t(rx.dst_ep),
                tsn=t.uint8_t(rx.payload[0] if rx.payload else 0),
                profile_id=t.uint16_t(rx.profile),
                cluster_id=t.uint16_t(rx.cluster),
                data=t.SerializableBytes(rx.payload),
                lqi=t.uint8_t(rx.lqi),
                rssi=t.int8s(rx.rssi),
            )
        )

    async def _watchdog_feed(self) -> None:
        await self._request(wire.PING)

    # --- network -------------------------------------------------------------------------------

    async def load_network_info(self, *, load_devices: bool = False) -> None:
        payload = await self._request(wire.NET_INFO)
        if not payload or payload[0] == 0:
            raise zigpy.exceptions.NetworkNotFormed("the simulated radio has no network formed")
        ieee, nwk, pan, epid, channel, update_id, key, seq, counter = wire.NETWORK.unpack(
            payload[1:]
        )
        self.state.node_info = zigpy.state.NodeInfo(
            nwk=t.NWK(nwk),
            ieee=t.EUI64(ieee),
            logical_type=zdo_t.LogicalType.Coordinator,
            model="homeflex-sim radio",
            manufacturer="Homeflex",
            version=str(PROTOCOL_VERSION),
        )
        self.state.network_info = zigpy.state.NetworkInfo(
            extended_pan_id=t.ExtendedPanId(epid),
            pan_id=t.PanId(pan),
            nwk_update_id=t.uint8_t(update_id),
            nwk_manager_id=t.NWK(0x0000),
            channel=t.uint8_t(channel),
            channel_mask=t.Channels(1 << channel),  # channel n is bit n
            security_level=t.uint8_t(5),
            network_key=zigpy.state.Key(key=t.KeyData(key), tx_counter=counter, seq=seq),
            tc_link_key=zigpy.state.Key(
                key=CONF_NWK_TC_LINK_KEY_DEFAULT, partner_ieee=t.EUI64(ieee)
            ),
            source="homeflex-sim",
        )

    async def write_network_info(
        self, *, network_info: zigpy.state.NetworkInfo, node_info: zigpy.state.NodeInfo
    ) -> None:
        key = network_info.network_key
        record = wire.NETWORK.pack(
            bytes(8),
            0x0000,
            network_info.pan_id,
            network_info.extended_pan_id.serialize(),
            network_info.channel,
            network_info.nwk_update_id,
            key.key.serialize(),
            key.seq,
            key.tx_counter,
        )
        status = await self._request(wire.NET_FORM, record)
        if status != bytes([wire.OK]):
            raise zigpy.exceptions.ControllerException(
                f"the radio refused the network: {status.hex()}"
            )

    async def reset_network_info(self) -> None:
        await self._request(wire.NET_RESET)

    async def start_network(self) -> None:
        await self.load_network_info()
        await self.register_endpoints()
        # The coordinator is described locally, as an NCP library does: it answers no ZDO to itself
        info = self.state.node_info
        coordinator = self.add_device(info.ieee, info.nwk)
        coordinator.node_desc = zdo_t.NodeDescriptor(
            logical_type=zdo_t.LogicalType.Coordinator,
            complex_descriptor_available=0,
            user_descriptor_available=0,
            reserved=0,
            aps_flags=0,
            frequency_band=zdo_t.NodeDescriptor.FrequencyBand.Freq2400MHz,
            mac_capability_flags=zdo_t.MACCapabilityFlags.AlternatePanCoordinator
            | zdo_t.MACCapabilityFlags.FullFunctionDevice
            | zdo_t.MACCapabilityFlags.MainsPowered
            | zdo_t.MACCapabilityFlags.RxOnWhenIdle
            | zdo_t.MACCapabilityFlags.AllocateAddress,
            manufacturer_code=0x0000,
            maximum_buffer_size=82,
            maximum_incoming_transfer_size=128,
            server_mask=0x2C41,
            maximum_outgoing_transfer_size=128,
            descriptor_capability_field=zdo_t.NodeDescriptor.DescriptorCapability.NONE,
        )
        for desc in self._endpoints:
            ep = coordinator.add_endpoint(desc.endpoint)
            ep.profile_id = desc.profile
            # zigpy annotates device_type as ZHA's enum; other profiles keep the raw id
            ep.device_type = cast(Any, desc.device_type)
            for cluster_id in desc.input_clusters:
                ep.add_input_cluster(cluster_id)
            for cluster_id in desc.output_clusters:
                ep.add_output_cluster(cluster_id)
            ep.status = zigpy.endpoint.Status.ZDO_INIT
        coordinator.model = info.model
        coordinator.manufacturer = info.manufacturer

    async def add_endpoint(self, descriptor: zdo_t.SimpleDescriptor) -> None:
        # the simulated radio delivers every endpoint's frames; nothing to register on the NCP
        self._endpoints.append(descriptor)

    async def permit_ncp(self, time_s: int = 60) -> None:
        status = await self._request(wire.PERMIT, bytes([time_s]))
        if status != bytes([wire.OK]):
            name = wire.STATUS_NAMES.get(status[0] if status else -1, status.hex())
            raise zigpy.exceptions.ControllerException(f"the radio refused permit join: {name}")

    async def send_packet(self, packet: t.ZigbeePacket) -> None:
        assert packet.dst is not None
        mode, dst = packet.dst.addr_mode, packet.dst.address
        if mode == t.AddrMode.IEEE:
            assert isinstance(dst, t.EUI64)
            kind, address = wire.ADDR_IEEE, dst.serialize()
        else:
            assert dst is not None and not isinstance(dst, t.EUI64)
            kind = {
                t.AddrMode.NWK: wire.ADDR_NWK,
                t.AddrMode.Group: wire.ADDR_GROUP,
                t.AddrMode.Broadcast: wire.ADDR_BROADCAST,
            }[mode]
            address = int(dst).to_bytes(2, "little") + bytes(6)
        head = wire.TX_HEAD.pack(
            kind,
            address,
            packet.dst_ep or 0,
            packet.src_ep or 0,
            packet.profile_id,
            packet.cluster_id,
            packet.tsn,
            packet.radius,
        )
        try:
            async with self._limit_concurrency(priority=packet.priority):
                status = await self._request(wire.TX, head + packet.data.serialize())
        except (ConnectionError, TimeoutError) as exc:
            raise zigpy.exceptions.DeliveryError(
                f"the radio did not take the frame: {exc}"
            ) from exc
        if status != bytes([wire.OK]):
            code = status[0] if status else -1
            raise zigpy.exceptions.DeliveryError(
                f"not delivered to {packet.dst.address}: {wire.STATUS_NAMES.get(code, code)}",
                status=code,
            )

    # --- what the simulated radio does not do ------------------------------------------------

    async def force_remove(self, dev: ZigbeeDevice) -> None:
        raise Unsupported("force_remove; use remove(), which sends ZDO Mgmt_Leave")

    async def permit_with_link_key(
        self, node: t.EUI64, link_key: t.KeyData, time_s: int = 60
    ) -> None:
        raise Unsupported("joining with install codes (permit_with_link_key)")

    async def _network_scan(
        self, channels: t.Channels, duration_exp: int
    ) -> AsyncGenerator[t.NetworkBeacon, None]:
        raise Unsupported("network scans")
        yield  # an async generator, as in the base class

    async def _packet_capture(self, channel: int) -> AsyncGenerator[t.CapturedPacket, None]:
        raise Unsupported("packet capture")
        yield

    async def _packet_capture_change_channel(self, channel: int) -> None:
        raise Unsupported("packet capture")

    async def _subscribe_to_multicast_group(self, group_id: t.Group, endpoint_id: int) -> None:
        raise Unsupported("groups (multicast)")

    async def _unsubscribe_from_multicast_group(self, group_id: t.Group, endpoint_id: int) -> None:
        raise Unsupported("groups (multicast)")
