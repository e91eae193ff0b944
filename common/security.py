"""The security event log: every refusal (bad certificate, bad signature, replay, denied
message, tampered update, wrong password) is one event, appended to a local file in which each
line carries the hash of the line before, so an edit or a deletion inside the log shows. The
forwarder sends events on to the cloud from a sequence number on."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("homeflex.security")
GENESIS = "0" * 64


@dataclass(frozen=True)
class Event:
    seq: int
    ts: float
    kind: str  # e.g. "bad-signature", "replay", "denied", "unknown-ca"
    source: str  # who or where it came from: an XMPP address, a peer address, a file
    detail: str
    fields: dict[str, Any] = field(default_factory=dict)
    prev: str = GENESIS
    hash: str = ""

    def body(self) -> bytes:
        """What the hash covers: everything but the hash, canonically serialised."""
        d = asdict(self)
        del d["hash"]
        return json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _digest(event: Event) -> str:
    return hashlib.sha256(event.body()).hexdigest()


class SecurityLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        last = _last_event(path)
        self._seq = last.seq if last else 0
        self._prev = last.hash if last else GENESIS

    def record(self, kind: str, source: str, detail: str, **fields: Any) -> Event:
        """Append one event (flushed to disk before returning) and log it."""
        with self._lock:
            event = Event(self._seq + 1, time.time(), kind, source, detail, fields, self._prev)
            event = Event(**{**asdict(event), "hash": _digest(event)})
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(asdict(event), ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
            self._seq, self._prev = event.seq, event.hash
        log.warning("security: %s from %s: %s", kind, source, detail)
        return event

    def events(self, after_seq: int = 0) -> list[Event]:
        return [e for e in read_events(self.path) if e.seq > after_seq]


def read_events(path: Path) -> list[Event]:
    if not path.is_file():
        return []
    events = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            events.append(Event(**json.loads(line)))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}:{n}: not a security event ({exc})") from None
    return events


def _last_event(path: Path) -> Event | None:
    events = read_events(path)
    return events[-1] if events else None


def verify_chain(events: list[Event], prev: str = GENESIS) -> list[str]:
    """What is wrong with the chain (empty when intact): an edited event no longer matches its
    hash, a removed or reordered one breaks the link to the next."""
    problems = []
    expected_seq = events[0].seq if events else 0
    for e in events:
        if e.seq != expected_seq:
            problems.append(f"event {e.seq}: expected sequence number {expected_seq}")
        if e.prev != prev:
            problems.append(f"event {e.seq}: does not follow the event before it")
        if _digest(e) != e.hash:
            problems.append(f"event {e.seq}: its content was changed after it was written")
        prev, expected_seq = e.hash, e.seq + 1
    return problems
