"""Device models as data: a register map per model (templates/*.yaml) and the big-endian encoding
of engineering values into register words.

A register is bound to the physics attribute of the same name (`set_<name>` for a writable one),
so adding a device model is adding a YAML file.
"""

from __future__ import annotations

import itertools
import math
import struct
from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from homeflex_sim.homefile import HomeFileError

TEMPLATE_DIR = Path(__file__).parent / "templates"
RegisterType = Literal["uint16", "int16", "uint32", "int32", "uint64", "float32"]
Kind = Literal["meter", "pv", "battery", "heat_pump", "ev_charger"]

WORDS = {"uint16": 1, "int16": 1, "uint32": 2, "int32": 2, "uint64": 4, "float32": 2}
_FORMAT = {
    "uint16": ">H",
    "int16": ">h",
    "uint32": ">I",
    "int32": ">i",
    "uint64": ">Q",
    "float32": ">f",
}
# "Not available" patterns (SunSpec and most vendors); a measurement never takes them.
NOT_AVAILABLE = {
    "uint16": 0xFFFF,
    "int16": -0x8000,
    "uint32": 0xFFFFFFFF,
    "int32": -0x80000000,
    "uint64": 0xFFFFFFFFFFFFFFFF,
}
ABSURD_FLOAT = 3.0e38  # what a float register shows under the `out_of_range` fault


class Register(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    address: int = Field(ge=0, le=65535)
    table: Literal["input", "holding"]
    type: RegisterType
    scale: float = Field(1.0, description="engineering value = raw × scale")
    unit: str = ""
    writable: bool = False
    min: float | None = Field(None, description="smallest value a write may set")
    max: float | None = Field(None, description="largest value a write may set")

    @property
    def words(self) -> int:
        return WORDS[self.type]

    def encode(self, value: float) -> list[int]:
        """Words for `value`. Integer registers saturate just inside their range; a non-finite
        value in an integer register shows the "not available" pattern."""
        if self.type == "float32":
            raw: float | int = value / self.scale if math.isfinite(value) else value
            try:
                data = struct.pack(">f", raw)
            except OverflowError:
                data = struct.pack(">f", math.copysign(math.inf, raw))
        else:
            data = struct.pack(_FORMAT[self.type], self._int_raw(value))
        return list(struct.unpack(f">{self.words}H", data))

    def encode_not_available(self) -> list[int]:
        if self.type == "float32":
            return self.encode(ABSURD_FLOAT * self.scale)
        data = struct.pack(_FORMAT[self.type], NOT_AVAILABLE[self.type])
        return list(struct.unpack(f">{self.words}H", data))

    def decode(self, words: list[int]) -> float:
        """Engineering value of raw words (a write); ValueError if not a valid value."""
        raw = struct.unpack(_FORMAT[self.type], struct.pack(f">{self.words}H", *words))[0]
        value = float(raw) * self.scale
        if not math.isfinite(value):
            raise ValueError(f"{self.name}: {value} is not a number")
        if (self.min is not None and value < self.min) or (
            self.max is not None and value > self.max
        ):
            raise ValueError(
                f"{self.name}: {value:g} {self.unit} is outside {self.min}..{self.max}"
            )
        return value

    def _int_raw(self, value: float) -> int:
        if not math.isfinite(value):
            return NOT_AVAILABLE[self.type]
        bits = 8 * struct.calcsize(_FORMAT[self.type])
        # Saturate one short of the "not available" pattern at either end.
        if self.type.startswith("u"):
            low, high = 0, (1 << bits) - 2
        else:
            low, high = -(1 << (bits - 1)) + 1, (1 << (bits - 1)) - 1
        raw: int = round(value / self.scale)
        return max(low, min(high, raw))


class Template(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    kind: Kind = Field(description="the physics the registers are bound to")
    registers: list[Register]

    @model_validator(mode="after")
    def _check(self) -> Template:
        names = [r.name for r in self.registers]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"register names used twice: {twice}")
        if "clock_s" not in names:
            raise ValueError("every template needs a clock_s register")
        for table in ("input", "holding"):
            spans = sorted(
                (r.address, r.address + r.words, r.name) for r in self.registers if r.table == table
            )
            for (_, end, a), (start, _, b) in itertools.pairwise(spans):
                if start < end:
                    raise ValueError(f"{table} registers {a} and {b} overlap")
        for r in self.registers:
            if r.writable and r.table != "holding":
                raise ValueError(f"register {r.name}: only holding registers can be writable")
        return self


@cache
def load_template(name: str) -> Template:
    path = TEMPLATE_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in TEMPLATE_DIR.glob("*.yaml")))
        raise HomeFileError(f"no device template {name!r}; known templates: {known}")
    try:
        return Template.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (ValidationError, yaml.YAMLError) as exc:
        raise HomeFileError(f"{path}: invalid template: {exc}") from None
