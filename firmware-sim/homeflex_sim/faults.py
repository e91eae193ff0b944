"""Faults a device can be told to show, at start (home file) or at run time (control channel)."""

from __future__ import annotations

from dataclasses import dataclass

MODBUS_FAULTS = (
    "timeout",
    "exception",
    "nan",
    "out_of_range",
    "drop",
    "single_client",
    "ignore_writes",
    "spike",
)
"""timeout: no response · exception: answer every request with exception `code` · nan: float
registers read NaN · out_of_range: measurements show the "not available" pattern (integers) or an
absurd value (floats) · drop: close the client's connection on its next request · single_client:
the server keeps one TCP client and closes any further connection at once · ignore_writes:
writes are acknowledged but not applied (a device in local-control mode) · spike: the active
power registers (power_w and any per-phase power_lN_w) show the true value + SPIKE_W for exactly
one read request that covers them, then the fault clears itself (one outlier sample; energy
counters and the physics are untouched)."""

SPIKE_W = 20_000.0
"""What the `spike` fault adds to each active power register. Fixed: `code` is an exception code
(1..255), not a power."""


@dataclass(frozen=True)
class Fault:
    kind: str
    code: int = 4

    def __post_init__(self) -> None:
        if self.kind not in MODBUS_FAULTS:
            raise ValueError(
                f"unknown fault {self.kind!r}; use one of {', '.join(MODBUS_FAULTS)} or clear"
            )
        if not 1 <= self.code <= 255:
            raise ValueError(f"exception code {self.code} is outside 1..255")
