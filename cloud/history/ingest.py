"""The ingest: takes the boxes' telemetry batches off the broker into the history.

A batch is stored only after `open_batch` (common/telemetry.py) has checked that the
certificate chains to our root, belongs to a home whose name is the topic's box, and signed the
batch. Each refusal is a security event (`telemetry-<code>`) and costs only that batch: the
handler returns and the next message is taken. A batch stored is acknowledged to its box on
`homeflex/cloud/ack/<box>`; the box deletes its items then. Batches go from paho's network
thread through a bounded queue to one worker, which stores whatever has arrived (up to GROUP
batches) in one transaction: a commit per batch was half the cost of a small batch. When the
worker falls behind, the full queue holds paho's thread and the broker queues for us
(back-pressure), so memory here stays bounded.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence

from homeflex.agents.chains import ChainVerifier
from homeflex.cloud.history.keys import HistoryKeys, Identities
from homeflex.cloud.history.store import HistoryStore, ReplayedBatch, Tampering
from homeflex.mqtt_client import ALL_BOXES, MqttLink, box_of
from homeflex.security import SecurityLog
from homeflex.telemetry import Ack, Batch, BatchRefused, ack_topic, open_batch

log = logging.getLogger(__name__)
GROUP = 200  # batches stored in one transaction at most
QUEUE = 5_000  # batches waiting for the worker at most


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
        self._queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue(QUEUE)
        self._worker: threading.Thread | None = None

    def attach(self, link: MqttLink) -> None:
        """Subscribe to every box's telemetry on a connected link and start the worker. Make
        the link with `max_inflight=0`: acknowledgements must leave at the rate batches arrive,
        and paho's default of 20 unanswered QoS 1 messages queues them until boxes time out."""
        self.link = link
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="ingest", daemon=True)
            self._worker.start()
        link.subscribe(ALL_BOXES.replace("#", "telemetry"), self._on_message)

    def close(self) -> None:
        """Store what is queued and stop the worker."""
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join()
            self._worker = None

    def _on_message(self, topic: str, payload: bytes) -> None:
        self._queue.put((topic, payload))

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            group: list[tuple[str, bytes]] = []
            while item is not None:
                group.append(item)
                if len(group) >= GROUP:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if group:
                try:
                    self.handle_many(group)
                except Exception:  # a store error loses no data: the boxes send again
                    log.exception("ingest: %d batches could not be stored", len(group))
            if item is None:
                return

    def handle(self, topic: str, payload: bytes) -> Ack | None:
        """Check and store one batch; its acknowledgement, or None when it was refused."""
        return self.handle_many([(topic, payload)])[0]

    def handle_many(self, messages: Sequence[tuple[str, bytes]]) -> list[Ack | None]:
        """Check each batch, store the good ones in one transaction, acknowledge each stored
        one (published when attached); None for each refused."""
        with self._lock:
            acks = self._handle_many(messages)
        if self.link is not None:
            for (topic, _), ack in zip(messages, acks, strict=True):
                box = box_of(topic)
                if ack is not None and box is not None:
                    # not awaited: paho resends it after a reconnect, and a lost one only means
                    # the box sends the items again, which the history counts as duplicates
                    self.link.client.publish(ack_topic(box), ack.encode(), qos=1)
        return acks

    def apply_retention(self, now: float, raw_days: float, ptu_days: float) -> int:
        """The history's retention, between two batches (the store has one connection)."""
        with self._lock:
            return self.store.apply_retention(now, raw_days, ptu_days)

    def _handle_many(self, messages: Sequence[tuple[str, bytes]]) -> list[Ack | None]:
        acks: list[Ack | None] = [None] * len(messages)
        opened: list[tuple[int, str, Batch]] = []
        now = self.now()
        for n, (topic, payload) in enumerate(messages):
            try:
                batch = open_batch(payload, topic, self.verifier, now)
            except BatchRefused as exc:
                self.refused[exc.code] += 1
                self.security.record(
                    f"telemetry-{exc.code}", f"mqtt {topic}", exc.detail, bytes=len(payload)
                )
                log.warning("telemetry refused on %s: %s", topic, exc)
                continue
            pid = self.keys.pid(batch.box)
            self.identities.remember(pid, batch.box)
            opened.append((n, pid, batch))
        if not opened:
            return acks
        received = self.now()
        results = self.store.add_many([(pid, batch, received) for _, pid, batch in opened])
        for (n, pid, batch), result in zip(opened, results, strict=True):
            if isinstance(result, ReplayedBatch):
                self.refused["replay"] += 1
                self.store.count_replay(pid)
                self.security.record(
                    "telemetry-replay", f"mqtt {messages[n][0]}", str(result), batch=batch.id
                )
                continue
            self.batches += 1
            self.items_new += result.new
            self.duplicates += result.duplicates
            acks[n] = Ack(batch.id, result.new)
        return acks


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
