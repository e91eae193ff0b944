"""`homeflex cloud run`'s prices and forecaster from its configuration: an aggregator's day
prices flat or from a price file in the gateway's format (resampled, aligned to the UTC day,
flat where the file has none, read again when it changes), a bad file refused at start-up
naming the file, line and field, and the forecaster built from its section."""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path

import pytest
import yaml

from homeflex.cloud.forecast.brain import ForecasterBrain
from homeflex.cloud.platform import (
    FlatPrices,
    PlatformConfig,
    PricesFromFile,
    build,
    build_check,
    day_prices,
)
from homeflex.configfile import ConfigError, load_config
from homeflex.pki.identity import Identity, Role
from tests.pki_fixtures import CredsFactory

DAY = date(2026, 6, 21)


def write(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_flat_prices_are_the_same_every_ptu() -> None:
    p = day_prices(FlatPrices(import_eur_kwh=0.28, export_eur_kwh=0.04))(DAY)
    assert p.import_eur_kwh == [0.28] * 96 and p.export_eur_kwh == [0.04] * 96


def test_a_quarter_hour_file_covers_its_ptus_and_the_flat_prices_the_rest(tmp_path: Path) -> None:
    imp = [0.10 + 0.01 * n for n in range(8)]
    exp = [0.02 + 0.001 * n for n in range(8)]
    file = write(tmp_path / "prices.yaml", {"start": "2026-06-21T06:00:00Z",
                                            "import_price": imp, "export_price": exp})  # fmt: skip
    p = day_prices(PricesFromFile(file=file, import_eur_kwh=0.25))(DAY)
    assert p.import_eur_kwh[24:32] == imp and p.export_eur_kwh[24:32] == exp  # 06:00-08:00
    assert p.import_eur_kwh[:24] == [0.25] * 24 and p.import_eur_kwh[32:] == [0.25] * 64
    assert p.export_eur_kwh[:24] == [0.05] * 24  # the gateway's default flat export price
    # the day before and the day after lie outside the file: flat throughout
    assert day_prices(PricesFromFile(file=file))(date(2026, 6, 20)).import_eur_kwh == [0.3] * 96


def test_an_hourly_file_from_the_evening_before_is_resampled_and_aligned(tmp_path: Path) -> None:
    # hourly from 22:00 UTC the day before: 22, 23 belong to 20 June, then 00, 01, 02 on the day
    hourly = {
        "start": "2026-06-20T22:00:00+00:00",
        "series_step_s": 3600,
        "import_price": [0.9, 0.8, 0.11, 0.12, 0.13],
        "export_price": [0.0, 0.0, 0.01, 0.02, 0.03],
    }
    file = write(tmp_path / "prices.json", hourly)
    p = day_prices(PricesFromFile(file=file, import_eur_kwh=0.3, export_eur_kwh=0.0))(DAY)
    assert p.import_eur_kwh[:12] == [0.11] * 4 + [0.12] * 4 + [0.13] * 4
    assert p.export_eur_kwh[:12] == [0.01] * 4 + [0.02] * 4 + [0.03] * 4
    assert p.import_eur_kwh[12:] == [0.3] * 84 and p.export_eur_kwh[12:] == [0.0] * 84


def test_the_file_is_read_again_when_it_changes_and_a_bad_change_keeps_the_last(
    tmp_path: Path,
) -> None:
    day = {"start": "2026-06-21T00:00:00Z", "series_step_s": 3600}
    file = write(tmp_path / "p.yaml", {**day, "import_price": [0.2] * 24,
                                       "export_price": [0.05] * 24})  # fmt: skip
    prices = day_prices(PricesFromFile(file=file))
    assert prices(DAY).import_eur_kwh == [0.2] * 96
    write(file, {**day, "import_price": [0.21] * 24, "export_price": [0.05] * 24})
    os.utime(file, ns=(1, 1_000_000_000))  # a new time stamp, whatever the file system's grain
    assert prices(DAY).import_eur_kwh == [0.21] * 96
    write(file, {**day, "import_price": [0.22] * 23, "export_price": [0.05] * 24})
    assert prices(DAY).import_eur_kwh == [0.21] * 96  # refused and logged: the last good stay
    file.unlink()
    assert prices(DAY).import_eur_kwh == [0.21] * 96


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        # a price per MWh where € per kWh is meant, in the fourth value (line 6 of the file)
        ({"start": "2026-06-21T00:00:00Z", "import_price": [0.2, 0.2, 0.2, 52.1],
          "export_price": [0.0] * 4}, r"prices.yaml:6: import_price.3: .*less than or equal to 10"),
        ({"start": "2026-06-21T00:00:00Z", "import_price": [0.2, 0.2],
          "export_price": [0.1]}, r"prices.yaml:1: .*import_price has 2 values and export_price 1"),
        ({"start": "2026-06-21T00:00:00", "import_price": [0.2], "export_price": [0.1]},
         r"prices.yaml:1: .*start needs a time zone"),
        ({"start": "2026-06-21T00:00:00Z", "series_step_s": 600, "import_price": [0.2],
          "export_price": [0.1]}, r"prices.yaml:2: series_step_s: Input should be 900, 1800 or"),
        ({"start": "2026-06-21T00:00:00Z", "import_price": [0.2], "export": [0.1]},
         r"prices.yaml:1: export_price: Field required(.|\n)*prices.yaml:5: export: Extra inputs"),
    ],
)  # fmt: skip
def test_a_bad_file_is_refused_naming_the_file_line_and_field(
    tmp_path: Path, content: dict[str, object], expected: str
) -> None:
    file = tmp_path / "prices.yaml"
    file.write_text(yaml.safe_dump(content, sort_keys=False, default_flow_style=False))
    with pytest.raises(ConfigError, match=expected):
        day_prices(PricesFromFile(file=file))


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"nowhere.yaml: no such price file; check `prices: file:`"
    ):
        day_prices(PricesFromFile(file=tmp_path / "nowhere.yaml"))


def platform(tmp_path: Path, creds: CredsFactory, prices: object) -> Path:
    """A configuration file with one aggregator (with `prices`), its DSO and a forecaster."""
    agr = creds(Identity("agr-1", Role.AGGREGATOR, xmpp="agr-1@xmpp.test"))
    dso = creds(Identity("dso-1", Role.DSO, xmpp="dso-1@xmpp.test"))
    home = creds(Identity("home-1", Role.HOME, xmpp="home-1@xmpp.test"))
    fc = creds(Identity("forecast-1", Role.FORECASTER, xmpp="forecast-1@xmpp.test"))
    for c in (agr, fc):
        (c.dir / "xmpp-password").write_text("not-a-real-one\n")
    config = {
        "xmpp": {"domain": "xmpp.test"},
        "state_dir": str(tmp_path / "state"),
        "aggregators": [{
            "credentials": str(agr.dir), "password_file": str(agr.dir / "xmpp-password"),
            "congestion_point": "trafo-1",
            "dso": {"name": "dso-1", "certificate": str(dso.dir / "cert.pem")},
            "homes": {"home-1": str(home.dir / "cert.pem")},
            "prices": prices,
        }],
        "forecaster": {
            "credentials": str(fc.dir), "password_file": str(fc.dir / "xmpp-password"),
            "sites": {"home-1": {"latitude": 52.1, "longitude": 5.1, "kwp": 4.2,
                                 "annual_kwh": 3500, "readers": ["agr-1"]}},
        },
    }  # fmt: skip
    return write(tmp_path / "agents.yaml", json.loads(json.dumps(config)))


def test_build_check_refuses_a_bad_price_file_at_start_up(
    tmp_path: Path, creds: CredsFactory
) -> None:
    per_mwh = {"start": "2026-06-21T00:00:00Z", "import_price": [250.0], "export_price": [0.0]}
    bad = write(tmp_path / "day.yaml", per_mwh)
    cfg = load_config(platform(tmp_path, creds, {"file": str(bad)}), PlatformConfig)
    with pytest.raises(ConfigError, match=r"day.yaml:3: import_price.0: .*less than or equal"):
        build_check(cfg)


def test_the_platform_builds_the_forecaster_and_the_aggregator_with_file_prices(
    tmp_path: Path, creds: CredsFactory
) -> None:
    peak = {"start": "2026-06-21T19:00:00Z", "import_price": [0.45] * 4, "export_price": [0.0] * 4}
    good = write(tmp_path / "day.yaml", peak)
    cfg = load_config(platform(tmp_path, creds, {"file": str(good)}), PlatformConfig)
    assert isinstance(cfg.aggregators[0].prices, PricesFromFile)
    build_check(cfg)
    brains = {agent.node.name: brain for agent, brain, _ in build(cfg)}
    forecaster = brains["forecast-1"]
    assert isinstance(forecaster, ForecasterBrain) and set(forecaster.sites) == {"home-1"}
    assert forecaster.sites["home-1"].readers == {"agr-1"}
    evening = brains["agr-1"].prices(DAY)  # type: ignore[attr-defined]
    assert evening.import_eur_kwh[76:80] == [0.45] * 4 and evening.import_eur_kwh[75] == 0.3


def test_a_misspelt_prices_section_is_refused_with_its_line(
    tmp_path: Path, creds: CredsFactory
) -> None:
    path = platform(tmp_path, creds, {"fil": "day.yaml"})
    with pytest.raises(ConfigError, match=r"agents.yaml:\d+: aggregators.0.prices"):
        load_config(path, PlatformConfig)
