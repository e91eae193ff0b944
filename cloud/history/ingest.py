"""The ingest: takes the boxes' telemetry batches off the broker into the history.

The front (this class) holds the MQTT session, the security log and the counters; handlers
(cloud/history/handler.py) check and store the batches, in this process or in worker processes
(cloud/history/workers.py). Batches go from paho's network thread through a bounded queue to one
dispatching thread per handler, which takes whatever has arrived (up to GROUP batches) and has
its handler store it in one transaction: a commit per batch was half the cost of a small batch.
Each refusal is a security event (`telemetry-<code>`) and costs only that batch; a batch stored
is acknowledged to its box on `homeflex/cloud/ack/<box>`, and the box deletes its items then.
When the handlers fall behind, the full queue holds paho's thread and the broker queues for us
(back-pressure), so memory here stays bounded.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
from collections.abc import Sequence
from typing import Protocol

from homeflex.cloud.history.handler import Accepted, Outcome
from homeflex.cloud.history.store import HistoryStore, Tampering
from homeflex.mqtt_client import ALL_BOXES, MqttLink, box_of
from homeflex.security import SecurityLog
from homeflex.telemetry import Ack, ack_topic

log = logging.getLogger(__name__)
GROUP = 200  # batches stored in one transaction at most
QUEUE = 5_000  # batches waiting for the handlers at most


class Handler(Protocol):
    def handle_many(self, messages: Sequence[tuple[str, bytes]]) -> list[Outcome]: ...

    def close(self) -> None: ...


class Ingest:
    def __init__(self, handlers: Sequence[Handler], security: SecurityLog) -> None:
        """`handlers` work side by side, each on its own thread once attached; `handle` and
        `handle_many` without one use the first."""
        if not handlers:
            raise ValueError("the ingest needs at least one handler")
        self.handlers = list(handlers)
        self.security = security
        self.link: MqttLink | None = None
        self.batches = 0
        self.items_new = 0
        self.duplicates = 0
        self.refused: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()  # the counters
        self._queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue(QUEUE)
        self._threads: list[threading.Thread] = []

    def attach(self, link: MqttLink) -> None:
        """Subscribe to every box's telemetry on a connected link and start the dispatchers.
        Make the link with `max_inflight=0`: acknowledgements must leave at the rate batches
        arrive, and paho's default of 20 unanswered QoS 1 messages queues them until boxes
        time out."""
        self.link = link
        if not self._threads:
            for n, handler in enumerate(self.handlers):
                thread = threading.Thread(
                    target=self._dispatch, args=(handler,), name=f"ingest-{n}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
        link.subscribe(ALL_BOXES.replace("#", "telemetry"), self._on_message)

    def close(self) -> None:
        """Store what is queued, stop the dispatchers and close the handlers."""
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()
        self._threads = []
        for handler in self.handlers:
            handler.close()

    def _on_message(self, topic: str, payload: bytes) -> None:
        self._queue.put((topic, payload))

    def _dispatch(self, handler: Handler) -> None:
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
                    self.handle_many(group, handler)
                except Exception:  # a store error loses no data: the boxes send again
                    log.exception("ingest: %d batches could not be stored", len(group))
            if item is None:
                return

    def handle(self, topic: str, payload: bytes) -> Ack | None:
        """Check and store one batch; its acknowledgement, or None when it was refused."""
        return self.handle_many([(topic, payload)])[0]

    def handle_many(
        self, messages: Sequence[tuple[str, bytes]], handler: Handler | None = None
    ) -> list[Ack | None]:
        """Have `handler` check and store the batches; record each refusal, acknowledge each
        stored batch (published when attached); None for each refused."""
        outcomes = (handler or self.handlers[0]).handle_many(messages)
        acks: list[Ack | None] = []
        for (topic, _), outcome in zip(messages, outcomes, strict=True):
            if isinstance(outcome, Accepted):
                acks.append(outcome.ack)
                with self._lock:
                    self.batches += 1
                    self.items_new += outcome.ack.new
                    self.duplicates += outcome.duplicates
                continue
            acks.append(None)
            with self._lock:
                self.refused[outcome.code] += 1
            self.security.record(
                f"telemetry-{outcome.code}", f"mqtt {topic}", outcome.detail, **outcome.fields
            )
            log.warning("telemetry refused on %s: %s: %s", topic, outcome.code, outcome.detail)
        if self.link is not None:
            for (topic, _), ack in zip(messages, acks, strict=True):
                box = box_of(topic)
                if ack is not None and box is not None:
                    # not awaited: paho resends it after a reconnect, and a lost one only means
                    # the box sends the items again, which the history counts as duplicates
                    self.link.client.publish(ack_topic(box), ack.encode(), qos=1)
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
