"""The home's planner inputs from its configuration, its readings, the store's history and the
price file: values checked spec by spec; price file changes and mistakes."""

from __future__ import annotations

import os
from datetime import UTC, datetime, time
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from pydantic import ValidationError

from homeflex.clock import PTU_SECONDS
from homeflex.configfile import ConfigError, parse_config
from homeflex.edge.config import GatewayConfig
from homeflex.edge.control import ControlLoop, Snapshot
from homeflex.edge.devices.capabilities import Quantity, Reading
from homeflex.edge.home import Home, HomeConfig
from homeflex.edge.planner.devices.appliance import ApplianceSpec
from homeflex.edge.planner.devices.battery import BatterySpec
from homeflex.edge.planner.devices.ev import EvSpec
from homeflex.edge.planner.devices.heat_pump import HeatPumpSpec
from homeflex.edge.planner.devices.pv import PvSpec
from homeflex.edge.planner.fallback import fallback_plan
from homeflex.edge.planner.forecast import DAY_S, clear_sky_shape
from homeflex.edge.planner.inputs import PlanInputs
from homeflex.edge.store import Store
from tests.fakeclock import FakeClock

T0 = datetime(2026, 6, 1, 0, 0, tzinfo=UTC).timestamp()  # a Monday, midnight UTC
NOW = T0 + 6 * 3600 + 7 * 60  # 06:07 UTC = 08:07 local: PTU 06:00 UTC


def config(tmp_path: Path, **extra: Any) -> HomeConfig:
    return HomeConfig.model_validate(
        {
            "meter": "meter",
            "site": {"latitude": 52.0, "longitude": 5.0, "utc_offset_h": 2},
            "prices": {
                "file": str(tmp_path / "prices.yaml"),
                "flat_import_eur_per_kwh": 0.3,
                "flat_export_eur_per_kwh": 0.05,
            },
            "grid": {"import_limit_w": 11_000, "export_limit_w": 8000},
            "devices": [
                {
                    "kind": "battery",
                    "id": "bat",
                    "capacity_wh": 10_000,
                    "max_charge_w": 5000,
                    "max_discharge_w": 4000,
                    "soc_min_pct": 20,
                    "charge_efficiency": 0.96,
                },
                {"kind": "pv", "id": "pv", "peak_w": 3000},
                {
                    "kind": "ev",
                    "id": "ev",
                    "ready_by": "07:30",
                    "energy_needed_wh": 10_000,
                    "max_current_a": 16,
                    "efficiency": 0.9,
                },
                {
                    "kind": "heat_pump",
                    "id": "hp",
                    "rated_power_w": 2000,
                    "resistance_k_per_kw": 6.0,
                    "capacitance_kwh_per_k": 5.0,
                    "comfort": [
                        {"start": "07:00", "t_min_c": 20, "t_max_c": 22},
                        {"start": "22:30", "t_min_c": 16, "t_max_c": 22},
                    ],
                },
                {
                    "kind": "appliance",
                    "id": "washer",
                    "profile_w": [2000, 300],
                    "finish_by": "18:00",
                },
            ],
            **extra,
        }
    )


def snapshot(**values: float) -> Snapshot:
    """`dev__quantity=value` → a frozen snapshot taken at NOW."""
    out = {}
    for key, value in values.items():
        dev, q = key.split("__")
        out[(dev, Quantity(q))] = Reading(dev, Quantity(q), NOW - 5, value)
    return MappingProxyType(out)


def write_prices(path: Path, text: str) -> None:
    path.write_text(text)
    # a rewrite within the file system's time stamp resolution must still be seen as new
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


PRICES = """\
start: 2026-06-01T06:00:00Z
series_step_s: 1800
import_price: [0.10, 0.20, 0.40]
export_price: [0.01, 0.02, 0.04]
"""


def spec(inputs: PlanInputs, dev_id: str) -> Any:
    return next(d for d in inputs.devices if d.id == dev_id)


def test_inputs_map_the_snapshot_and_the_config(tmp_path: Path) -> None:
    write_prices(tmp_path / "prices.yaml", PRICES)
    home = Home(config(tmp_path))
    assert home.prices.reload()
    snap = snapshot(
        bat__soc_pct=63.5,
        ev__ev_connected=1,
        ev__import_wh=1000.0,
        hp__room_temp_c=19.2,
        hp__outdoor_temp_c=3.5,
        hp__power_w=1800,
        washer__appliance_state=4,
    )
    inputs = home.make_inputs(NOW, snap)
    assert inputs.start == datetime(2026, 6, 1, 6, 0, tzinfo=UTC)
    assert inputs.ptus == 96
    assert inputs.grid.import_limit_w == 11_000 and inputs.grid.export_limit_w == 8000
    # prices: 30-minute steps from 06:00 resampled; the flat tariff after the file's 90 minutes
    assert inputs.import_price[:7] == [0.10, 0.10, 0.20, 0.20, 0.40, 0.40, 0.3]
    assert inputs.export_price[:7] == [0.01, 0.01, 0.02, 0.02, 0.04, 0.04, 0.05]
    assert inputs.import_price[95] == 0.3
    assert inputs.base_load_w == [400.0] * 96  # no history yet: the configured default

    bat = spec(inputs, "bat")
    assert isinstance(bat, BatterySpec)
    assert (bat.soc_start_pct, bat.capacity_wh, bat.soc_min_pct) == (63.5, 10_000, 20)
    assert (bat.max_charge_w, bat.max_discharge_w, bat.charge_efficiency) == (5000, 4000, 0.96)

    pv = spec(inputs, "pv")
    # no history yet: a cautious share of the 3 kW peak, in the clear-sky shape
    assert isinstance(pv, PvSpec) and max(pv.forecast_w) == pytest.approx(0.3 * 3000)

    ev = spec(inputs, "ev")
    assert isinstance(ev, EvSpec)
    assert ev.arrive.timestamp() == NOW
    # 07:30 local (UTC+2) has passed at 08:07 local: tomorrow's 05:30 UTC
    assert ev.depart == datetime(2026, 6, 2, 5, 30, tzinfo=UTC)
    assert ev.energy_needed_wh == 10_000  # just plugged in: nothing delivered yet
    assert (ev.max_current_a, ev.phases, ev.efficiency) == (16, 3, 0.9)

    hp = spec(inputs, "hp")
    assert isinstance(hp, HeatPumpSpec)
    assert (hp.room_temp_c, hp.on_now) == (19.2, True)
    assert hp.outdoor_temp_c == [3.5] * 96
    # 06:00 UTC is 08:00 local: day band; 20:30 UTC = 22:30 local (PTU 58): night band until
    # 05:00 UTC = 07:00 local (PTU 92)
    assert hp.t_min_c[0] == 20 and hp.t_min_c[57] == 20
    assert hp.t_min_c[58] == 16 and hp.t_min_c[91] == 16 and hp.t_min_c[92] == 20
    assert hp.t_max_c == [22.0] * 96

    washer = spec(inputs, "washer")
    assert isinstance(washer, ApplianceSpec)
    assert washer.profile_w == [2000, 300]
    assert washer.earliest_start.timestamp() == NOW
    assert washer.latest_finish == datetime(2026, 6, 1, 16, 0, tzinfo=UTC)  # 18:00 local


def test_state_changes_between_plans(tmp_path: Path) -> None:
    home = Home(config(tmp_path))  # no price file at all: the flat tariff
    assert not home.prices.reload()
    assert "prices.yaml: cannot be read" in home.prices.error
    first = home.make_inputs(NOW, snapshot(ev__ev_connected=1, ev__import_wh=1000.0))
    assert first.import_price == [0.3] * 96 and first.export_price == [0.05] * 96
    # no SoC reported: the configured assumption; no room temperature: the pump is not planned
    assert spec(first, "bat").soc_start_pct == 50.0
    assert {d.id for d in first.devices} == {"bat", "pv", "ev"}
    # 4 kWh AC delivered since plug-in, 90 % into the car
    later = home.make_inputs(NOW + 3600, snapshot(ev__ev_connected=1, ev__import_wh=5000.0))
    assert spec(later, "ev").energy_needed_wh == pytest.approx(10_000 - 3600)
    # unplugged: not planned; plugged in again: a new session needing the full energy
    gone = home.make_inputs(NOW + 7200, snapshot(ev__ev_connected=0, ev__import_wh=6000.0))
    assert "ev" not in {d.id for d in gone.devices}
    again = home.make_inputs(NOW + 9000, snapshot(ev__ev_connected=1, ev__import_wh=6000.0))
    assert spec(again, "ev").energy_needed_wh == 10_000
    # connected, but the charger's counter is not known (yet): the full energy is needed
    fresh = Home(config(tmp_path)).make_inputs(NOW, snapshot(ev__ev_connected=1))
    assert spec(fresh, "ev").energy_needed_wh == 10_000
    # an appliance that is running or idle is not planned
    running = home.make_inputs(NOW, snapshot(washer__appliance_state=5))
    assert "washer" not in {d.id for d in running.devices}


def test_a_car_away_is_planned_from_its_usual_arrival(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    ev = next(d for d in cfg.devices if d.id == "ev")
    cfg.devices[cfg.devices.index(ev)] = ev.model_copy(update={"expected_arrival": time(18, 0)})
    home = Home(cfg)
    # 08:07 local (UTC+2), the car away: its session from 18:00 local to 07:30 tomorrow
    away = spec(home.make_inputs(NOW, snapshot(ev__ev_connected=0, ev__import_wh=500.0)), "ev")
    assert away.arrive == datetime(2026, 6, 1, 16, 0, tzinfo=UTC)
    assert away.depart == datetime(2026, 6, 2, 5, 30, tzinfo=UTC)
    assert away.energy_needed_wh == 10_000
    # plugged in: from now, as before
    home_now = spec(home.make_inputs(NOW, snapshot(ev__ev_connected=1, ev__import_wh=500.0)), "ev")
    assert home_now.arrive == datetime.fromtimestamp(NOW, UTC)


def counters(dev: str, start: float, ptus: int, import_w: float, export_w: float) -> list[Reading]:
    """Counter readings at each PTU boundary for constant import and export powers."""
    out = []
    for i in range(ptus + 1):
        ts = start + i * PTU_SECONDS
        out.append(Reading(dev, Quantity.IMPORT_WH, ts, import_w * i / 4))
        out.append(Reading(dev, Quantity.EXPORT_WH, ts, export_w * i / 4))
    return out


def test_history_gives_base_load_and_pv_forecasts(tmp_path: Path) -> None:
    """Yesterday 06:00-08:00 UTC in the store: the meter imported 1500 W while the battery took
    1000 W, the heat pump 300 W and the PV made 1500 W, so the base load was 1700 W."""
    store = Store.open(tmp_path / "store.db")
    y = T0 + 6 * 3600 - DAY_S
    readings = (
        counters("meter", y, 8, 1500, 0)
        + counters("bat", y, 8, 1000, 0)
        + counters("hp", y, 8, 300, 0)
        + counters("pv", y, 8, 0, 1500)
        + counters("ev", y, 8, 0, 0)
        + counters("washer", y, 8, 0, 0)
    )
    store.write(readings)
    home = Home(config(tmp_path))
    home.history = home.load_history(store, NOW)
    store.close()
    assert len(home.history.base_load_w) == 8
    assert home.history.base_load_w[y] == pytest.approx(1700)
    assert home.history.pv_w["pv"][y + 900] == pytest.approx(1500)
    inputs = home.make_inputs(NOW, snapshot())
    assert inputs.base_load_w[:8] == pytest.approx([1700] * 8)
    assert inputs.base_load_w[8] == 400.0  # no history for 08:00 yesterday: the default
    # PV: today's clear-sky shape scaled by what the panels made against the shape of the last
    # three days (normalised over those days) in the same PTUs, capped at the 3000 W peak
    past = clear_sky_shape(T0 + 6 * 3600 - 3 * DAY_S, 3 * 96, 52.0, 5.0)
    scale = 1500 * 8 / sum(past[2 * 96 : 2 * 96 + 8])
    shape = clear_sky_shape(T0 + 6 * 3600, 96, 52.0, 5.0)
    expected = [min(3000.0, s * scale) for s in shape]
    assert spec(inputs, "pv").forecast_w == pytest.approx(expected)
    assert max(s * scale for s in shape) > 3100  # so the cap is exercised
    assert expected[0] == pytest.approx(shape[0] * scale) and expected[80] == 0.0


def test_price_file_changes_are_picked_up(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    write_prices(path, PRICES)
    home = Home(config(tmp_path))
    assert home.prices.reload()
    assert not home.prices.reload()  # unchanged: not read again
    write_prices(path, PRICES.replace("0.10, 0.20, 0.40", "0.50, 0.60, 0.70"))
    assert home.prices.reload()
    inputs = home.make_inputs(NOW, snapshot())
    assert inputs.import_price[:6] == [0.5, 0.5, 0.6, 0.6, 0.7, 0.7]
    # JSON is YAML: a JSON price file, one value per PTU, starting before the plan
    write_prices(
        path,
        '{"start": "2026-06-01T05:45:00Z", "import_price": [1, 2, 3], "export_price": [0, 0, 0.5]}',
    )
    assert home.prices.reload()
    inputs = home.make_inputs(NOW, snapshot())
    assert inputs.import_price[:3] == [2, 3, 0.3]
    assert inputs.export_price[:3] == [0, 0.5, 0.05]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (PRICES.replace("[0.10, 0.20, 0.40]", "[0.10, cheap, 0.40]"), ":3: import_price.1:"),
        (PRICES.replace("[0.01, 0.02, 0.04]", "[0.01]"), "import_price has 3 values"),
        (PRICES.replace("series_step_s: 1800", "series_step_s: 600"), ":2: series_step_s:"),
        (PRICES.replace("06:00:00Z", "06:05:00Z"), "start must be on a PTU boundary"),
        ("start: [unclosed\n", "not valid YAML"),
    ],
)
def test_a_malformed_price_file_keeps_the_last_good_prices(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "prices.yaml"
    write_prices(path, PRICES)
    home = Home(config(tmp_path))
    assert home.prices.reload()
    write_prices(path, text)
    assert not home.prices.reload()
    assert str(path) in home.prices.error
    assert message in home.prices.error
    assert "keeping the last prices" in home.prices.error
    # the loop plans on the last good prices
    loop = ControlLoop(FakeClock(NOW), "meter", home.make_inputs, planner=fallback_plan)
    try:
        assert loop.request_plan()
        assert loop.pending is not None
        loop.pending.result(10)
        loop.cycle([])
        assert loop.plan is not None
        plan_inputs = loop.plan[1]
        assert plan_inputs.import_price[:7] == [0.10, 0.10, 0.20, 0.20, 0.40, 0.40, 0.3]
    finally:
        loop.close()
    # fixed: taken again
    write_prices(path, PRICES.replace("0.40", "0.45"))
    assert home.prices.reload()
    assert home.prices.error == ""
    assert home.make_inputs(NOW, snapshot()).import_price[4] == 0.45


def test_config_mistakes_are_reported_by_the_planner_specs(tmp_path: Path) -> None:
    def home_with(device: dict[str, Any]) -> HomeConfig:
        return HomeConfig.model_validate(
            {
                "meter": "meter",
                "site": {"latitude": 52, "longitude": 5},
                "prices": {"file": str(tmp_path / "p.yaml")},
                "devices": [device],
            }
        )

    with pytest.raises(ValidationError, match=r"soc_min_pct 90\.0 is above soc_max_pct 80\.0"):
        home_with(
            {
                "kind": "battery",
                "id": "b",
                "capacity_wh": 5000,
                "max_charge_w": 1,
                "max_discharge_w": 1,
                "soc_min_pct": 90,
                "soc_max_pct": 80,
            }
        )
    with pytest.raises(ValidationError, match=r"max_current_a 8\.0 is below min_current_a 10\.0"):
        home_with(
            {
                "kind": "ev",
                "id": "e",
                "ready_by": "07:00",
                "energy_needed_wh": 1,
                "min_current_a": 10,
                "max_current_a": 8,
            }
        )
    with pytest.raises(
        ValidationError, match=r"t_min_c\[0\] = 23\.0 is above t_max_c\[0\] = 21\.0"
    ):
        home_with(
            {
                "kind": "heat_pump",
                "id": "h",
                "rated_power_w": 2000,
                "resistance_k_per_kw": 6,
                "capacitance_kwh_per_k": 5,
                "comfort": [{"start": "00:00", "t_min_c": 23, "t_max_c": 21}],
            }
        )


def test_the_home_names_only_gateway_devices(tmp_path: Path) -> None:
    text = f"""\
gateway_id: box
data_dir: {tmp_path}
store: {{path: {tmp_path / "store.db"}}}
devices:
  - {{protocol: modbus, id: meter, template: meter-3ph, host: 127.0.0.1}}
home:
  meter: meter
  site: {{latitude: 52, longitude: 5}}
  prices: {{file: {tmp_path / "prices.yaml"}}}
  devices:
    - {{kind: pv, id: roof, peak_w: 3000}}
"""
    with pytest.raises(ConfigError) as err:
        parse_config(text, GatewayConfig, "gateway.yaml")
    assert "gateway.yaml:1: (top level)" in str(err.value)
    assert "home: device 'roof' is not among the gateway's devices (meter)" in str(err.value)
    ok = parse_config(text.replace("id: roof", "id: meter"), GatewayConfig, "gateway.yaml")
    assert ok.home is not None and ok.home.meter == "meter"
