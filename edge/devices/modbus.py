"""Modbus TCP driver: one connection per endpoint, template-driven reads, confirmed writes.
With `tls` a link speaks Modbus/TCP Security (see modbus_tls.py).

Many inverters accept a single Modbus TCP client and RS-485 gateways share one bus between unit
ids, so every device at the same host:port goes through one `ModbusLink`, which serialises the
requests, pauses between them, and reconnects with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ExceptionResponse, ModbusPDU

from homeflex.clock import Clock
from homeflex.edge.config import ModbusDeviceConfig
from homeflex.edge.devices.capabilities import (
    CommandNotConfirmed,
    DeviceError,
    Quantity,
    Reading,
)
from homeflex.edge.devices.modbus_tls import ModbusTls
from homeflex.edge.devices.templates import Block, ModbusTemplate, Register

log = logging.getLogger(__name__)

EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    5: "acknowledge",
    6: "device busy",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}

CLOCK_REGISTER = "clock_s"


class ModbusLink:
    """The one TCP connection to a Modbus endpoint (a device or an RS-485 gateway)."""

    def __init__(
        self,
        host: str,
        port: int,
        timeout_s: float,
        pause_s: float = 0.0,
        tls: ModbusTls | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.pause_s = pause_s
        self.tls = tls
        self._client = (
            tls.client(host, port, timeout_s)
            if tls is not None
            else AsyncModbusTcpClient(
                host, port=port, timeout=timeout_s, retries=0, reconnect_delay=0
            )
        )
        self._lock = asyncio.Lock()
        self._last_request = 0.0
        self._failures = 0
        self._retry_at = 0.0

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    async def _ensure_connected(self) -> None:
        if self._client.connected:
            return
        now = time.monotonic()
        if now < self._retry_at:
            wait = f"next attempt in {self._retry_at - now:.1f} s"
            if self.tls is not None and self.tls.failure is not None:  # keep saying why
                raise DeviceError(self._tls_message(f"attempt {self._failures}, {wait}"))
            raise DeviceError(f"{self.where}: not connected; {wait}")
        if not await self._client.connect():
            self._failures += 1
            # Back off 0.5 s, 1 s, 2 s … up to 30 s of real time: a device that is down or busy
            # with another client should not be hammered.
            self._retry_at = now + min(30.0, 0.5 * 2 ** (self._failures - 1))
            if self.tls is not None and self.tls.failure is not None:
                raise DeviceError(self._tls_message(f"attempt {self._failures}"))
            raise DeviceError(
                f"{self.where}: cannot connect (attempt {self._failures}); "
                "check the address, and that no other client holds the device"
            )
        self._failures = 0

    async def read(self, unit: int, table: str, address: int, count: int) -> list[int]:
        what = f"reading {table} {address}+{count}"
        read = (
            self._client.read_input_registers
            if table == "input"
            else self._client.read_holding_registers
        )
        rr = await self._request(unit, what, lambda: read(address, count=count, device_id=unit))
        if len(rr.registers) != count:
            raise DeviceError(
                f"{self.where} unit {unit}: asked {count} registers at {address}, "
                f"got {len(rr.registers)}"
            )
        return list(rr.registers)

    async def write(self, unit: int, address: int, words: Sequence[int]) -> None:
        await self._request(
            unit,
            f"writing {address}",
            lambda: self._client.write_registers(address, list(words), device_id=unit),
        )

    async def _request(
        self, unit: int, what: str, call: Callable[[], Awaitable[ModbusPDU]]
    ) -> ModbusPDU:
        """One request at a time on the link; a device's refusal or silence becomes a
        DeviceError saying which unit, which registers and why."""
        async with self._lock:
            try:
                await self._ensure_connected()
                await self._pause()
                rr = await call()
            except ModbusException as exc:
                self._drop()
                if self.tls is not None and self.tls.failure is not None:
                    raise DeviceError(self._tls_message(f"unit {unit}, {what}")) from None
                raise DeviceError(f"{self.where} unit {unit}: no answer {what} ({exc})") from None
            finally:
                self._last_request = time.monotonic()
        if isinstance(rr, ExceptionResponse) or rr.isError():
            code = getattr(rr, "exception_code", 0)
            raise DeviceError(
                f"{self.where} unit {unit}: exception {code} "
                f"({EXCEPTION_NAMES.get(code, 'unknown')}) {what}"
            )
        return rr

    def _tls_message(self, when: str) -> str:
        assert self.tls is not None and self.tls.failure is not None
        devices = ", ".join(self.tls.devices) or "?"
        return f"{devices} at {self.where}: TLS ({when}): {self.tls.failure.reason}"

    async def _pause(self) -> None:
        wait = self._last_request + self.pause_s - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    def _drop(self) -> None:
        # After a timeout the stream may still deliver the late answer; only a new connection
        # guarantees that the next answer belongs to the next request.
        self._client.close()

    def close(self) -> None:
        self._client.close()


class ModbusDevice:
    """A device described by a template, reached through a link. Implements the capability
    protocols its template declares (see capabilities.py)."""

    def __init__(
        self, cfg: ModbusDeviceConfig, template: ModbusTemplate, link: ModbusLink, clock: Clock
    ) -> None:
        self.id = cfg.id
        self.cfg = cfg
        self.template = template
        self.link = link
        self.clock = clock
        self._blocks = template.blocks()
        self.problems: list[str] = []  # bad values of the last poll, for the status view

    def __repr__(self) -> str:
        where = f"{self.link.where} unit {self.cfg.unit}"
        return f"ModbusDevice({self.id}, {self.template.name} at {where})"

    async def poll(self) -> list[Reading]:
        readings: list[Reading] = []
        self.problems = []
        for block in self._blocks:
            words = await self.link.read(self.cfg.unit, block.table, block.address, block.count)
            readings.extend(self._decode(block, words))
        return readings

    def _decode(self, block: Block, words: list[int]) -> list[Reading]:
        values: dict[str, float] = {}
        for reg in block.registers:
            offset = reg.address - block.address
            raw = words[offset : offset + reg.words]
            try:
                values[reg.name] = reg.decode(raw)
            except ValueError as exc:
                hexwords = " ".join(f"{w:04x}" for w in raw)
                problem = (
                    f"{self.id}: register {reg.name} ({reg.table} {reg.address}, raw {hexwords}): "
                    f"{exc}; value ignored"
                )
                log.warning(problem)
                self.problems.append(problem)
        # Values are stamped with the device's own clock when it has one, read in the same
        # request; latched values (a meter's interval registers) with the instant they hold.
        now = values.get(CLOCK_REGISTER, self.clock.now())
        timestamps = {CLOCK_REGISTER} | {r.timestamp for r in block.registers if r.timestamp}
        out = []
        for reg in block.registers:
            if reg.name not in values or reg.name in timestamps:
                continue
            try:
                quantity = Quantity(reg.quantity or reg.name)
            except ValueError:
                continue  # a register the template reads for its own reasons (ratings, limits)
            ts = now
            if reg.timestamp is not None:
                if not values.get(reg.timestamp):
                    continue  # nothing latched yet (or its instant was unreadable)
                ts = values[reg.timestamp]
            out.append(Reading(self.id, quantity, ts, values[reg.name]))
        # oldest first, so a latched counter reaches the store before the live one
        return sorted(out, key=lambda r: r.ts)

    async def read_register(self, name: str) -> float:
        reg = self.template.register(name)
        words = await self.link.read(self.cfg.unit, reg.table, reg.address, reg.words)
        try:
            return reg.decode(words)
        except ValueError as exc:
            raise DeviceError(f"{self.id}: register {name}: {exc}") from None

    async def write_confirmed(self, name: str, value: float) -> None:
        """Write a setpoint register and read it back; the device may round, never change it."""
        reg = self._writable(name)
        try:
            words = reg.encode(value)
        except ValueError as exc:
            raise DeviceError(f"{self.id}: setpoint {name}: {exc}") from None
        await self.link.write(self.cfg.unit, reg.address, words)
        back = await self.read_register(name)
        if abs(back - value) > abs(reg.scale) / 2 + 1e-9:
            raise CommandNotConfirmed(
                f"{self.id}: wrote {name} = {value:g} {reg.unit}, read back {back:g} {reg.unit}"
            )

    def _writable(self, name: str) -> Register:
        try:
            reg = self.template.register(name)
        except KeyError:
            raise DeviceError(
                f"{self.id}: template {self.template.name} has no setpoint {name!r}"
            ) from None
        if not reg.writable:
            raise DeviceError(f"{self.id}: register {name} is not writable")
        return reg

    # Capabilities: each is one named setpoint register of the template.
    async def set_power_limit(self, percent: float) -> None:
        await self.write_confirmed(Quantity.POWER_LIMIT_PCT, percent)

    async def set_power(self, watts: float) -> None:
        await self.write_confirmed(Quantity.SETPOINT_W, watts)

    async def set_sg_ready(self, mode: int) -> None:
        await self.write_confirmed(Quantity.SG_READY_MODE, mode)

    async def set_current(self, amps: float) -> None:
        await self.write_confirmed(Quantity.SETPOINT_A, amps)

    async def close(self) -> None:
        """Nothing of its own to release: the link is shared and closed by its owner."""
