"""Register encoding and the shipped templates."""

from __future__ import annotations

import math
import struct

import pytest

from homeflex_sim.home import Home
from homeflex_sim.templates import TEMPLATE_DIR, Register, load_template
from tests.sim.conftest import WINTER, battery, ev, heat_pump, home_spec, pv


def reg(type_: str, scale: float = 1.0, **kw: object) -> Register:
    return Register.model_validate(
        {"name": "x", "address": 0, "table": "holding", "type": type_, "scale": scale, **kw}
    )


@pytest.mark.parametrize(
    ("type_", "scale", "value", "words"),
    [
        ("uint16", 0.1, 230.4, [2304]),
        ("int16", 0.01, -1.5, [0xFF6A]),
        ("int32", 1.0, -3000.0, [0xFFFF, 0xF448]),
        ("uint32", 0.1, 123456.7, [0x0012, 0xD687]),
        ("uint64", 0.01, 12345.67, [0, 0, 0x0012, 0xD687]),
        ("float32", 1.0, 21.5, [0x41AC, 0x0000]),
    ],
)
def test_encode_big_endian(type_: str, scale: float, value: float, words: list[int]) -> None:
    r = reg(type_, scale)
    assert r.encode(value) == words
    assert r.decode(words) == pytest.approx(value)


def test_non_numbers_and_overflow_still_encode_per_type() -> None:
    assert reg("uint16").encode(math.nan) == [0xFFFF]
    assert reg("int16").encode(math.nan) == [0x8000]
    assert reg("int32").encode_not_available() == [0x8000, 0x0000]
    assert reg("uint64").encode_not_available() == [0xFFFF] * 4
    nan_words = reg("float32").encode(math.nan)
    assert math.isnan(struct.unpack(">f", struct.pack(">2H", *nan_words))[0])
    assert reg("uint16").encode(1e9) == [0xFFFE]  # saturates below the "not available" pattern
    assert reg("uint16").encode(-5) == [0]
    assert reg("int16").encode(-1e9) == [0x8001]
    assert reg("float32").encode(1e300) == [0x7F80, 0]  # +inf, still a float32


def test_decode_refuses_out_of_range_writes() -> None:
    r = reg("uint16", 0.1, min=0, max=100)
    with pytest.raises(ValueError, match="outside"):
        r.decode([1001])


def test_every_template_binds_to_its_physics() -> None:
    names = sorted(p.stem for p in TEMPLATE_DIR.glob("*.yaml"))
    assert names == ["ev-charger", "heat-pump", "home-battery", "meter-3ph", "pv-inverter"]
    home = Home(home_spec(pv(), battery(), heat_pump(), ev()), WINTER)
    assert sorted(d.template.name for d in home.devices.values()) == names
    for device in home.devices.values():
        assert device.read("input", 0, 2) == load_template(device.template.name).registers[
            0
        ].encode(WINTER)
