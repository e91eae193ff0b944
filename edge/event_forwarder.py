"""Sends the box's security events to the cloud's receiver: everything after the last sequence
number the receiver acknowledged (kept in a small state file), in batches, oldest first. An
outage loses nothing: the events stay in the log and go when the receiver is back."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import aiohttp

from homeflex.pki.bundle import Credentials
from homeflex.pki.trust import client_context
from homeflex.security import Event, SecurityLog

log = logging.getLogger(__name__)
BATCH = 500
BATCH_BYTES = 512 * 1024
MAX_BACKOFF_S = 300.0


def acknowledged(state: Path) -> int:
    try:
        return int(json.loads(state.read_text())["acknowledged"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def batches(events: list[Event]) -> Iterator[list[dict[str, Any]]]:
    """Oldest first, at most BATCH events and BATCH_BYTES of JSON each (under the receiver's
    1 MiB limit, so one long detail never makes a batch that can never be delivered)."""
    batch: list[dict[str, Any]] = []
    size = 0
    for e in events:
        item = asdict(e)
        n = len(json.dumps(item, ensure_ascii=False).encode())
        if batch and (len(batch) == BATCH or size + n > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += n
    if batch:
        yield batch


async def send_pending(security: SecurityLog, url: str, creds_dir: Path, state: Path) -> int:
    """One round: send what is not acknowledged; the new acknowledged seq."""
    done = acknowledged(state)
    pending = security.events(after_seq=done)
    if not pending:
        return done
    tls = client_context(Credentials.load(creds_dir))  # new each round: files get renewed
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for batch in batches(pending):
            async with session.post(f"{url}/security-events", json=batch, ssl=tls) as answer:
                body = await answer.json(content_type=None)
                if answer.status != 200 or not isinstance(body, dict):
                    error = body.get("error") if isinstance(body, dict) else body
                    raise RuntimeError(f"HTTP {answer.status}: {error}")
            done = max(done, min(int(body["stored_up_to"]), batch[-1]["seq"]))
            tmp = state.with_suffix(".tmp")
            tmp.write_text(json.dumps({"acknowledged": done}))
            tmp.replace(state)
    return done


async def forward_events(
    security: SecurityLog, url: str, creds_dir: Path, state: Path, every_s: float = 60.0
) -> None:
    """For ever: a round every `every_s`, backing off (up to 5 min) while the receiver is
    unreachable; one warning per outage, never an exception out of here."""
    wait, failing = every_s, False
    while True:
        try:
            await send_pending(security, url, creds_dir, state)
            if failing:
                log.info("security events: receiver %s reachable again", url)
            wait, failing = every_s, False
        except Exception as exc:  # unreachable, refused, a bad answer: keep them, try later
            if not failing:
                log.warning("security events: cannot forward to %s: %s", url, exc)
            wait, failing = min(MAX_BACKOFF_S, max(wait, every_s) * 2), True
        await asyncio.sleep(wait)
