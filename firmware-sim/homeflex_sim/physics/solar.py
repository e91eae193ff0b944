"""Where the sun is and how much clear-sky light falls on a tilted panel (NOAA's approximate
solar position and the Haurwitz clear-sky model: good to a few percent, enough for a household)."""

from __future__ import annotations

import math
import time

DIFFUSE_SHARE = 0.15  # share of clear-sky global irradiance that is diffuse


def sun_position(t: float, latitude: float, longitude: float) -> tuple[float, float]:
    """(cos of the zenith angle, azimuth in degrees clockwise from north) at Unix time `t`."""
    tm = time.gmtime(t)
    hour = (t % 86400.0) / 3600.0
    g = 2 * math.pi / 365 * (tm.tm_yday - 1 + (hour - 12) / 24)
    eqtime = 229.18 * (
        0.000075
        + 0.001868 * math.cos(g)
        - 0.032077 * math.sin(g)
        - 0.014615 * math.cos(2 * g)
        - 0.040849 * math.sin(2 * g)
    )
    decl = (
        0.006918
        - 0.399912 * math.cos(g)
        + 0.070257 * math.sin(g)
        - 0.006758 * math.cos(2 * g)
        + 0.000907 * math.sin(2 * g)
        - 0.002697 * math.cos(3 * g)
        + 0.00148 * math.sin(3 * g)
    )
    solar_minutes = hour * 60 + eqtime + 4 * longitude
    ha = math.radians(solar_minutes / 4 - 180)
    lat = math.radians(latitude)
    cos_z = math.sin(lat) * math.sin(decl) + math.cos(lat) * math.cos(decl) * math.cos(ha)
    azimuth = (
        math.degrees(
            math.atan2(math.sin(ha), math.cos(ha) * math.sin(lat) - math.tan(decl) * math.cos(lat))
        )
        + 180.0
    )
    return max(-1.0, min(1.0, cos_z)), azimuth % 360.0


def clear_sky_ghi(cos_z: float) -> float:
    """Global horizontal irradiance under a clear sky, W/m² (Haurwitz)."""
    if cos_z <= 0.01:
        return 0.0
    return 1098.0 * cos_z * math.exp(-0.057 / cos_z)


def plane_irradiance(
    t: float, latitude: float, longitude: float, tilt: float, azimuth: float
) -> float:
    """Clear-sky irradiance on a panel tilted `tilt` degrees facing `azimuth` (180 = south),
    in W/m²."""
    cos_z, sun_az = sun_position(t, latitude, longitude)
    ghi = clear_sky_ghi(cos_z)
    if ghi == 0.0:
        return 0.0
    diffuse = DIFFUSE_SHARE * ghi
    dni = (ghi - diffuse) / cos_z
    sin_z = math.sqrt(1 - cos_z * cos_z)
    tilt_r = math.radians(tilt)
    cos_aoi = cos_z * math.cos(tilt_r) + sin_z * math.sin(tilt_r) * math.cos(
        math.radians(sun_az - azimuth)
    )
    return dni * max(0.0, cos_aoi) + diffuse * (1 + math.cos(tilt_r)) / 2
