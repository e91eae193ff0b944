"""Device templates: a device model's register map and capabilities, kept as data (YAML files).

Adding a Modbus device model is adding a file to `edge/devices/templates/` (or to the directory
named by the gateway config), not writing a class.
"""

from __future__ import annotations

import itertools
import struct
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from homeflex.configfile import load_config

BUILTIN_DIR = Path(__file__).parent / "templates"

RegisterType = Literal["uint16", "int16", "uint32", "int32", "uint64", "float32"]

WORDS: dict[str, int] = {
    "uint16": 1,
    "int16": 1,
    "uint32": 2,
    "int32": 2,
    "uint64": 4,
    "float32": 2,
}
_STRUCT: dict[str, str] = {
    "uint16": ">H",
    "int16": ">h",
    "uint32": ">I",
    "int32": ">i",
    "uint64": ">Q",
    "float32": ">f",
}
# Raw patterns that SunSpec and most vendors use for "not available"; never a measurement.
NOT_AVAILABLE: dict[str, int] = {
    "uint16": 0xFFFF,
    "int16": -0x8000,
    "uint32": 0xFFFFFFFF,
    "int32": -0x80000000,
    "uint64": 0xFFFFFFFFFFFFFFFF,
}

Capability = Literal["meter", "pv_inverter", "battery", "heat_pump", "ev_charger"]


class Register(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="a Quantity name (power_w, import_wh, …) or `clock_s`")
    quantity: str | None = Field(None, description="the Quantity it measures, if not its name")
    timestamp: str | None = Field(
        None, description="register holding the instant of this value (default: clock_s)"
    )
    address: int = Field(ge=0, le=65535)
    table: Literal["input", "holding"]
    type: RegisterType
    scale: float = 1.0
    unit: str = ""
    min: float | None = Field(None, description="plausible minimum, in engineering units")
    max: float | None = Field(None, description="plausible maximum, in engineering units")
    writable: bool = False

    @property
    def words(self) -> int:
        return WORDS[self.type]

    def decode(self, words: list[int]) -> float:
        """Engineering value of the raw register words; raises ValueError for a value that is not a
        measurement (NaN, the "not available" pattern, or outside the plausible range)."""
        raw = struct.unpack(_STRUCT[self.type], struct.pack(f">{self.words}H", *words))[0]
        if self.type != "float32" and raw == NOT_AVAILABLE[self.type]:
            raise ValueError(f"raw {raw:#x} means 'not available'")
        if raw != raw or raw in (float("inf"), float("-inf")):
            raise ValueError(f"raw value {raw} is not a number")
        value = float(raw) * self.scale
        if self.min is not None and value < self.min:
            raise ValueError(f"{value:g} {self.unit} is below the plausible minimum {self.min:g}")
        if self.max is not None and value > self.max:
            raise ValueError(f"{value:g} {self.unit} is above the plausible maximum {self.max:g}")
        return value

    def encode(self, value: float) -> list[int]:
        """Register words for engineering `value` (for writing setpoints)."""
        if (self.min is not None and value < self.min) or (
            self.max is not None and value > self.max
        ):
            raise ValueError(f"{value:g} {self.unit} is outside {self.min:g}..{self.max:g}")
        raw: float | int = value / self.scale
        if self.type != "float32":
            raw = round(raw)
        data = struct.pack(_STRUCT[self.type], raw)
        return list(struct.unpack(f">{self.words}H", data))


class Block(BaseModel):
    """Registers read together in one request (contiguous, same table)."""

    model_config = ConfigDict(frozen=True)

    table: Literal["input", "holding"]
    address: int
    count: int
    registers: tuple[Register, ...]


class ModbusTemplate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    protocol: Literal["modbus"] = "modbus"
    capabilities: list[Capability]
    max_block: int = Field(60, ge=1, le=125, description="registers per read request")
    registers: list[Register]

    @model_validator(mode="after")
    def _check(self) -> ModbusTemplate:
        names = [r.name for r in self.registers]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"register names used twice: {sorted(dup)}")
        for table in ("input", "holding"):
            spans = sorted(
                (r.address, r.address + r.words, r.name) for r in self.registers if r.table == table
            )
            for (_, end, a), (start, _, b) in itertools.pairwise(spans):
                if start < end:
                    raise ValueError(f"{table} registers {a} and {b} overlap")
        for r in self.registers:
            if r.timestamp is not None and r.timestamp not in names:
                raise ValueError(
                    f"register {r.name}: timestamp register {r.timestamp!r} is missing"
                )
            if r.writable and r.table != "holding":
                raise ValueError(f"register {r.name}: only holding registers can be writable")
        return self

    def register(self, name: str) -> Register:
        for r in self.registers:
            if r.name == name:
                return r
        raise KeyError(f"template {self.name} has no register {name!r}")

    def blocks(self) -> list[Block]:
        """Group registers into contiguous read requests (gaps of up to 4 words are read over)."""
        blocks: list[Block] = []
        for table in ("input", "holding"):
            regs = sorted((r for r in self.registers if r.table == table), key=lambda r: r.address)
            group: list[Register] = []
            for r in regs:
                if group:
                    start = group[0].address
                    end = group[-1].address + group[-1].words
                    if r.address - end > 4 or r.address + r.words - start > self.max_block:
                        blocks.append(_block(table, group))
                        group = []
                group.append(r)
            if group:
                blocks.append(_block(table, group))
        return blocks


def _block(table: Literal["input", "holding"], regs: list[Register]) -> Block:
    start = regs[0].address
    count = regs[-1].address + regs[-1].words - start
    return Block(table=table, address=start, count=count, registers=tuple(regs))


@cache
def load_modbus_template(name: str, extra_dir: Path | None = None) -> ModbusTemplate:
    """The template called `name`, from `extra_dir` first (the installer's own), then built-ins."""
    for folder in (extra_dir, BUILTIN_DIR):
        if folder is not None and (folder / f"{name}.yaml").is_file():
            return load_config(folder / f"{name}.yaml", ModbusTemplate)
    known = sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))
    raise FileNotFoundError(f"no device template {name!r}; known templates: {', '.join(known)}")
