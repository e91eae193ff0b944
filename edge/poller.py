"""Polls one device at its interval, hands the readings on, and keeps its health.

A failing device backs off (never faster than its interval, at most `MAX_BACKOFF_POLLS` intervals
apart) and is logged when it fails and when it recovers, not at every attempt.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from homeflex.clock import Clock
from homeflex.edge.devices.capabilities import Device, DeviceError, Reading

log = logging.getLogger(__name__)

MAX_BACKOFF_POLLS = 16


@dataclass
class DeviceHealth:
    device: str
    state: str = "starting"  # starting | ok | failing
    last_ok: float | None = None
    last_error: str | None = None
    failures: int = 0
    polls: int = 0
    problems: list[str] = field(default_factory=list)


class Poller:
    def __init__(
        self, device: Device, interval_s: float, clock: Clock, sink: Callable[[list[Reading]], None]
    ) -> None:
        self.device = device
        self.interval_s = interval_s
        self.clock = clock
        self.sink = sink
        self.health = DeviceHealth(device.id)

    async def run(self) -> None:
        while True:
            await self.poll_once()
            await self.clock.sleep_until(self._next_due())

    def _next_due(self) -> float:
        """Polls fall half an interval after multiples of the interval (aligned to the epoch):
        devices tend to refresh on whole seconds and minutes, and reading at the very instant of a
        refresh would see the old or the new values by chance. A failing device waits longer."""
        step = self.interval_s * float(min(MAX_BACKOFF_POLLS, 2**self.health.failures))
        now = self.clock.now() - self.interval_s / 2
        return now - (now % step) + step + self.interval_s / 2

    async def poll_once(self) -> None:
        h = self.health
        h.polls += 1
        try:
            readings = await self.device.poll()
        except DeviceError as exc:
            h.failures += 1
            h.last_error = str(exc)
            if h.state != "failing":
                log.error("device %s failing: %s (retrying with backoff)", self.device.id, exc)
            h.state = "failing"
            return
        except Exception as exc:  # a driver bug must not stop the other devices or the daemon
            h.failures += 1
            h.last_error = f"internal error: {exc!r}"
            log.exception("device %s: unexpected error while polling", self.device.id)
            h.state = "failing"
            return
        if h.state == "failing":
            log.info("device %s recovered after %d failed polls", self.device.id, h.failures)
        h.state, h.failures, h.last_ok = "ok", 0, self.clock.now()
        h.problems = list(getattr(self.device, "problems", []))
        if readings:
            self.sink(readings)
