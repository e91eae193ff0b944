"""The config loader names file, line, field and what to do."""

from pathlib import Path

import pytest

from homeflex.configfile import ConfigError, load_config, parse_config
from homeflex.edge.config import GatewayConfig

GOOD = """\
gateway_id: box-1
data_dir: /tmp/hf
store:
  path: /tmp/hf/store.db
devices:
  - protocol: modbus
    id: meter
    template: meter-3ph
    host: 127.0.0.1
    port: 1502
"""


def test_valid_file_parses() -> None:
    cfg = parse_config(GOOD, GatewayConfig, "gw.yaml")
    assert cfg.devices[0].id == "meter"
    assert cfg.devices[0].port == 1502
    assert cfg.store.retention.raw_days == 14


def test_errors_name_file_line_field_and_fix() -> None:
    bad = GOOD.replace("port: 1502", "port: 99999\n    colour: red")
    with pytest.raises(ConfigError) as exc:
        parse_config(bad, GatewayConfig, "gw.yaml")
    lines = str(exc.value).splitlines()
    assert "gw.yaml:10: devices.0.port: Input should be less than or equal to 65535" in lines[0]
    assert lines[1].startswith("gw.yaml:11: devices.0.colour: Extra inputs are not permitted")
    assert "remove it or check its spelling" in lines[1]


def test_missing_field_points_at_parent() -> None:
    with pytest.raises(ConfigError, match=r"gw.yaml:6: devices.0.template: Field required — add"):
        parse_config(GOOD.replace("    template: meter-3ph\n", ""), GatewayConfig, "gw.yaml")


def test_duplicate_device_ids_refused() -> None:
    twice = GOOD + GOOD[GOOD.index("  - protocol") :]
    with pytest.raises(ConfigError, match="device id 'meter' is used twice"):
        parse_config(twice, GatewayConfig, "gw.yaml")


def test_yaml_syntax_error_has_line() -> None:
    with pytest.raises(ConfigError, match=r"gw.yaml:3: not valid YAML"):
        parse_config("gateway_id: a\nstore:\n  path: : x: y\n", GatewayConfig, "gw.yaml")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml", GatewayConfig)


def test_zigbee_device_needs_radio() -> None:
    text = (
        GOOD + "  - protocol: zigbee\n    id: plug\n    template: zigbee-plug\n"
        "    ieee: 00:11:22:33:44:55:66:77\n"
    )
    with pytest.raises(ConfigError, match="no `zigbee:` radio section"):
        parse_config(text, GatewayConfig, "gw.yaml")
