"""The simulated network's radio as a TI Z-Stack ZNP over TCP: Monitor-and-Test (MT) frames, as
zigpy-znp sends them to a CC2531 running Z-Stack Home 1.2, whose command definitions we reuse."""

# mypy: disable-error-code="no-untyped-call"
# (zigpy's and zigpy-znp's types have unannotated constructors)

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import zigpy.types as zt
import zigpy.zdo.types as zdo_t
import zigpy_znp.commands as c
import zigpy_znp.const as const
import zigpy_znp.types as t
from zigpy_znp.exceptions import InvalidFrame
from zigpy_znp.frames import GeneralFrame
from zigpy_znp.types.nvids import OsalNvIds

from homeflex_sim.zigbee import wire
from homeflex_sim.zigbee.devices import Outgoing, SimDevice, zdo_frame

if TYPE_CHECKING:
    from homeflex_sim.zigbee.network import ZigbeeNetwork

LOG = logging.getLogger(__name__)

SOF = 0xFE
MAX_PAYLOAD = 250  # the MT length byte allows no more
# Z-Stack Home 1.2: no AppConfig subsystem (zigpy-znp tells the versions apart by APP_CNF)
CAPABILITIES = (
    t.MTCapabilities.SYS
    | t.MTCapabilities.AF
    | t.MTCapabilities.ZDO
    | t.MTCapabilities.SAPI
    | t.MTCapabilities.UTIL
    | t.MTCapabilities.APP
)
VERSION = {"TransportRev": 2, "ProductId": 0, "MajorRel": 2, "MinorRel": 6, "MaintRel": 3}
CODE_REVISION = 20190608  # a CC2531 Z-Stack Home 1.2 build date
ADDRMGR_ENTRIES = 40  # size of the address manager table, fixed when the firmware is built
ASSOC_DEVICE_SIZE = 28  # bytes of an unaligned (8051) associated-device struct
Handler = Callable[[Any], Iterator[t.CommandBase]]


class MtFrameError(ValueError):
    """Bytes that are not an MT frame."""


def fcs(body: bytes) -> int:
    """The frame check sequence: XOR of the length, the two command bytes and the payload."""
    return functools.reduce(lambda a, b: a ^ b, body, 0)


def encode(frame: GeneralFrame) -> bytes:
    """An MT frame on the wire: SOF, length, cmd0, cmd1, payload, FCS."""
    body: bytes = frame.serialize()
    return bytes([SOF]) + body + bytes([fcs(body)])


def encode_command(command: t.CommandBase) -> bytes:
    frame: GeneralFrame = command.to_frame(align=False)
    return encode(frame)


def decode(data: bytes) -> GeneralFrame:
    """One whole MT frame (SOF to FCS) → its general frame; MtFrameError says what is wrong."""
    if len(data) < 5 or data[0] != SOF:
        raise MtFrameError(f"not an MT frame: {data.hex()}")
    length = data[1]
    if len(data) != length + 5:
        raise MtFrameError(f"MT frame of length {length} has {len(data) - 5} payload bytes")
    if fcs(data[1:-1]) != data[-1]:
        raise MtFrameError(f"MT frame FCS 0x{data[-1]:02x}, computed 0x{fcs(data[1:-1]):02x}")
    frame, _ = GeneralFrame.deserialize(data[1:-1])
    return frame


async def read_frame(reader: asyncio.StreamReader) -> GeneralFrame:
    """The next frame; bytes before a SOF (e.g. a bootloader's skip bytes) are ignored."""
    while (await reader.readexactly(1))[0] != SOF:
        pass
    length = (await reader.readexactly(1))[0]
    if length > MAX_PAYLOAD:
        raise MtFrameError(f"MT frame length {length} exceeds {MAX_PAYLOAD}")
    rest = await reader.readexactly(length + 3)
    return decode(bytes([SOF, length]) + rest)


def _nib(**fields: Any) -> bytes:
    """A Z-Stack network information base; all fields zero except those given."""
    values: dict[str, Any] = {}
    for field in t.NIB.fields:
        if field.type is t.NwkKeyDesc:
            values[field.name] = t.NwkKeyDesc(KeySeqNum=0, Key=t.KeyData(bytes(16)))
        elif field.type is zt.EUI64:
            values[field.name] = zt.EUI64(bytes(8))
        else:
            values[field.name] = field.type(0)
    values.update(fields)
    data: bytes = t.NIB(**values).serialize(align=False)
    return data


def _bytes(value: Any) -> bytes:
    """NV bytes of a zigpy(-znp) value; structs unaligned, as on the CC2531's 8051."""
    if isinstance(value, (t.CStruct, t.BaseListType)):
        data: bytes = value.serialize(align=False)
    else:
        data = value.serialize()
    return data


def factory_nvram(ieee: zt.EUI64) -> dict[int, bytes]:
    """The NV items of a freshly flashed coordinator that zigpy-znp reads before it writes."""
    key = t.NwkKeyDesc(KeySeqNum=0, Key=t.KeyData(bytes(16)))
    empty = const.EMPTY_ADDR_MGR_ENTRY_ZSTACK1
    items: dict[int, Any] = {
        OsalNvIds.EXTADDR: ieee,
        OsalNvIds.STARTUP_OPTION: t.uint8_t(0),
        OsalNvIds.LOGICAL_TYPE: t.uint8_t(t.DeviceLogicalType.Coordinator),
        OsalNvIds.NWKKEY: t.NwkActiveKeyItems(Active=key, FrameCounter=0),
        OsalNvIds.NWK_ACTIVE_KEY_INFO: key,
        OsalNvIds.NWK_ALTERN_KEY_INFO: key,
        OsalNvIds.ADDRMGR: t.AddressManagerTable([empty] * ADDRMGR_ENTRIES),
        OsalNvIds.CONCENTRATOR_ENABLE: t.Bool(False),
        OsalNvIds.CONCENTRATOR_DISCOVERY: t.uint8_t(120),
        OsalNvIds.CONCENTRATOR_RC: t.Bool(False),
        OsalNvIds.SRC_RTG_EXPIRY_TIME: t.uint8_t(255),
        OsalNvIds.NWK_CHILD_AGE_ENABLE: t.Bool(False),
        OsalNvIds.BCAST_DELIVERY_TIME: t.uint8_t(30),
        OsalNvIds.ZDO_DIRECT_CB: t.Bool(False),
    }
    nv = {int(nv_id): _bytes(value) for nv_id, value in items.items()}
    # not formed: no channel, no key
    nv[OsalNvIds.NIB] = _nib(nwkState=t.NwkState.NWK_INIT, nwkPanId=0xFFFE)
    return nv


class ZnpRadio:
    """The coordinator's ZNP on TCP: one host at a time, as on a serial port. NV items and
    registered endpoints live in memory for the run; the devices are the network's."""

    def __init__(self, network: ZigbeeNetwork, seed: int) -> None:
        self.network = network
        self.ieee = zt.EUI64(network.radio_ieee)
        self.nv = factory_nvram(self.ieee)
        self.endpoints: dict[int, Any] = {}  # endpoint → its AF.Register request
        self._rng = random.Random(f"{seed}:znp")
        self._aps_counter = 0
        self._server: asyncio.Server | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._handlers: dict[type, Handler] = {
            c.SYS.Ping.Req: self._ping,
            c.SYS.Version.Req: self._version,
            c.SYS.ResetReq.Req: self._reset,
            c.SYS.SetTxPower.Req: self._tx_power,
            c.SYS.OSALNVLength.Req: self._nv_length,
            c.SYS.OSALNVReadExt.Req: self._nv_read,
            c.SYS.OSALNVRead.Req: self._nv_read,
            c.SYS.OSALNVWriteExt.Req: self._nv_write,
            c.SYS.OSALNVWrite.Req: self._nv_write,
            c.SYS.OSALNVItemInit.Req: self._nv_init,
            c.SYS.OSALNVDelete.Req: self._nv_delete,
            c.UTIL.AssocFindDevice.Req: self._assoc_find_device,
            c.UTIL.LEDControl.Req: self._led,
            c.ZDO.StartupFromApp.Req: self._startup,
            c.ZDO.MsgCallbackRegister.Req: self._callback_register,
            c.ZDO.ExtRouteChk.Req: self._route_check,
            c.ZDO.MgmtPermitJoinReq.Req: self._permit_join,
            c.AF.Register.Req: self._register,
            c.AF.DataRequestExt.Req: self._data_request,
            c.AF.DataRequest.Req: self._data_request,
        }

    # --- the link --------------------------------------------------------------------------

    async def serve(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._connected, host, port)
        bound: int = self._server.sockets[0].getsockname()[1]
        LOG.info("zigbee ZNP radio listening on %s:%d", host, bound)
        return bound

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()  # the handler then reads end-of-stream and returns
            self._writer = None
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._writer is not None:
            self._writer.close()
        self._writer = writer
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            while True:
                try:
                    frame = await read_frame(reader)
                except MtFrameError as exc:  # as on a serial line: drop it, find the next SOF
                    LOG.warning("zigbee ZNP radio: dropped a bad frame from the host: %s", exc)
                    continue
                try:
                    self._handle(frame)
                except Exception:  # a bug here must not take the radio down
                    LOG.exception("zigbee ZNP radio: failed to handle %s", frame)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            if self._writer is writer:
                self._writer = None
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _handle(self, frame: GeneralFrame) -> None:
        request_cls = c.COMMANDS_BY_ID.get(frame.header)
        handler = self._handlers.get(request_cls) if request_cls is not None else None
        if request_cls is None or handler is None:
            LOG.warning("zigbee ZNP radio: command not recognized: %s", frame)
            self._send(
                c.RPCError.CommandNotRecognized.Rsp(
                    ErrorCode=c.rpc_error.ErrorCode.InvalidCommandId, RequestHeader=frame.header
                )
            )
            return
        try:
            request = request_cls.from_frame(frame, align=False)
        except ValueError as exc:
            LOG.warning("zigbee ZNP radio: malformed %s (%s): %s", request_cls, exc, frame)
            self._send(
                c.RPCError.CommandNotRecognized.Rsp(
                    ErrorCode=c.rpc_error.ErrorCode.InvalidParameter, RequestHeader=frame.header
                )
            )
            return
        # A handler yields its replies in order; code after a yield runs once that reply is sent.
        for reply in handler(request):
            self._send(reply)

    def _send(self, command: t.CommandBase) -> None:
        if self._writer is None or self._writer.is_closing():
            return
        try:
            data = encode_command(command)
        except InvalidFrame as exc:  # e.g. a frame longer than MT's 250 bytes
            LOG.warning("zigbee ZNP radio: cannot send %s: %s", command, exc)
            return
        self._writer.write(data)

    # --- SYS, UTIL -------------------------------------------------------------------------

    def _ping(self, req: Any) -> Iterator[t.CommandBase]:
        yield c.SYS.Ping.Rsp(Capabilities=CAPABILITIES)

    def _version(self, req: Any) -> Iterator[t.CommandBase]:
        yield c.SYS.Version.Rsp(**VERSION, CodeRevision=CODE_REVISION)

    def _reset(self, req: Any) -> Iterator[t.CommandBase]:
        """A soft reset: the stack stops (endpoints are gone); the startup options in NV may
        clear the network state and configuration, as Z-Stack does on boot."""
        options = t.StartupOptions(self.nv.get(OsalNvIds.STARTUP_OPTION, b"\0")[0])
        if options & (t.StartupOptions.ClearState | t.StartupOptions.ClearConfig):
            self.nv = factory_nvram(self.ieee)
            self.network.leave()
        self.nv.setdefault(OsalNvIds.EXTADDR, self.ieee.serialize())  # the hardware address
        self.endpoints.clear()
        yield c.SYS.ResetInd.Callback(Reason=t.ResetReason.External, **VERSION)

    def _tx_power(self, req: Any) -> Iterator[t.CommandBase]:
        yield c.SYS.SetTxPower.Rsp(StatusOrPower=req.TXPower)

    def _nv_length(self, req: Any) -> Iterator[t.CommandBase]:
        yield c.SYS.OSALNVLength.Rsp(ItemLen=len(self.nv.get(req.Id, b"")))

    def _nv_read(self, req: Any) -> Iterator[t.CommandBase]:
        rsp = req.Rsp  # OSALNVRead and OSALNVReadExt answer alike
        data = self.nv.get(req.Id)
        if data is None or req.Offset > len(data):
            yield rsp(Status=t.Status.INVALID_PARAMETER, Value=t.ShortBytes(b""))
        else:
            chunk = data[req.Offset : req.Offset + 244]  # what fits one response frame
            yield rsp(Status=t.Status.SUCCESS, Value=t.ShortBytes(chunk))

    def _nv_write(self, req: Any) -> Iterator[t.CommandBase]:
        rsp = req.Rsp
        data = self.nv.get(req.Id)
        value = bytes(req.Value)
        if data is None:
            yield rsp(Status=t.Status.NV_ITEM_UNINIT)
        elif req.Offset + len(value) > len(data):
            yield rsp(Status=t.Status.NV_BAD_ITEM_LEN)
        else:
            self.nv[req.Id] = data[: req.Offset] + value + data[req.Offset + len(value) :]
            yield rsp(Status=t.Status.SUCCESS)

    def _nv_init(self, req: Any) -> Iterator[t.CommandBase]:
        if req.Id in self.nv:
            yield c.SYS.OSALNVItemInit.Rsp(Status=t.Status.SUCCESS)  # it already existed
            return
        self.nv[req.Id] = bytes(req.Value)[: req.ItemLen].ljust(req.ItemLen, b"\0")
        yield c.SYS.OSALNVItemInit.Rsp(Status=t.Status.NV_ITEM_UNINIT)  # created

    def _nv_delete(self, req: Any) -> Iterator[t.CommandBase]:
        data = self.nv.get(req.Id)
        if data is None:
            yield c.SYS.OSALNVDelete.Rsp(Status=t.Status.NV_ITEM_UNINIT)
        elif len(data) != req.ItemLen:
            yield c.SYS.OSALNVDelete.Rsp(Status=t.Status.NV_BAD_ITEM_LEN)
        else:
            del self.nv[req.Id]
            yield c.SYS.OSALNVDelete.Rsp(Status=t.Status.SUCCESS)

    def _assoc_find_device(self, req: Any) -> Iterator[t.CommandBase]:
        # zigpy-znp learns the struct alignment from this struct's size; no child is found
        yield c.UTIL.AssocFindDevice.Rsp(Device=t.Bytes(b"\xff" * ASSOC_DEVICE_SIZE))

    def _led(self, req: Any) -> Iterator[t.CommandBase]:
        yield c.UTIL.LEDControl.Rsp(Status=t.Status.SUCCESS)

    # --- the network ------------------------------------------------------------------------

    def _nib(self) -> Any:
        nib, _ = t.NIB.deserialize(self.nv[OsalNvIds.NIB], align=False)
        return nib

    def _startup(self, req: Any) -> Iterator[t.CommandBase]:
        """Start as coordinator: restore the network in NV, or form one from the configured PAN
        id, extended PAN id, key and first channel."""
        nib = self._nib()
        formed = nib.nwkLogicalChannel != 0 and nib.nwkKeyLoaded
        if not formed:
            nib = self._form()
        state = c.zdo.StartupState
        yield c.ZDO.StartupFromApp.Rsp(
            State=state.RestoredNetworkState if formed else state.NewNetworkState
        )
        yield c.ZDO.StateChangeInd.Callback(State=t.DeviceState.StartingAsCoordinator)
        # the active key is the one the host wrote; NWKKEY holds its frame counter
        key, _ = t.NwkKeyDesc.deserialize(self.nv[OsalNvIds.NWK_ACTIVE_KEY_INFO], align=False)
        counter, _ = t.NwkActiveKeyItems.deserialize(self.nv[OsalNvIds.NWKKEY], align=False)
        self.network.form(
            wire.Network(
                ieee=self.ieee.serialize(),
                nwk=0x0000,
                pan_id=nib.nwkPanId,
                extended_pan_id=nib.extendedPANID.serialize(),
                channel=nib.nwkLogicalChannel,
                nwk_update_id=nib.nwkUpdateId,
                network_key=key.Key.serialize(),
                key_seq=key.KeySeqNum,
                key_tx_counter=counter.FrameCounter,
            )
        )
        yield c.ZDO.StateChangeInd.Callback(State=t.DeviceState.StartedAsCoordinator)

    def _form(self) -> Any:
        def item(nv_id: int, default: bytes) -> bytes:
            return self.nv.get(nv_id, default)

        pan_id = int.from_bytes(item(OsalNvIds.PANID, b"\xff\xff"), "little")
        if pan_id == 0xFFFF:
            pan_id = self._rng.randrange(0x0001, 0xFFF7)
        ext_pan_id = item(OsalNvIds.APS_USE_EXT_PANID, bytes(8))
        if ext_pan_id == bytes(8):
            ext_pan_id = self.ieee.serialize()
        key = item(OsalNvIds.PRECFGKEY, b"")
        if len(key) != 16:
            key = bytes(self._rng.randrange(256) for _ in range(16))
        channels = zt.Channels(int.from_bytes(item(OsalNvIds.CHANLIST, b"\0\x08\0\0"), "little"))
        channel = min([ch for ch in range(11, 27) if channels & (1 << ch)] or [11])
        nib = self._nib().replace(
            nwkDevAddress=0x0000,
            nwkLogicalChannel=channel,
            nwkCoordAddress=0x0000,
            nwkPanId=pan_id,
            nwkState=t.NwkState.NWK_ROUTER,
            channelList=channels,
            extendedPANID=zt.EUI64(ext_pan_id),
            nwkKeyLoaded=t.Bool(True),
            SecurityLevel=5,
            nwkManagerAddr=0x0000,
        )
        desc = t.NwkKeyDesc(KeySeqNum=0, Key=t.KeyData(key))
        self.nv[OsalNvIds.NIB] = _bytes(nib)
        self.nv[OsalNvIds.NWKKEY] = _bytes(t.NwkActiveKeyItems(Active=desc, FrameCounter=0))
        self.nv[OsalNvIds.NWK_ACTIVE_KEY_INFO] = _bytes(desc)
        return nib

    def _callback_register(self, req: Any) -> Iterator[t.CommandBase]:
        yield c.ZDO.MsgCallbackRegister.Rsp(Status=t.Status.SUCCESS)

    def _register(self, req: Any) -> Iterator[t.CommandBase]:
        if req.Endpoint in self.endpoints:
            yield c.AF.Register.Rsp(Status=t.Status.APS_DUPLICATE_ENTRY)
            return
        self.endpoints[req.Endpoint] = req
        yield c.AF.Register.Rsp(Status=t.Status.SUCCESS)

    def _route_check(self, req: Any) -> Iterator[t.CommandBase]:
        tx = wire.Tx(
            wire.ADDR_NWK, int(req.Dst).to_bytes(2, "little") + bytes(6), 0, 0, 0, 0, 0, 0, b""
        )
        ok = self.network.tx_status(tx) == wire.OK
        status = c.zdo.RoutingStatus.SUCCESS if ok else c.zdo.RoutingStatus.NO_ENTRY
        yield c.ZDO.ExtRouteChk.Rsp(Status=status)

    def _permit_join(self, req: Any) -> Iterator[t.CommandBase]:
        if self.network.network is None:
            yield c.ZDO.MgmtPermitJoinReq.Rsp(Status=t.Status.FAILURE)
            return
        yield c.ZDO.MgmtPermitJoinReq.Rsp(Status=t.Status.SUCCESS)
        to_device = req.AddrMode == t.AddrMode.NWK and req.Dst != 0x0000
        yield c.ZDO.MgmtPermitJoinRsp.Callback(
            Src=req.Dst if to_device else 0x0000, Status=zdo_t.Status.SUCCESS
        )
        yield c.ZDO.PermitJoinInd.Callback(Duration=req.Duration)
        if req.Duration > 0:
            self.network.join_waiting()

    def _data_request(self, req: Any) -> Iterator[t.CommandBase]:
        """AF data request: SRSP, then (not for ZDO) the transmit confirmation, then the frame
        reaches the devices, whose answers follow."""
        rsp = req.Rsp
        tx = self._tx(req)
        if self.network.network is None:
            yield rsp(Status=t.Status.NWK_NOT_PERMITTED)
            return
        yield rsp(Status=t.Status.SUCCESS)
        if tx.dst_ep != 0:
            delivered = self.network.tx_status(tx) == wire.OK
            yield c.AF.DataConfirm.Callback(
                Status=t.Status.SUCCESS if delivered else t.Status.MAC_NO_ACK,
                Endpoint=tx.src_ep,
                TSN=tx.tsn,
            )
        elif self._to_coordinator(tx):
            yield from self._coordinator_zdo(tx)
        self.network.transmit(tx)

    def _tx(self, req: Any) -> wire.Tx:
        if isinstance(req, c.AF.DataRequestExt.Req):
            mode, address = int(req.DstAddrModeAddress.mode), req.DstAddrModeAddress.address
        else:
            mode, address = wire.ADDR_NWK, req.DstAddr
        if mode == wire.ADDR_IEEE:
            raw = zt.EUI64(address).serialize()
        else:
            raw = int(address).to_bytes(2, "little") + bytes(6)
        # AF requests carry no profile: Z-Stack sends with the source endpoint's registered one
        source = self.endpoints.get(req.SrcEndpoint)
        profile = source.ProfileId if source is not None and req.DstEndpoint != 0 else 0
        return wire.Tx(
            mode,
            raw,
            req.DstEndpoint,
            req.SrcEndpoint,
            profile,
            req.ClusterId,
            req.TSN,
            req.Radius,
            bytes(req.Data),
        )

    @staticmethod
    def _to_coordinator(tx: wire.Tx) -> bool:
        if tx.addr_mode == wire.ADDR_BROADCAST:
            return tx.nwk in (0xFFFF, 0xFFFD, 0xFFFC)  # all, rx-on-when-idle, routers
        return tx.addr_mode == wire.ADDR_NWK and tx.nwk == 0x0000

    def _coordinator_zdo(self, tx: wire.Tx) -> Iterator[t.CommandBase]:
        """Z-Stack answers ZDO requests to the coordinator itself (descriptors, addresses)."""
        if not tx.payload or tx.cluster not in zdo_t.CLUSTERS:
            return
        cmd = zdo_t.ZDOCmd
        _names, schema = zdo_t.CLUSTERS[cmd(tx.cluster)]
        try:
            args, _ = zt.deserialize(tx.payload[1:], schema)
        except (ValueError, KeyError):
            return
        ok = zdo_t.Status.SUCCESS
        rsp: tuple[Any, ...] | None = None
        if tx.cluster == cmd.Node_Desc_req and args[0] == 0x0000:
            rsp = (cmd.Node_Desc_rsp, ok, 0x0000, self._node_descriptor())
        elif tx.cluster == cmd.Active_EP_req and args[0] == 0x0000:
            rsp = (cmd.Active_EP_rsp, ok, 0x0000, sorted(self.endpoints))
        elif tx.cluster == cmd.Simple_Desc_req and args[0] == 0x0000:
            reg = self.endpoints.get(args[1])
            if reg is None:
                rsp = (cmd.Simple_Desc_rsp, zdo_t.Status.NOT_ACTIVE, 0x0000, None)
            else:
                desc = zdo_t.SizePrefixedSimpleDescriptor(
                    endpoint=reg.Endpoint,
                    profile=reg.ProfileId,
                    device_type=reg.DeviceId,
                    device_version=reg.DeviceVersion,
                    input_clusters=list(reg.InputClusters),
                    output_clusters=list(reg.OutputClusters),
                )
                rsp = (cmd.Simple_Desc_rsp, ok, 0x0000, desc)
        elif tx.cluster == cmd.IEEE_addr_req and args[0] == 0x0000:
            rsp = (cmd.IEEE_addr_rsp, ok, self.ieee, 0x0000, None, None, None)
        elif tx.cluster == cmd.NWK_addr_req and args[0] == self.ieee:
            rsp = (cmd.NWK_addr_rsp, ok, self.ieee, 0x0000, None, None, None)
        if rsp is not None:
            frame = zdo_frame(tx.payload[0], rsp[0], *rsp[1:])
            yield self._zdo_callback(0x0000, rsp[0], frame)

    @staticmethod
    def _node_descriptor() -> zdo_t.NodeDescriptor:
        flags = zdo_t.MACCapabilityFlags
        return zdo_t.NodeDescriptor(
            logical_type=zdo_t.LogicalType.Coordinator,
            complex_descriptor_available=0,
            user_descriptor_available=0,
            reserved=0,
            aps_flags=0,
            frequency_band=zdo_t.NodeDescriptor.FrequencyBand.Freq2400MHz,
            mac_capability_flags=(
                flags.AlternatePanCoordinator
                | flags.FullFunctionDevice
                | flags.MainsPowered
                | flags.RxOnWhenIdle
                | flags.AllocateAddress
            ),
            manufacturer_code=0x0000,
            maximum_buffer_size=80,
            maximum_incoming_transfer_size=160,
            server_mask=0x0001,
            maximum_outgoing_transfer_size=160,
            descriptor_capability_field=zdo_t.NodeDescriptor.DescriptorCapability.NONE,
        )

    @staticmethod
    def _zdo_callback(src: int, cluster: int, frame: bytes) -> t.CommandBase:
        return c.ZDO.MsgCbIncoming.Callback(
            Src=src,
            IsBroadcast=t.Bool(False),
            ClusterId=cluster,
            SecurityUse=0,
            TSN=frame[0],
            MacDst=0x0000,
            Data=t.Bytes(frame[1:]),
        )

    # --- what the devices send (the network calls these) ------------------------------------

    def received(self, dev: SimDevice, out: Outgoing) -> None:
        if out.profile == 0 and out.src_ep == 0:  # ZDO: Z-Stack hands it over as a callback
            self._send(self._zdo_callback(dev.nwk, out.cluster, out.payload))
            return
        self._aps_counter = (self._aps_counter + 1) % 256
        self._send(
            c.AF.IncomingMsg.Callback(
                GroupId=0x0000,
                ClusterId=out.cluster,
                SrcAddr=dev.nwk,
                SrcEndpoint=out.src_ep,
                DstEndpoint=out.dst_ep,
                WasBroadcast=t.Bool(False),
                LQI=dev.lqi,
                SecurityUse=t.Bool(False),
                TimeStamp=int(self.network.now) & 0xFFFFFFFF,
                TSN=self._aps_counter,
                Data=t.ShortBytes(out.payload),
                MacSrcAddr=dev.nwk,
                MsgResultRadius=0,
            )
        )

    def joined(self, dev: SimDevice) -> None:
        """A trust-centre join, then the device announces itself, as real devices do."""
        self._send(c.ZDO.TCDevInd.Callback(SrcNwk=dev.nwk, SrcIEEE=dev.ieee, ParentNwk=0x0000))
        self.received(dev, dev.announce())

    def left(self, dev: SimDevice) -> None:
        self._send(
            c.ZDO.LeaveInd.Callback(
                NWK=dev.nwk,
                IEEE=dev.ieee,
                Request=t.Bool(False),
                Remove=t.Bool(False),
                Rejoin=t.Bool(False),
            )
        )
