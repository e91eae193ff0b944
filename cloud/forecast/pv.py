"""PV power per PTU under a clear sky: the panels' peak power times the clear-sky irradiance
(homeflex.solar) over the 1,000 W/m² of standard test conditions, less the usual losses.

The plane is horizontal: the forecaster knows no tilt or orientation. With the sun high in
summer a horizontal plane receives about as much as a tilted south-facing one; in winter it
receives less, so the forecast errs low, the safe side for planning. Clouds are not forecast: a day
the sky is clear is the most the panels give, and the home scales its own forecast to what its
panels delivered (edge/planner/forecast.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime

from homeflex.clock import PTU_SECONDS
from homeflex.cloud.forecast.site import Site
from homeflex.solar import clear_sky_ghi_w_m2

PTUS = 96
STC_W_M2 = 1000.0
PERFORMANCE_RATIO = 0.85  # module temperature, inverter, wiring and soiling losses together


def day_start(day: date) -> float:
    """The UTC instant the day's PTU 0 begins (the messages' days are UTC days)."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def pv_kw(site: Site, day: date) -> list[float]:
    """Mean AC power (kW) per PTU of `day`, from the irradiance mid-PTU; never above `kwp`."""
    start = day_start(day)
    out = []
    for i in range(PTUS):
        ghi = clear_sky_ghi_w_m2(start + (i + 0.5) * PTU_SECONDS, site.latitude, site.longitude)
        out.append(round(min(site.kwp, site.kwp * PERFORMANCE_RATIO * ghi / STC_W_M2), 4))
    return out
