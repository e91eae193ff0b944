"""Home file errors name the file, the line and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from homeflex_sim.home import Home
from homeflex_sim.homefile import HomeFileError, load_home, parse_home

GOOD = """\
name: t
devices:
  - id: meter
    kind: meter
    modbus: {port: 0, template: meter-3ph}
  - id: pv
    kind: pv
    kwp: 4
    modbus: {port: 0, template: pv-inverter}
"""


def test_good_file_parses() -> None:
    spec = parse_home(GOOD, "h.yaml")
    assert [d.id for d in spec.devices] == ["meter", "pv"]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("kwp: 4", "kwp: -4", "h.yaml:8: devices.1.kwp: Input should be greater than 0"),
        ("kwp: 4", "kwpp: 4", "h.yaml:8: devices.1.kwpp: Extra inputs are not permitted"),
        ("    kwp: 4\n", "", "devices.1.kwp: Field required — add this field"),
        ("kind: pv", "kind: windmill", "h.yaml:6: devices.1: Input tag 'windmill'"),
        (
            "port: 0, template: pv-inverter",
            "port: x, template: pv-inverter",
            "h.yaml:9: devices.1.modbus.port: Input should be a valid integer",
        ),
        ("name: t", "name: t\nstep_s: 7", "h.yaml:2: step_s: Value error, 7 does not divide 60"),
    ],
)
def test_errors_name_line_and_field(old: str, new: str, expected: str) -> None:
    with pytest.raises(HomeFileError) as err:
        parse_home(GOOD.replace(old, new), "h.yaml")
    assert expected in str(err.value)


def test_yaml_syntax_error_has_a_line() -> None:
    with pytest.raises(HomeFileError, match=r"h.yaml:3: not valid YAML"):
        parse_home("name: t\ndevices:\n  - [", "h.yaml")


def test_two_meters_and_unknown_phase_load() -> None:
    text = GOOD.replace("kind: pv\n    kwp: 4", "kind: meter")
    with pytest.raises(HomeFileError, match="exactly one meter"):
        parse_home(text, "h.yaml")
    spec = parse_home(GOOD + "phases: {heater: 1}\n", "h.yaml")
    with pytest.raises(ValueError, match="phases: heater is not a load"):
        Home(spec, 0.0)


def test_template_of_the_wrong_kind_and_unknown_template() -> None:
    spec = parse_home(GOOD.replace("pv-inverter", "home-battery"), "h.yaml")
    with pytest.raises(ValueError, match="template home-battery is for a battery, not a pv"):
        Home(spec, 0.0)
    spec = parse_home(GOOD.replace("pv-inverter", "pv-nope"), "h.yaml")
    with pytest.raises(HomeFileError, match="no device template 'pv-nope'; known templates"):
        Home(spec, 0.0)


def test_example_homes_load() -> None:
    homes = Path(__file__).parents[2] / "firmware-sim" / "homes"
    for name in ("terraced", "detached"):
        spec = load_home(homes / f"{name}.yaml")
        assert spec.name == name
        assert spec.zigbee is not None
