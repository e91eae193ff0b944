"""The one clock of a process: real time, or simulated time running faster than real time.

Simulated homes and their gateways agree on time without talking to each other: both compute
`start + speed * (wall_now - anchor)` from the same three numbers, given to both at start-up.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Protocol


class Clock(Protocol):
    """What every component needs from time: the current instant and a way to wait."""

    def now(self) -> float:
        """Seconds since the Unix epoch, in this clock's time."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of this clock's time."""
        ...

    async def sleep_until(self, instant: float) -> None:
        """Wait until `now()` reaches `instant` (returns at once if it has)."""
        ...


class SystemClock:
    """Real time."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    async def sleep_until(self, instant: float) -> None:
        await asyncio.sleep(max(0.0, instant - self.now()))


@dataclass(frozen=True)
class ScaledClock:
    """Simulated time: `start` at wall time `anchor`, `speed` times faster than real time."""

    start: float
    speed: float
    anchor: float

    def __post_init__(self) -> None:
        if self.speed <= 0:
            raise ValueError(f"clock speed must be positive, got {self.speed}")

    def now(self) -> float:
        return self.start + (time.time() - self.anchor) * self.speed

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)

    async def sleep_until(self, instant: float) -> None:
        await asyncio.sleep(max(0.0, instant - self.now()) / self.speed)


PTU_SECONDS = 900
"""One programme time unit (USEF): 15 minutes, 96 a day."""


def ptu_start(instant: float) -> float:
    """The start of the PTU that holds `instant` (PTUs are aligned to the Unix epoch, i.e. UTC)."""
    return instant - (instant % PTU_SECONDS)
