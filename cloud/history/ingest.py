"""The ingest: takes the boxes' telemetry batches off the broker into the history.

A batch is stored only after `open_batch` (common/telemetry.py) has checked that the
certificate chains to our root, belongs to a home whose name is the topic's box, and signed the
batch. Each refusal is a security event (`telemetry-<code>`) and costs only that batch: the
handler returns and the next message is taken. A batch stored is acknowledged to its box on
`homeflex/cloud/ack/<box>`; the box deletes its items then. Batches are handled on paho's
network thread, one at a time, so a slow disk slows the broker's delivery (back-pressure)
instead of growing a queue here.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable

from homeflex.agents.chains import ChainVerifier
from homeflex.cloud.history.keys import HistoryKeys, Identities
from homeflex.cloud.history.store import HistoryStore, ReplayedBatch, Tampering
from homeflex.mqtt_client import ALL_BOXES, MqttLink, box_of
from homeflex.security import SecurityLog
from homeflex.telemetry import Ack, BatchRefused, ack_topic, open_batch

log = logging.getLogger(__name__)


class Ingest:
    def __init__(
        self,
        store: HistoryStore,
        keys: HistoryKeys,
        identities: Identities,
        verifier: ChainVerifier,
        security: SecurityLog,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.keys = keys
        self.identities = identities
        self.verifier = verifier
        self.security = security
        self.now = now
        self.link: MqttLink | None = None
        self.batches = 0
        self.items_new = 0
        self.duplicates = 0
        self.refused: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def attach(self, link: MqttLink) -> None:
        """Subscribe to every box's telemetry on a connected link. Make the link with
        `max_inflight=0`: acknowledgements must leave at the rate batches arrive, and paho's
        default of 20 unanswered QoS 1 messages queues them until boxes time out and resend."""
        self.link = link
        link.subscribe(ALL_BOXES.replace("#", "telemetry"), self._on_message)

    def _on_message(self, topic: str, payload: bytes) -> None:
        self.handle(topic, payload)

    def handle(self, topic: str, payload: bytes) -> Ack | None:
        """Check and store one batch; its acknowledgement (also published when attached), or
        None when it was refused."""
        with self._lock:
            ack = self._handle(topic, payload)
        if ack is not None and self.link is not None:
            box = box_of(topic)
            assert box is not None  # open_batch accepted the topic
            # not awaited: paho resends it after a reconnect, and a lost one only means the box
            # sends the items again, which the history counts as duplicates
            self.link.client.publish(ack_topic(box), ack.encode(), qos=1)
        return ack

    def apply_retention(self, now: float, raw_days: float, ptu_days: float) -> int:
        """The history's retention, between two batches (the store has one connection)."""
        with self._lock:
            return self.store.apply_retention(now, raw_days, ptu_days)

    def _handle(self, topic: str, payload: bytes) -> Ack | None:
        source = f"mqtt {topic}"
        try:
            batch = open_batch(payload, topic, self.verifier, self.now())
        except BatchRefused as exc:
            self.refused[exc.code] += 1
            self.security.record(f"telemetry-{exc.code}", source, exc.detail, bytes=len(payload))
            log.warning("telemetry refused on %s: %s", topic, exc)
            return None
        pid = self.keys.pid(batch.box)
        self.identities.remember(pid, batch.box)
        try:
            stored = self.store.add(pid, batch, self.now())
        except ReplayedBatch as exc:
            self.refused["replay"] += 1
            self.store.count_replay(pid)
            self.security.record("telemetry-replay", source, str(exc), batch=batch.id)
            return None
        self.batches += 1
        self.items_new += stored.new
        self.duplicates += stored.duplicates
        return Ack(batch.id, stored.new)


class IntegrityWatch:
    """Runs the history's integrity check and raises each new finding as a security event
    (`history-tampered`); a finding stays raised once, not at every check."""

    def __init__(self, store: HistoryStore, security: SecurityLog, source: str) -> None:
        self.store = store
        self.security = security
        self.source = source
        self._raised: set[Tampering] = set()

    def check(self) -> list[Tampering]:
        found = self.store.check_integrity()
        for t in found:
            if t not in self._raised:
                self.security.record(
                    "history-tampered",
                    self.source,
                    f"{t.table} {t.key} of {t.pid}: {t.detail}",
                    pid=t.pid,
                    table=t.table,
                )
                log.error("history integrity: %s %s of %s: %s", t.table, t.key, t.pid, t.detail)
        self._raised = set(found)
        return found
