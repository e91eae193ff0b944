"""Modbus TCP servers (pymodbus) in front of register devices: several units may share a port,
like devices behind an RS-485 gateway. Faults are applied per request and per connection here.
A port may serve Modbus/TCP Security instead (the same MBAP frames inside TLS)."""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any, cast

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.pdu import ExceptionResponse
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.transport import CommParams, CommType

from homeflex_sim.register_device import RegisterDevice

log = logging.getLogger(__name__)

# Function code → register table (3, 6, 16, 23 address holding registers; 4 input registers).
_TABLE = {3: "holding", 4: "input", 6: "holding", 16: "holding", 23: "holding"}


class _Units:
    """The datastore pymodbus's request PDUs call: maps unit ids to register devices."""

    def __init__(self, devices: dict[int, RegisterDevice]) -> None:
        self.devices = devices

    def device_ids(self) -> list[int]:
        return list(self.devices)

    def _device(self, unit: int) -> RegisterDevice:
        if unit not in self.devices:
            raise NoSuchIdException(f"no unit {unit}")
        return self.devices[unit]

    async def async_getValues(
        self, unit: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | ExcCodes:
        table = _TABLE.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        result = self._device(unit).read(table, address, count)
        return result if isinstance(result, list) else ExcCodes(result)

    async def async_setValues(
        self, unit: int, func_code: int, address: int, values: list[int]
    ) -> ExcCodes | None:
        if _TABLE.get(func_code) != "holding":
            return ExcCodes.ILLEGAL_FUNCTION
        device = self._device(unit)
        if device.fault is not None and device.fault.kind == "ignore_writes":
            return None  # acknowledged, never applied: only reading back shows it
        code = device.write(address, [int(v) for v in values])
        return None if code is None else ExcCodes(code)


class _Connection(ServerRequestHandler):
    """One client connection; applies the addressed device's fault before answering."""

    server: DeviceServer

    def callback_connected(self) -> None:
        super().callback_connected()
        others = len(self.server.active_connections) - 1
        if others > 0 and self.server.single_client():
            log.info("port %s: refusing a second client (single_client)", self.server.port)
            self.close()

    async def handle_request(self) -> None:
        pdu = self.last_pdu
        if not pdu:
            return
        device = self.server.units.devices.get(pdu.dev_id)
        fault = device.fault if device else None
        if fault is None:
            await super().handle_request()  # type: ignore[no-untyped-call]
        elif fault.kind == "timeout":
            return
        elif fault.kind == "drop":
            self.close()
        elif fault.kind == "exception":
            response = ExceptionResponse(pdu.function_code, fault.code)
            response.transaction_id = pdu.transaction_id
            response.dev_id = pdu.dev_id
            self.server_send(response, self.last_addr)  # type: ignore[no-untyped-call]
        else:
            # nan, out_of_range, spike, ignore_writes, single_client: answered normally; the
            # device's words (RegisterDevice) and `_Units` show the fault. A spike clears itself
            # in RegisterDevice.read once one request has read the power registers.
            await super().handle_request()  # type: ignore[no-untyped-call]


class DeviceServer(ModbusTcpServer):
    """One listening port and the units behind it. An unknown unit gets exception 0x0B.
    With `sslctx` the port speaks Modbus/TCP Security; the context decides whom it admits."""

    def __init__(
        self,
        host: str,
        port: int,
        devices: list[RegisterDevice],
        sslctx: ssl.SSLContext | None = None,
    ) -> None:
        framer = FramerType.SOCKET
        if sslctx is not None:
            # What pymodbus's ModbusTlsServer does: ModbusTcpServer listens with `tls_setup`
            # when it is set. Subclassing ModbusTlsServer instead would fork this class.
            self.tls_setup = CommParams(
                comm_type=CommType.TLS,
                comm_name="server_listener",
                reconnect_delay=0.0,
                reconnect_delay_max=0.0,
                timeout_connect=0.0,
                sslctx=sslctx,
            )
            framer = FramerType.TLS
        self.tls = sslctx is not None
        # The server's own datastore stays empty: requests are answered by `_Units` below.
        super().__init__([], framer=framer, address=(host, port))
        self.units = _Units({d.unit: d for d in devices})
        self.context = self.units  # type: ignore[assignment]  # duck-typed datastore
        self.port = port

    def callback_new_connection(self) -> Any:
        return _Connection(  # type: ignore[no-untyped-call]
            self, self.trace_packet, self.trace_pdu, self.trace_connect
        )

    def single_client(self) -> bool:
        return any(d.fault and d.fault.kind == "single_client" for d in self.units.devices.values())

    async def start(self) -> int:
        """Listen; returns the port (the one picked when asked for port 0)."""
        try:
            await self.serve_forever(background=True)
        except RuntimeError:
            ids = ", ".join(d.id for d in self.units.devices.values())
            raise OSError(f"devices {ids}: cannot listen on port {self.port} (in use?)") from None
        listener = cast(asyncio.Server, self.transport)
        self.port = int(listener.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        await self.shutdown()  # type: ignore[no-untyped-call]
