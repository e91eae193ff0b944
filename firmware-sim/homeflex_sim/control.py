"""The control channel: JSON lines over TCP on loopback, one reply line per request.

Requests: {"cmd":"fault","device":ID,"fault":NAME[,"code":N,…]}, {"cmd":"clear","device":ID},
{"cmd":"state"}, {"cmd":"stop"}. Replies: {"ok":true,…} or {"ok":false,"error":"…"}.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from homeflex_sim.faults import Fault
from homeflex_sim.home import Home

log = logging.getLogger(__name__)


class Control:
    """Carries out control requests on a running home."""

    def __init__(self, home: Home, stop: Callable[[], None], info: dict[str, Any]) -> None:
        self.home = home
        self.stop = stop
        self.info = info  # clock and endpoints, included in `state`

    def handle(self, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict):
            return {"ok": False, "error": "a request is a JSON object with a `cmd`"}
        cmd = request.get("cmd")
        try:
            if cmd == "fault":
                self._fault(request)
                return {"ok": True}
            if cmd == "clear":
                self._fault({**request, "fault": "clear"})
                return {"ok": True}
            if cmd == "state":
                return {"ok": True, **self.info, **self.home.state()}
            if cmd == "stop":
                self.stop()
                return {"ok": True}
        except (KeyError, ValueError, TypeError) as exc:
            return {"ok": False, "error": str(exc).strip("'\"")}
        return {"ok": False, "error": f"unknown cmd {cmd!r}; use fault, clear, state or stop"}

    def _fault(self, request: dict[str, Any]) -> None:
        device_id = request.get("device")
        fault = request.get("fault")
        if not isinstance(device_id, str) or not isinstance(fault, str):
            raise ValueError("fault needs `device` and `fault` strings")
        device = self.home.devices.get(device_id)
        if device is not None:
            code = request.get("code", 4)
            if not isinstance(code, int):
                raise ValueError(f"code must be an integer, got {code!r}")
            device.set_fault(None if fault == "clear" else Fault(fault, code))
        elif self.home.zigbee is not None:
            args = {k: v for k, v in request.items() if k not in ("cmd", "device", "fault")}
            self.home.zigbee.apply_fault(device_id, fault, args)
        else:
            known = ", ".join(self.home.devices)
            raise KeyError(f"no device {device_id!r}; devices: {known}")
        log.info("device %s: fault %s", device_id, fault)


class ControlServer:
    """Listens for control sessions; `close()` also ends the open sessions."""

    def __init__(self, control: Control) -> None:
        self.control = control
        self.server: asyncio.Server | None = None
        self._sessions: set[asyncio.StreamWriter] = set()

    async def start(self, host: str, port: int) -> int:
        self.server = await asyncio.start_server(self._session, host, port)
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for writer in list(self._sessions):
            writer.close()
        if self.server is not None:
            await self.server.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._sessions.add(writer)
        try:
            while line := await reader.readline():
                try:
                    reply = self.control.handle(json.loads(line))
                except json.JSONDecodeError as exc:
                    reply = {"ok": False, "error": f"not JSON: {exc}"}
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self._sessions.discard(writer)
            writer.close()


async def request(host: str, port: int, message: dict[str, Any]) -> dict[str, Any]:
    """Send one request to a running simulator and return its reply."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(json.dumps(message).encode() + b"\n")
        await writer.drain()
        reply: dict[str, Any] = json.loads(await reader.readline())
        return reply
    finally:
        writer.close()
