"""Seeded power profiles of what hangs behind a smart plug, and the appliances' programmes."""

from __future__ import annotations

import random

DAY_S = 86400

# Programme energy profiles as (minutes, watts) segments.
WASHING_MACHINE = [
    (5, 100.0),
    (20, 2000.0),
    (65, 150.0),
    (20, 300.0),
    (10, 500.0),
]  # 2 h, ≈1.02 kWh
DISHWASHER = [(10, 50.0), (20, 1800.0), (60, 100.0), (15, 1800.0), (75, 20.0)]  # 3 h, ≈1.18 kWh

DEFAULT_POWER_W = {"fridge": 85.0, "tv": 95.0, "kettle": 2000.0, "constant": 100.0}


class LoadProfile:
    """Power drawn at simulated time `t` (Unix seconds) when the plug is on; changes only on whole
    minutes. `utc_offset_h` places the household's day."""

    def __init__(self, profile: str, power_w: float | None, seed: str, utc_offset_h: float) -> None:
        self.profile = profile
        self.power_w = power_w if power_w is not None else DEFAULT_POWER_W[profile]
        self.offset_s = utc_offset_h * 3600.0
        rng = random.Random(seed)
        self.phase_min = rng.randrange(60)  # the fridge's cycle position at the epoch
        self.kettle_jitter_min = [rng.randrange(20) for _ in range(3)]

    def power(self, t: float) -> float:
        minute = int((t + self.offset_s) // 60)
        minute_of_day = minute % (DAY_S // 60)
        if self.profile == "fridge":
            # 20 minutes of compressor in every hour
            return self.power_w if (minute + self.phase_min) % 60 < 20 else 0.0
        if self.profile == "tv":
            return self.power_w if 18 * 60 <= minute_of_day < 23 * 60 else 1.0  # 1 W standby
        if self.profile == "kettle":
            for hour, jitter in zip((7, 13, 19), self.kettle_jitter_min, strict=True):
                start = hour * 60 + jitter
                if start <= minute_of_day < start + 3:
                    return self.power_w
            return 0.0
        return self.power_w


def programme_minutes(segments: list[tuple[int, float]]) -> list[float]:
    """The programme's power for each of its minutes."""
    return [watts for minutes, watts in segments for _ in range(minutes)]
