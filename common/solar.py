"""The sun's position and the clear-sky irradiance it gives: pure functions that the gateway's
own PV forecast (edge/planner/forecast.py) and the aggregator platform's forecaster
(cloud/forecast/) both use, kept here because the cloud may not reach into the gateway's
planner for them."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from homeflex.clock import PTU_SECONDS

SOLAR_CONSTANT_W_M2 = 1353.0  # Meinel's value, the one his attenuation formula was fitted with
DIFFUSE_FACTOR = 1.1  # clear-sky global ≈ 1.1 × beam on the plane: the sky adds about 10 %


def sun_elevation_deg(instant: float, latitude: float, longitude: float) -> float:
    """Solar elevation (degrees) from the usual declination / equation-of-time approximations;
    within about a degree, plenty for a PV shape."""
    t = datetime.fromtimestamp(instant, UTC)
    day = t.timetuple().tm_yday
    g = 2 * math.pi / 365 * (day - 1 + (t.hour - 12) / 24)
    decl = (
        0.006918
        - 0.399912 * math.cos(g)
        + 0.070257 * math.sin(g)
        - 0.006758 * math.cos(2 * g)
        + 0.000907 * math.sin(2 * g)
    )
    eot = 229.18 * (
        0.000075
        + 0.001868 * math.cos(g)
        - 0.032077 * math.sin(g)
        - 0.014615 * math.cos(2 * g)
        - 0.040849 * math.sin(2 * g)
    )
    minutes = t.hour * 60 + t.minute + t.second / 60 + eot + 4 * longitude
    hour_angle = math.radians(minutes / 4 - 180)
    lat = math.radians(latitude)
    sin_el = math.sin(lat) * math.sin(decl) + math.cos(lat) * math.cos(decl) * math.cos(hour_angle)
    return math.degrees(math.asin(max(-1.0, min(1.0, sin_el))))


def clear_sky_beam(sin_elevation: float) -> float:
    """Clear-sky beam irradiance on a horizontal plane as a fraction of the solar constant:
    Meinel's attenuation by the air mass 1/sin(elevation); 0 with the sun below the horizon.
    The air mass is capped at 50 (elevation ≈ 1.1°), where the formula stops meaning much."""
    if sin_elevation <= 0:
        return 0.0
    air_mass = 1 / max(sin_elevation, 0.02)
    return float(sin_elevation * 0.7 ** (air_mass**0.678))  # float ** float is Any to mypy


def clear_sky_ghi_w_m2(instant: float, latitude: float, longitude: float) -> float:
    """Clear-sky global irradiance on a horizontal plane (W/m²) at `instant`."""
    sin_el = math.sin(math.radians(sun_elevation_deg(instant, latitude, longitude)))
    return DIFFUSE_FACTOR * SOLAR_CONSTANT_W_M2 * clear_sky_beam(sin_el)


def clear_sky_shape(start: float, ptus: int, latitude: float, longitude: float) -> list[float]:
    """Relative clear-sky PV output per PTU (0..1), from the sun's elevation mid-PTU."""
    shape = [
        clear_sky_beam(
            math.sin(
                math.radians(
                    sun_elevation_deg(start + (i + 0.5) * PTU_SECONDS, latitude, longitude)
                )
            )
        )
        for i in range(ptus)
    ]
    peak = max(shape, default=0.0)
    return [s / peak if peak else 0.0 for s in shape]
