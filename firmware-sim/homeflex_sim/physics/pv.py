"""A PV system and its inverter: clear-sky light on the panels, seeded clouds, curtailment."""

from __future__ import annotations

from homeflex_sim.physics.solar import plane_irradiance
from homeflex_sim.physics.weather import Weather

SYSTEM_EFFICIENCY = 0.88  # wiring, temperature, soiling and inverter losses at STC light


class PvInverter:
    """A SimLoad with negative power (it delivers); `export_wh` counts the energy produced."""

    def __init__(
        self,
        *,
        name: str,
        kwp: float,
        rated_w: float,
        tilt: float,
        azimuth: float,
        latitude: float,
        longitude: float,
        weather: Weather,
    ) -> None:
        self.name = name
        self.kwp = kwp
        self.rated_power_w = rated_w
        self.tilt = tilt
        self.azimuth = azimuth
        self.latitude = latitude
        self.longitude = longitude
        self.weather = weather
        self.power_limit_pct = 100.0
        self.available_w = 0.0  # what the panels could deliver without curtailment
        self.power_w = 0.0
        self.export_wh = 0.0

    def set_power_limit_pct(self, value: float) -> None:
        if not 0.0 <= value <= 100.0:
            raise ValueError(f"power limit {value:g} % is outside 0..100")
        self.power_limit_pct = value

    def step(self, t: float, dt: float) -> None:
        poa = plane_irradiance(t + dt / 2, self.latitude, self.longitude, self.tilt, self.azimuth)
        dc = self.kwp * poa * SYSTEM_EFFICIENCY * self.weather.cloud_factor(t)
        self.available_w = min(dc, self.rated_power_w)
        ac = min(self.available_w, self.rated_power_w * self.power_limit_pct / 100.0)
        self.power_w = -ac
        self.export_wh += ac * dt / 3600.0
