"""Register decoding and encoding by template: values, scaling, and refusal of bad values."""

import math
import struct

import pytest

from homeflex.edge.devices.templates import ModbusTemplate, Register


def words(fmt: str, value: float) -> list[int]:
    data = struct.pack(fmt, value)
    return list(struct.unpack(f">{len(data) // 2}H", data))


def reg(**kw: object) -> Register:
    base: dict[str, object] = {"name": "power_w", "address": 0, "table": "input", "type": "int32"}
    base.update(kw)
    return Register.model_validate(base)


def test_decode_scaled_signed() -> None:
    assert reg(scale=0.1).decode(words(">i", -12345)) == pytest.approx(-1234.5)


def test_decode_uint64_counter_resolution() -> None:
    r = reg(name="import_wh", type="uint64", scale=0.01)
    assert r.decode(words(">Q", 123456789012)) == pytest.approx(1234567890.12)


@pytest.mark.parametrize(
    ("kind", "raw", "message"),
    [
        ("float32", words(">f", math.nan), "not a number"),
        ("int16", words(">h", -32768), "not available"),
        ("uint16", [0xFFFF], "not available"),
    ],
)
def test_decode_refuses_non_measurements(kind: str, raw: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        reg(type=kind).decode(raw)


def test_decode_refuses_implausible() -> None:
    with pytest.raises(ValueError, match="above the plausible maximum 500"):
        reg(name="voltage_l1_v", type="uint16", scale=0.1, max=500, unit="V").decode([6000])


def test_encode_round_trip_and_limits() -> None:
    r = reg(name="setpoint_w", table="holding", writable=True, min=-5000, max=5000)
    assert r.decode(r.encode(-2500)) == -2500
    with pytest.raises(ValueError, match="outside"):
        r.encode(6000)


def test_blocks_group_contiguous_and_split_tables() -> None:
    t = ModbusTemplate.model_validate(
        {
            "name": "t",
            "capabilities": ["meter"],
            "max_block": 10,
            "registers": [
                {"name": "clock_s", "address": 0, "table": "input", "type": "uint32"},
                {"name": "power_w", "address": 2, "table": "input", "type": "int32"},
                {"name": "import_wh", "address": 8, "table": "input", "type": "uint64"},
                {
                    "name": "setpoint_w",
                    "address": 0,
                    "table": "holding",
                    "type": "int32",
                    "writable": True,
                },
            ],
        }
    )
    blocks = [(b.table, b.address, b.count, [r.name for r in b.registers]) for b in t.blocks()]
    assert blocks == [
        ("input", 0, 4, ["clock_s", "power_w"]),
        ("input", 8, 4, ["import_wh"]),
        ("holding", 0, 2, ["setpoint_w"]),
    ]


def test_overlap_and_writable_input_refused() -> None:
    with pytest.raises(ValueError, match="overlap"):
        ModbusTemplate.model_validate(
            {
                "name": "t",
                "capabilities": [],
                "registers": [
                    {"name": "a", "address": 0, "table": "input", "type": "uint32"},
                    {"name": "b", "address": 1, "table": "input", "type": "uint16"},
                ],
            }
        )
    with pytest.raises(ValueError, match="only holding registers can be writable"):
        ModbusTemplate.model_validate(
            {
                "name": "t",
                "capabilities": [],
                "registers": [
                    {
                        "name": "a",
                        "address": 0,
                        "table": "input",
                        "type": "uint16",
                        "writable": True,
                    }
                ],
            }
        )
