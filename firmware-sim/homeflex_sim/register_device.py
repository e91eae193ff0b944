"""A Modbus device: a template's registers bound by name to one physics object, with the words a
client reads, refreshed for all registers at once after each physics step."""

from __future__ import annotations

import logging
import math
import re
from typing import Any

from homeflex_sim.faults import SPIKE_W, Fault
from homeflex_sim.templates import Register, Template

log = logging.getLogger(__name__)

ILLEGAL_ADDRESS = 0x02
ILLEGAL_VALUE = 0x03
# The active power measurements the `spike` fault shows wrong: the total a gateway reads as
# power_w and the per-phase power of a three-phase device (not available_w, ratings, setpoints).
SPIKE_REGISTERS = re.compile(r"power_w|power_l[1-3]_w")


class RegisterDevice:
    """Answers register reads and writes for one unit id; never touches the network itself."""

    def __init__(self, device_id: str, template: Template, physics: Any, unit: int) -> None:
        self.id = device_id
        self.template = template
        self.physics = physics
        self.unit = unit
        self.fault: Fault | None = None
        self.clock_s = 0.0
        for reg in template.registers:
            if reg.name != "clock_s" and not hasattr(physics, reg.name):
                raise ValueError(
                    f"device {device_id}: template {template.name} register {reg.name} has no "
                    f"{template.kind} quantity of that name"
                )
            if reg.writable and not callable(getattr(physics, f"set_{reg.name}", None)):
                raise ValueError(
                    f"device {device_id}: template {template.name} register {reg.name} is "
                    f"writable but a {template.kind} cannot set it"
                )
        # (table, address) → (register, word offset within it)
        self._cells: dict[tuple[str, int], tuple[Register, int]] = {
            (reg.table, reg.address + i): (reg, i)
            for reg in template.registers
            for i in range(reg.words)
        }
        # The cells a read must touch to take the one spiked sample.
        self._spike_cells = {cell for cell, (reg, _) in self._cells.items() if _spiked(reg)}
        self._words: dict[tuple[str, int], int] = {}
        self.refresh(0.0)

    def value(self, name: str) -> float:
        return self.clock_s if name == "clock_s" else float(getattr(self.physics, name))

    def refresh(self, clock_s: float) -> None:
        """Encode every register from the physics as it is at `clock_s`."""
        self.clock_s = clock_s
        for reg in self.template.registers:
            self._store(reg, self._shown(reg))

    def set_fault(self, fault: Fault | None) -> None:
        if fault is not None and fault.kind == "spike" and not self._spike_cells:
            raise ValueError(
                f"device {self.id}: template {self.template.name} has no power register to spike"
            )
        self.fault = fault
        self.refresh(self.clock_s)

    def read(self, table: str, address: int, count: int) -> list[int] | int:
        """The words at address..address+count-1, or Modbus exception 2 if any is unmapped.
        A `spike` fault is spent by the first successful read touching a power register."""
        try:
            words = [self._words[(table, a)] for a in range(address, address + count)]
        except KeyError:
            return ILLEGAL_ADDRESS
        if (
            self.fault is not None
            and self.fault.kind == "spike"
            and any((table, a) in self._spike_cells for a in range(address, address + count))
        ):
            self.set_fault(None)  # the words above keep the spike; the next read is true again
            log.info("device %s: spike read once, fault cleared", self.id)
        return words

    def write(self, address: int, words: list[int]) -> int | None:
        """Write whole writable holding registers; exception 2 for addresses that are not, 3 for a
        value the template's range or the device refuses."""
        regs: list[tuple[Register, list[int]]] = []
        i = 0
        while i < len(words):
            cell = self._cells.get(("holding", address + i))
            if cell is None or cell[1] != 0 or not cell[0].writable:
                return ILLEGAL_ADDRESS
            reg = cell[0]
            if i + reg.words > len(words):
                return ILLEGAL_ADDRESS
            regs.append((reg, words[i : i + reg.words]))
            i += reg.words
        try:
            values = [(reg, reg.decode(w)) for reg, w in regs]
            for reg, value in values:
                getattr(self.physics, f"set_{reg.name}")(value)
        except ValueError:
            return ILLEGAL_VALUE
        for reg, _ in values:
            self._store(reg, self._shown(reg))
        return None

    def _shown(self, reg: Register) -> list[int]:
        fault = self.fault.kind if self.fault else None
        measured = reg.name != "clock_s" and not reg.writable
        if measured and fault == "nan" and reg.type == "float32":
            return reg.encode(math.nan)
        if measured and fault == "out_of_range":
            return reg.encode_not_available()
        if measured and fault == "spike" and _spiked(reg):
            # Clamped, never wrapped: Register.encode saturates an integer register just inside
            # its range (a 16-bit register with scale 1 shows 32767 W, not a negative value or
            # the "not available" pattern); a float32 holds true + 20 kW as is.
            return reg.encode(self.value(reg.name) + SPIKE_W)
        return reg.encode(self.value(reg.name))

    def _store(self, reg: Register, words: list[int]) -> None:
        for i, word in enumerate(words):
            self._words[(reg.table, reg.address + i)] = word


def _spiked(reg: Register) -> bool:
    return not reg.writable and SPIKE_REGISTERS.fullmatch(reg.name) is not None
