"""The home's own forecasts, for when nobody sends one: PV from a clear-sky curve scaled by what
the panels delivered recently, base load from the home's history (same weekday, recent days).
And resampling of 30- and 60-minute inputs to 15-minute PTUs. The clear-sky maths live in
homeflex.solar, shared with the cloud's forecaster, and are re-exported here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from homeflex.clock import PTU_SECONDS
from homeflex.solar import clear_sky_shape as clear_sky_shape
from homeflex.solar import sun_elevation_deg as sun_elevation_deg

DAY_S = 86_400
PTUS_PER_DAY = DAY_S // PTU_SECONDS


def resample(values: Sequence[float], step_s: int) -> list[float]:
    """Values per `step_s` (900, 1800 or 3600 s) as values per PTU. Prices and mean powers hold
    over their whole step, so each value is repeated, never split."""
    if step_s % PTU_SECONDS or step_s <= 0:
        raise ValueError(f"a step of {step_s} s is not a whole number of 15-minute PTUs")
    k = step_s // PTU_SECONDS
    return [v for v in values for _ in range(k)]


NO_HISTORY_SHARE = 0.3  # of the panels' peak power, at midday, for a box without PV history


def pv_forecast(
    start: float,
    ptus: int,
    history_w: Mapping[float, float],
    latitude: float,
    longitude: float,
    days: int = 3,
    peak_w: float | None = None,
) -> list[float]:
    """PV power per PTU: the clear-sky shape scaled by the ratio of what the panels produced over
    the last `days` days to the clear-sky shape over the same PTUs (persistence of recent weather
    and of the installation's size, orientation and shading). No history (a box just installed):
    `NO_HISTORY_SHARE` of the installer's `peak_w` at the shape's peak, a cautious guess: a plan
    without any sun would also tell the aggregator and the DSO of midday imports that will not
    come; without `peak_w`, zeros."""
    shape = clear_sky_shape(start, ptus, latitude, longitude)
    past_start = start - days * DAY_S
    past_shape = clear_sky_shape(past_start, days * PTUS_PER_DAY, latitude, longitude)
    produced = expected = 0.0
    for i, s in enumerate(past_shape):
        value = history_w.get(past_start + i * PTU_SECONDS)
        if value is not None and s > 0:
            produced += max(0.0, value)
            expected += s
    if not expected:
        return [s * NO_HISTORY_SHARE * (peak_w or 0.0) for s in shape]
    return [s * produced / expected for s in shape]


def base_load_forecast(
    start: float, ptus: int, history_w: Mapping[float, float], default_w: float = 400.0
) -> list[float]:
    """Base load per PTU: the mean of the same PTU on the same weekday of the last four weeks
    where there is history; else the same PTU of the last seven days; else `default_w`."""
    out = []
    for i in range(ptus):
        instant = start + i * PTU_SECONDS
        weekly = [history_w[p] for w in range(1, 5) if (p := instant - w * 7 * DAY_S) in history_w]
        if weekly:
            out.append(sum(weekly) / len(weekly))
            continue
        daily = [history_w[p] for d in range(1, 8) if (p := instant - d * DAY_S) in history_w]
        out.append(sum(daily) / len(daily) if daily else default_w)
    return out
