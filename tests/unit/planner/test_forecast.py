"""The home's own forecasts, tested on simulated history."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime

import pytest

from homeflex.edge.planner.forecast import (
    PTUS_PER_DAY,
    base_load_forecast,
    clear_sky_shape,
    pv_forecast,
    resample,
    sun_elevation_deg,
)

BRUSSELS = (50.85, 4.35)
DAY = datetime(2026, 6, 21, tzinfo=UTC).timestamp()


def test_resample_repeats_hourly_and_half_hourly_values() -> None:
    assert resample([0.2, 0.3], 3600) == [0.2] * 4 + [0.3] * 4
    assert resample([1.0, 2.0], 1800) == [1.0, 1.0, 2.0, 2.0]
    with pytest.raises(ValueError, match="not a whole number of 15-minute PTUs"):
        resample([1.0], 600)


def test_sun_elevation_at_solar_noon_on_the_solstice() -> None:
    # Brussels, 21 June: solar noon near 11:45 UTC, elevation 90 - 50.85 + 23.44 = 62.6 degrees
    noon = max(range(0, 86400, 60), key=lambda s: sun_elevation_deg(DAY + s, *BRUSSELS))
    assert abs(noon / 3600 - 11.75) < 0.2
    assert sun_elevation_deg(DAY + noon, *BRUSSELS) == pytest.approx(62.6, abs=0.5)
    assert sun_elevation_deg(DAY, *BRUSSELS) < 0  # midnight


def test_pv_forecast_scales_the_clear_sky_to_what_the_panels_delivered() -> None:
    shape = clear_sky_shape(DAY - 3 * 86400, 3 * PTUS_PER_DAY, *BRUSSELS)
    # three past days of a 5 kW-peak system running at 60 % of clear sky (some clouds)
    history = {DAY - 3 * 86400 + i * 900: 0.6 * 5000 * s for i, s in enumerate(shape)}
    forecast = pv_forecast(DAY, 96, history, *BRUSSELS)
    assert max(forecast) == pytest.approx(0.6 * 5000, rel=0.02)
    assert forecast[0] == 0 and forecast[-1] == 0  # night
    assert pv_forecast(DAY, 96, {}, *BRUSSELS) == [0.0] * 96  # no history nor size: no sun
    # a box just installed: a cautious share of the panels' peak, in the clear-sky shape
    new = pv_forecast(DAY, 96, {}, *BRUSSELS, peak_w=5000)
    assert max(new) == pytest.approx(0.3 * 5000)
    assert new == pytest.approx([0.3 * 5000 * s for s in clear_sky_shape(DAY, 96, *BRUSSELS)])
    # history, where there is some, decides
    assert pv_forecast(DAY, 96, history, *BRUSSELS, peak_w=5000) == forecast


def test_base_load_uses_same_weekday_then_recent_days() -> None:
    rng = random.Random(3)

    def household(instant: float) -> float:
        hour = (instant % 86400) / 3600
        weekday = datetime.fromtimestamp(instant, UTC).weekday()
        evening = 1500 if 17 <= hour < 21 else 0
        return 300 + evening + (800 if weekday >= 5 and 9 <= hour < 12 else 0) + rng.gauss(0, 30)

    history = {
        DAY - d * 86400 + i * 900: household(DAY - d * 86400 + i * 900)
        for d in range(1, 29)
        for i in range(96)
    }
    forecast = base_load_forecast(DAY, 96, history)  # 21 June 2026 is a Sunday
    assert forecast[4 * 18] == pytest.approx(1800, abs=60)  # evening peak
    assert forecast[4 * 10] == pytest.approx(1100, abs=60)  # weekend morning, from Sundays
    weekday = base_load_forecast(DAY + 86400, 96, history)  # Monday
    assert weekday[4 * 10] == pytest.approx(300, abs=60)
    # only two days of history: the last days' mean
    recent = {k: v for k, v in history.items() if k >= DAY - 2 * 86400}
    assert base_load_forecast(DAY, 96, recent)[0] == pytest.approx(300, abs=60)
    assert base_load_forecast(DAY, 2, {}) == [400.0, 400.0]
    assert not any(math.isnan(v) for v in forecast)
