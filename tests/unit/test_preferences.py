"""The owner's choices over the installer's config: applied with the devices' own checks, a
choice that does not fit refused with the device and field, the file kept 0600 and a broken
one left in place with the installer's values in force; the forms read into them."""

from __future__ import annotations

import json
from datetime import date, time
from pathlib import Path

import pytest

from homeflex.edge.home import BatteryConfig, EvConfig, HeatPumpConfig
from homeflex.edge.preferences import (
    Neighbourhood,
    PreferenceError,
    PreferenceFile,
    Preferences,
    apply,
    choice_of,
)
from homeflex.edge.web import forms
from tests.unit.test_home import config


def test_choices_replace_the_installers_values_and_leave_the_rest(tmp_path: Path) -> None:
    home = config(tmp_path)
    prefs = Preferences(devices={"ev": {"ready_by": "06:45", "energy_needed_wh": 22_000},
                                 "bat": {"soc_min_pct": 35}})  # fmt: skip
    mine = apply(home, prefs)
    ev = next(d for d in mine.devices if isinstance(d, EvConfig))
    bat = next(d for d in mine.devices if isinstance(d, BatteryConfig))
    assert (ev.ready_by, ev.energy_needed_wh, ev.max_current_a) == (time(6, 45), 22_000, 16)
    assert (bat.soc_min_pct, bat.max_charge_w) == (35, 5000)
    assert mine.devices[1:] != home.devices[1:]  # the installer's config object is unchanged
    assert next(d for d in home.devices if isinstance(d, BatteryConfig)).soc_min_pct == 20


@pytest.mark.parametrize(
    ("devices", "message"),
    [
        ({"pv": {"peak_w": 1}}, "pv: not a device whose plan the owner can set"),
        ({"ghost": {"soc_min_pct": 1}}, "ghost: not a device whose plan the owner can set"),
        ({"bat": {"soc_min_pct": 120}}, "bat: soc_min_pct: Input should be less than or equal"),
        (
            {"bat": {"soc_min_pct": 5, "max_charge_w": 9}},
            "bat: max_charge_w: Extra inputs are not permitted",
        ),
        # the heat pump's own rule, checked through the config as a file would be
        (
            {"hp": {"comfort": [{"start": "07:00", "t_min_c": 23, "t_max_c": 20}]}},
            "hp: hp: t_min_c[0] = 23.0 is above t_max_c[0] = 20.0",
        ),
    ],
)
def test_a_choice_that_does_not_fit_is_refused_with_device_and_field(
    tmp_path: Path, devices: dict[str, dict[str, float]], message: str
) -> None:
    with pytest.raises(PreferenceError) as exc:
        apply(config(tmp_path), Preferences(devices=devices))
    assert message in str(exc.value)


def test_the_file_is_private_and_a_broken_one_is_kept_and_reported(tmp_path: Path) -> None:
    f = PreferenceFile(tmp_path)
    assert f.load() == Preferences()
    prefs = Preferences(devices={"bat": {"soc_min_pct": 30}},
                        neighbourhood=Neighbourhood(take_part=False))  # fmt: skip
    f.save(prefs)
    assert f.path.stat().st_mode & 0o777 == 0o600
    assert PreferenceFile(tmp_path).load() == prefs
    f.path.write_text('{"devices": {"bat": {"soc_min_pct": 30}},\n "neighbourhood": 7')
    again = PreferenceFile(tmp_path)
    assert again.load() == Preferences()
    assert again.error.endswith("preferences.json: line 2: Expecting ',' delimiter; the "
                                "installer's settings are used until it is fixed")  # fmt: skip
    assert f.path.read_text().startswith('{"devices"')  # left for the owner to mend


def test_the_preferences_form_reads_each_device_and_names_the_field_it_cannot(
    tmp_path: Path,
) -> None:
    devices = config(tmp_path).devices
    form = {"bat.soc_min_pct": "25", "ev.ready_by": "07:15", "ev.energy_kwh": "12,5",
            "hp.band0.start": "06:30", "hp.band0.min": "19.5", "hp.band0.max": "21",
            "hp.band1.start": "", "washer.finish_by": "17:00"}  # fmt: skip
    prefs = forms.preferences(form, devices, Preferences())
    mine = apply(config(tmp_path), prefs)
    hp = next(d for d in mine.devices if isinstance(d, HeatPumpConfig))
    assert [(b.start, b.t_min_c, b.t_max_c) for b in hp.comfort] == [(time(6, 30), 19.5, 21)]
    assert prefs.devices["ev"] == {"ready_by": time(7, 15), "energy_needed_wh": 12_500}
    assert choice_of(next(d for d in mine.devices if d.id == "washer")).model_dump() == {
        "finish_by": time(17, 0)
    }
    for field, value, message in (
        ("ev.ready_by", "7 pm", "ev.ready_by: '7 pm' is not a time of day such as 07:30"),
        ("hp.band0.min", "23", "hp.band0.min: 23 °C is above 21"),
        ("ev.energy_kwh", "-1", "ev.energy_kwh: -1 is outside 0 to 200"),
        ("hp.band0.start", "", "hp.band0.start: give at least one comfort band"),
    ):
        with pytest.raises(forms.FormError) as exc:
            forms.preferences({**form, field: value}, devices, Preferences())
        assert str(exc.value) == message


def test_not_today_skips_today_only_and_past_days_drop_out() -> None:
    today = date(2026, 6, 2)
    before = Neighbourhood(skip_days=[date(2026, 5, 1), date(2026, 6, 9)])
    n = forms.neighbourhood({"take_part": "not-today", "share_plan": "yes"}, before, today)
    assert n.skip_days == [today, date(2026, 6, 9)] and n.take_part and not n.share_telemetry
    assert n.takes_part(today) == "the owner does not take part on 2026-06-02"
    back = forms.neighbourhood({"take_part": "always", "share_plan": "yes"}, n, today)
    assert back.skip_days == [date(2026, 6, 9)] and back.takes_part(today) is None
    never = forms.neighbourhood({"take_part": "never", "share_plan": "yes"}, n, today)
    assert never.takes_part(date(2026, 7, 1)) == "the owner does not take part in the neighbourhood"
    assert json.loads(never.model_dump_json())["take_part"] is False
