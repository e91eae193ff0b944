"""The replay cache remembers accepted messages across restarts, per sender, until they expire."""

from __future__ import annotations

from pathlib import Path

from homeflex.agents.replay import PRUNE_EVERY_S, ReplayCache


def test_a_message_is_new_once_even_after_a_restart(tmp_path: Path) -> None:
    cache = ReplayCache(tmp_path / "replay.db")
    assert cache.first_time("box-0001", "a" * 32, expires=1_000.0, now=500.0)
    assert not cache.first_time("box-0001", "a" * 32, expires=1_000.0, now=501.0)
    # the same id from another sender is another message (ids are the sender's random choice)
    assert cache.first_time("box-0002", "a" * 32, expires=1_000.0, now=501.0)
    cache.close()
    reopened = ReplayCache(tmp_path / "replay.db")
    assert not reopened.first_time("box-0001", "a" * 32, expires=1_000.0, now=502.0)
    assert len(reopened) == 2
    reopened.close()


def test_expired_entries_are_pruned(tmp_path: Path) -> None:
    cache = ReplayCache(tmp_path / "replay.db")
    for n in range(100):
        assert cache.first_time("agg-1", f"{n:032x}", expires=1_000.0 + n, now=900.0)
    assert cache.prune(now=1_050.0) == 50
    assert len(cache) == 50
    # pruning also happens on its own, at most every PRUNE_EVERY_S of clock time
    assert cache.first_time("agg-1", "f" * 32, expires=5_000.0, now=1_050.0 + PRUNE_EVERY_S)
    assert len(cache) == 1
    cache.close()
