"""The household's everyday consumption: a daily profile with morning and evening peaks, minute
noise and a cycling fridge compressor; scaled so a year adds up to the given kWh."""

from __future__ import annotations

import random

# Mean power per local hour relative to the daily mean (night ≈ 0.35 → ~150 W at 3500 kWh/a).
_SHAPE = (
    0.38,
    0.35,
    0.34,
    0.34,
    0.35,
    0.42,
    0.80,
    1.35,
    1.30,
    0.95,
    0.85,
    0.90,
    1.05,
    0.95,
    0.85,
    0.90,
    1.05,
    1.45,
    2.00,
    2.10,
    1.85,
    1.50,
    1.05,
    0.60,
)
_SHAPE_MEAN = sum(_SHAPE) / len(_SHAPE)
FRIDGE_W = 90.0
FRIDGE_ON_S = (600, 900)  # compressor run length, seconds (drawn uniformly)
FRIDGE_OFF_S = (1200, 2100)


class BaseLoad:
    """A SimLoad; its power changes only on whole simulated minutes."""

    def __init__(self, *, name: str, annual_kwh: float, utc_offset_h: float, seed: int) -> None:
        self.name = name
        self.utc_offset_h = utc_offset_h
        self._rng = random.Random(f"base-{seed}")
        fridge_mean = FRIDGE_W * sum(FRIDGE_ON_S) / (sum(FRIDGE_ON_S) + sum(FRIDGE_OFF_S))
        mean_w = annual_kwh * 1000.0 / 8760.0
        if mean_w <= fridge_mean:
            raise ValueError(f"annual_kwh {annual_kwh} is too small for a household with a fridge")
        self._scale = (mean_w - fridge_mean) / _SHAPE_MEAN
        self._minute: int | None = None
        self._fridge_on = False
        self._fridge_until = 0.0
        self._noise = 1.0
        self.fridge_w = 0.0
        self.power_w = 0.0

    def step(self, t: float, dt: float) -> None:
        minute = int(t // 60)
        if minute == self._minute:
            return
        self._minute = minute
        start = minute * 60.0
        if start >= self._fridge_until:
            self._fridge_on = not self._fridge_on if self._fridge_until else True
            low, high = FRIDGE_ON_S if self._fridge_on else FRIDGE_OFF_S
            self._fridge_until = start + 60 * round(self._rng.uniform(low, high) / 60)
        # Multiplicative noise with mean 1, slowly varying (appliances switching on and off).
        self._noise = 0.7 * self._noise + 0.3 * self._rng.uniform(0.4, 1.6)
        self.fridge_w = FRIDGE_W if self._fridge_on else 0.0
        self.power_w = self._profile_w(start) * self._noise + self.fridge_w

    def _profile_w(self, t: float) -> float:
        """The profile interpolated linearly between hour centres."""
        hour = (t / 3600.0 + self.utc_offset_h) % 24.0
        h0 = int(hour - 0.5) % 24
        frac = (hour - 0.5) % 1.0
        return self._scale * (_SHAPE[h0] * (1 - frac) + _SHAPE[(h0 + 1) % 24] * frac)
