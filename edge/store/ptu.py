"""Apportioning energy counted between two meter readings to the 15-minute PTUs it was used in."""

from __future__ import annotations

from homeflex.clock import PTU_SECONDS

PTU_MS = PTU_SECONDS * 1000


def ptu_start_ms(ts_ms: int) -> int:
    """The start of the PTU containing `ts_ms` (epoch-aligned, like homeflex.clock.ptu_start)."""
    return ts_ms - ts_ms % PTU_MS


def apportion(t0_ms: int, t1_ms: int, delta: float) -> list[tuple[int, float]]:
    """Split `delta`, assumed accrued at a constant rate over [t0_ms, t1_ms], over the PTUs that
    interval overlaps: a list of (PTU start in ms, share).

    A reading exactly on a PTU boundary closes the PTU before it, so readings on boundaries give
    exact PTU energies. The last share takes the remainder, so the shares sum to `delta` without
    rounding loss.
    """
    if t1_ms <= t0_ms:
        raise ValueError(f"apportion needs t0 < t1, got {t0_ms} .. {t1_ms}")
    span = t1_ms - t0_ms
    shares: list[tuple[int, float]] = []
    given = 0.0
    start = ptu_start_ms(t0_ms)
    while start + PTU_MS < t1_ms:
        part = delta * (start + PTU_MS - max(start, t0_ms)) / span
        shares.append((start, part))
        given += part
        start += PTU_MS
    shares.append((start, delta - given))
    return shares
