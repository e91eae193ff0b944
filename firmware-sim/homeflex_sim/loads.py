"""The contract between household physics and the protocol servers that expose it."""

from __future__ import annotations

from typing import Protocol


class SimLoad(Protocol):
    """Anything behind the meter that draws (positive) or delivers (negative) active power.

    The home advances every load on the same simulated clock, then the meter adds up their
    `power_w`: energy is conserved because the meter measures exactly the sum of the loads.
    """

    name: str

    def step(self, t: float, dt: float) -> None:
        """Advance the physics from simulated time `t` by `dt` seconds; `power_w` is then the
        constant power over [t, t + dt)."""
        ...

    @property
    def power_w(self) -> float: ...
