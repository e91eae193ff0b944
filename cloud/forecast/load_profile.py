"""A standard household load profile, scaled to a site's yearly consumption.

Shaped like the published standard profiles for households (a low night, a morning rise, a
midday plateau, the evening peak the highest; weekends later in the morning and fuller at
midday), but our own curve: a base plus a few smooth bumps per day type, in local time. Each
day type is normalised to a mean of 1, so a day's energy is set by the day factor alone:
annual_kwh / 365 × `day_factor(day)`, a seasonal cosine (long dark evenings and more time
indoors in winter: +20 % on 1 January, −20 % on 2 July) whose 365 values sum to 365, so a
year of forecasts sums to annual_kwh. A leap year's extra day adds its own share on top.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime

from homeflex.clock import PTU_SECONDS
from homeflex.cloud.forecast.pv import PTUS, day_start
from homeflex.cloud.forecast.site import Site

SEASONAL_AMPLITUDE = 0.2  # the day factor runs from 0.8 (2 July) to 1.2 (1 January)
HOURS_PER_PTU = PTU_SECONDS / 3600

# (local hour of the bump's centre, its height relative to the base, its width in hours)
Bumps = tuple[tuple[float, float, float], ...]
WEEKDAY: Bumps = ((7.25, 0.9, 0.8), (12.5, 0.45, 1.5), (18.75, 1.9, 1.5), (21.5, 0.7, 1.1))
WEEKEND: Bumps = ((9.5, 0.9, 1.4), (13.0, 0.9, 1.7), (18.5, 1.7, 1.6), (21.5, 0.6, 1.2))


def _shape(bumps: Bumps) -> tuple[float, ...]:
    """Relative power at the middle of each of the day's 96 local PTUs, mean 1. The bumps wrap
    around midnight, so the late evening runs smoothly into the night."""
    raw = []
    for i in range(PTUS):
        h = (i + 0.5) * HOURS_PER_PTU
        value = 1.0
        for centre, height, width in bumps:
            d = abs(h - centre)
            d = min(d, 24 - d)
            value += height * math.exp(-0.5 * (d / width) ** 2)
        raw.append(value)
    mean = sum(raw) / len(raw)
    return tuple(v / mean for v in raw)


SHAPES = {"weekday": _shape(WEEKDAY), "weekend": _shape(WEEKEND)}


def day_factor(day: date) -> float:
    """The day's energy relative to the yearly mean day (0.8 … 1.2)."""
    n = day.timetuple().tm_yday - 1
    return 1 + SEASONAL_AMPLITUDE * math.cos(2 * math.pi * n / 365)


def load_kw(site: Site, day: date) -> list[float]:
    """Mean household load (kW) per PTU of the UTC `day`. Each PTU takes the shape and day factor
    of its local date, so with a UTC offset the UTC day's energy mixes two local days."""
    start = day_start(day)
    offset_s = site.utc_offset_h * 3600
    mean_day_kw = site.annual_kwh / 365 / 24
    out = []
    for i in range(PTUS):
        local = datetime.fromtimestamp(start + i * PTU_SECONDS + offset_s, UTC)
        kind = "weekend" if local.weekday() >= 5 else "weekday"
        j = (local.hour * 3600 + local.minute * 60) // PTU_SECONDS
        kw = mean_day_kw * day_factor(local.date()) * SHAPES[kind][j]
        out.append(round(kw, 4))
    return out
