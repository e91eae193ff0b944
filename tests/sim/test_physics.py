"""Household physics stepped directly (no servers): conservation, PV, battery, heat pump, EV."""

from __future__ import annotations

import math

import pytest

from homeflex_sim.home import Home
from homeflex_sim.physics.solar import sun_position
from tests.sim.conftest import SUMMER, WINTER, battery, ev, heat_pump, home_spec, pv

DAY_STEPS = 8640  # 10-s steps


def test_meter_counters_are_the_integral_of_all_loads_over_a_day() -> None:
    spec = home_spec(pv(kwp=8.0), battery(), heat_pump(), ev(), phases={"base": 2, "pv": 1})
    home = Home(spec, WINTER)
    bat = home.physics["battery"]
    net_wh = 0.0
    base_wh = 0.0
    for k in range(DAY_STEPS):
        # Exercise the battery both ways so import and export both happen.
        bat.set_setpoint_w(3000.0 if (k // 360) % 2 else -3000.0)
        home.step()
        net_wh += sum(load.power_w for load in home.loads) * home.dt / 3600
        base_wh += home.base.power_w * home.dt / 3600
        m = home.meter
        assert m.power_l1_w + m.power_l2_w + m.power_l3_w == pytest.approx(m.power_w, abs=1e-9)
    m = home.meter
    assert m.import_wh > 1000 and m.export_wh > 100
    assert m.import_wh - m.export_wh == pytest.approx(net_wh, rel=1e-12, abs=1e-9)
    # The same energy from the devices' own counters (independent bookkeeping).
    p = home.physics
    devices_wh = (
        base_wh
        - p["pv"].export_wh
        + p["battery"].import_wh
        - p["battery"].export_wh
        + p["hp"].import_wh
        + p["ev"].import_wh
    )
    assert m.import_wh - m.export_wh == pytest.approx(devices_wh, rel=1e-9)
    assert home.t == WINTER + DAY_STEPS * 10


def test_same_seed_same_day_and_other_seed_differs() -> None:
    def day(seed: int) -> tuple[float, float]:
        home = Home(home_spec(pv(), seed=seed), SUMMER)
        for _ in range(DAY_STEPS):
            home.step()
        return home.meter.import_wh, home.meter.export_wh

    assert day(5) == day(5)
    assert day(5) != day(6)


def test_base_load_night_level_and_minute_changes() -> None:
    home = Home(home_spec(), WINTER)  # utc_offset 1 h: 00:00 UTC is 01:00 local
    powers = []
    for _ in range(6 * 60 * 3):  # 01:00..04:00 local
        home.step()
        powers.append(home.base.power_w)
    mean = sum(powers) / len(powers)
    assert 100 < mean < 250  # night ~150 W at 3500 kWh/a including the fridge
    for minute in range(0, len(powers), 6):
        assert len(set(powers[minute : minute + 6])) == 1  # constant within a simulated minute


def test_pv_is_zero_at_night_and_bounded_by_kwp() -> None:
    home = Home(home_spec(pv(kwp=4.0), weather={"cloudiness": 0.0}), SUMMER)
    inv = home.physics["pv"]
    peak = 0.0
    for _ in range(DAY_STEPS):
        home.step()
        cos_z, _ = sun_position(home.t - 5, 52.0, 5.0)
        if cos_z <= 0:
            assert inv.power_w == 0.0
        peak = max(peak, -inv.power_w)
        assert inv.power_w <= 0.0
    assert 3000 < peak <= 4000  # a clear midsummer day gets close to, never above, 4 kWp
    assert 20_000 < inv.export_wh < 40_000  # 5..10 kWh/kWp on a clear June day


def test_pv_curtailment_caps_output() -> None:
    home = Home(home_spec(pv(kwp=4.0), weather={"cloudiness": 0.0}), SUMMER + 11 * 3600)
    inv = home.physics["pv"]
    inv.set_power_limit_pct(25.0)
    for _ in range(360):
        home.step()
        assert -inv.power_w <= 1000.0 + 1e-9
    assert inv.available_w > 2000  # it could have produced more
    with pytest.raises(ValueError, match=r"outside 0\.\.100"):
        inv.set_power_limit_pct(120)


def test_battery_follows_setpoint_within_limits_and_efficiency() -> None:
    spec = home_spec(
        battery(
            soc_pct=50,
            max_charge_w=4000,
            soc_max_pct=90,
            soc_min_pct=10,
            charge_efficiency=0.9,
            discharge_efficiency=0.8,
        )
    )
    home = Home(spec, WINTER)
    bat = home.physics["battery"]
    bat.set_setpoint_w(2000)
    for _ in range(360):  # one hour at 2 kW
        home.step()
    assert bat.power_w == 2000
    assert bat.import_wh == pytest.approx(2000)
    assert bat.soc_pct == pytest.approx(50 + 2000 * 0.9 / 10000 * 100)  # 68 %
    for _ in range(720):  # until full: stops at soc_max
        home.step()
    assert bat.soc_pct == pytest.approx(90)
    assert bat.power_w == pytest.approx(0, abs=1e-9)
    bat.set_setpoint_w(-4000)
    for _ in range(6 * 360):  # long enough to empty it
        home.step()
    assert bat.soc_pct == pytest.approx(10)
    # Discharged AC energy = cell energy × discharge efficiency.
    assert bat.export_wh == pytest.approx((90 - 10) / 100 * 10000 * 0.8)
    with pytest.raises(ValueError, match="outside"):
        bat.set_setpoint_w(4500)  # above max_charge_w


def test_heat_pump_keeps_room_in_band_in_sg_mode_2() -> None:
    spec = home_spec(
        heat_pump(room_setpoint_c=20.5, hysteresis_c=0.5, room_temp_c=18.0),
        weather={"outdoor_mean_c": 0.0, "outdoor_amplitude_c": 5.0},
    )
    home = Home(spec, WINTER)
    hp = home.physics["hp"]
    for _ in range(8 * 360):  # warm-up from 18 °C
        home.step()
    temps, on_steps = [], 0
    for _ in range(DAY_STEPS):
        home.step()
        temps.append(hp.room_temp_c)
        on_steps += hp.compressor_on > 0
    assert min(temps) >= 19.5 and max(temps) <= 21.8
    assert 0.2 * DAY_STEPS < on_steps < 0.9 * DAY_STEPS  # it cycles
    assert 2.0 < hp.cop < 6.0


def test_heat_pump_modes_and_power_setpoint() -> None:
    home = Home(home_spec(heat_pump(rated_power_w=2000)), WINTER)
    hp = home.physics["hp"]
    hp.set_sg_ready_mode(1)
    home.step()
    assert hp.power_w == 0
    hp.set_sg_ready_mode(4)
    home.step()
    assert hp.power_w == 2000
    hp.set_setpoint_w(800)
    home.step()
    assert hp.power_w == 800  # a nonzero setpoint overrides SG-Ready
    with pytest.raises(ValueError):
        hp.set_sg_ready_mode(5)


def test_ev_charges_when_connected_and_stops_when_full() -> None:
    # Arrives 18:00 local (17:00 UTC) with 50 % of 40 kWh: needs 20 kWh / 0.92 at 11 kW ≈ 2 h.
    home = Home(home_spec(ev(setpoint_a=16)), WINTER + 16 * 3600)
    charger = home.physics["ev"]
    for _ in range(360):
        home.step()
    assert charger.ev_connected == 0 and charger.power_w == 0
    for _ in range(360):  # 17:00..18:00 UTC: car arrives at 17:00
        home.step()
    assert charger.ev_connected == 1
    assert charger.power_w == pytest.approx(16 * 230 * 3)
    for _ in range(3 * 360):
        home.step()
    assert charger.car_soc_pct == pytest.approx(100)
    assert charger.power_w == 0 and charger.ev_connected == 1
    assert charger.import_wh == pytest.approx(20000 / 0.92)
    with pytest.raises(ValueError, match="neither 0"):
        charger.set_setpoint_a(3)


def test_meter_phases_and_voltage_drop() -> None:
    home = Home(home_spec(battery(), phases={"base": 2}), WINTER)
    home.physics["battery"].set_setpoint_w(3000)
    home.step()
    m = home.meter
    assert m.power_l1_w == pytest.approx(1000)
    assert m.power_l2_w == pytest.approx(1000 + home.base.power_w)
    assert m.voltage_l2_v < m.voltage_l1_v < 230.0
    assert math.isclose(m.current_l1_a, 1000 / 230)


def test_single_phase_ev_draws_one_phase_and_the_meter_sees_it_there() -> None:
    home = Home(home_spec(ev(setpoint_a=10), phases={"base": 2, "ev": 3}), WINTER + 17 * 3600)
    home.step()
    charger, m = home.physics["ev"], home.meter
    assert charger.ev_connected == 1
    assert charger.power_w == pytest.approx(10 * 230)
    assert charger.current_a == pytest.approx(10)
    assert m.power_l3_w == pytest.approx(10 * 230)
    assert m.power_l1_w == pytest.approx(0)
