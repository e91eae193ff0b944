"""The simulator's clock: simulated time that runs `speed` times faster than the wall clock.

Uses the same formula as the gateway's clock, so both agree on time given the same three numbers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

PTU_S = 900
"""One programme time unit: 15 minutes, aligned to the Unix epoch."""


@dataclass(frozen=True)
class SimClock:
    """`start` (simulated Unix seconds) at wall time `anchor`, advancing `speed` times real time."""

    start: float
    speed: float
    anchor: float

    def __post_init__(self) -> None:
        if self.speed <= 0:
            raise ValueError(f"clock speed must be positive, got {self.speed}")

    def now(self) -> float:
        return self.start + self.speed * (time.time() - self.anchor)

    def wall_delay_until(self, instant: float) -> float:
        """Real seconds from now until simulated time reaches `instant` (0 if it has)."""
        return max(0.0, (instant - self.now()) / self.speed)


def first_step(start: float, step_s: int) -> float:
    """The step boundary at or before `start`: steps are aligned to the epoch, so every PTU
    boundary is a step boundary (step_s divides 60)."""
    return start - (start % step_s)
