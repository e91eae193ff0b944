"""Outdoor temperature (a daily sinusoid) and cloud cover (a seeded Markov chain per minute)."""

from __future__ import annotations

import math
import random

# Cloud states: fraction of clear-sky irradiance that reaches the panels.
CLOUD_STATES = (1.0, 0.6, 0.2)


class Weather:
    """The weather of one home; deterministic for a given seed and start time."""

    def __init__(
        self,
        *,
        mean_c: float,
        amplitude_c: float,
        cloudiness: float,
        utc_offset_h: float,
        seed: int,
    ) -> None:
        self.mean_c = mean_c
        self.amplitude_c = amplitude_c
        self.utc_offset_h = utc_offset_h
        self._rng = random.Random(f"weather-{seed}")
        # Probability of leaving a state per minute; `cloudiness` (0..1) biases towards clouds.
        self._stay = 0.97
        self._weights = (1.0 - cloudiness, cloudiness * 0.6, cloudiness * 0.4)
        self._state = self._draw()
        self._minute: int | None = None

    def outdoor_temp_c(self, t: float) -> float:
        """Coldest around 05:00 local time, warmest around 15:00."""
        hour = (t / 3600.0 + self.utc_offset_h) % 24.0
        return self.mean_c + self.amplitude_c * math.cos(2 * math.pi * (hour - 15.0) / 24.0)

    def cloud_factor(self, t: float) -> float:
        """Share of clear-sky irradiance at `t`; changes only on whole minutes. Time must not go
        backwards (the chain is advanced one minute at a time)."""
        minute = int(t // 60)
        if self._minute is None:
            self._minute = minute
        while self._minute < minute:
            self._minute += 1
            if self._rng.random() > self._stay:
                self._state = self._draw()
        return CLOUD_STATES[self._state]

    def _draw(self) -> int:
        return self._rng.choices(range(len(CLOUD_STATES)), weights=self._weights)[0]
