"""A clock the test moves by hand (`t`), for code that takes a `homeflex.clock.Clock`."""

from __future__ import annotations


class FakeClock:
    def __init__(self, now: float) -> None:
        self.t = now

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds

    async def sleep_until(self, instant: float) -> None:
        self.t = max(self.t, instant)
