"""The uplink: sends the store's outbox to the cloud over MQTT, signed batches at QoS 1.

Each round sends, first, what arrived since the session began (`current`: oldest first from the
session's head) and then fills the remaining in-flight slots with the backlog, oldest first. So
after an outage the backlog drains while the newest readings still leave within a round. A
batch's items leave the outbox only when the ingest has stored them and said so on
`homeflex/cloud/ack/<box>` (the broker's PUBACK only says the broker has it; the broker keeps
nothing on disk). A batch not acknowledged within `ack_timeout_s` is sent again in a new batch;
the ingest takes (box, seq) once, so a repeat only costs bandwidth.

The store work runs on the gateway's store thread, MQTT on paho's thread and a worker thread:
the event loop (and the control loop on it) only schedules.

Without the owner's consent (`consent()` false, edge/preferences.py) nothing is sent: the
uplink disconnects and empties the outbox, so what was recorded meanwhile never leaves.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from homeflex.clock import Clock
from homeflex.edge.config import TelemetryConfig
from homeflex.edge.store import Store
from homeflex.mqtt_client import MqttError, MqttLink
from homeflex.pki.bundle import Credentials
from homeflex.security import SecurityLog
from homeflex.telemetry import (
    Ack,
    Batch,
    PtuItem,
    ReadingItem,
    ack_topic,
    new_batch_id,
    seal,
    telemetry_topic,
)

log = logging.getLogger(__name__)
MAX_BACKOFF_S = 60.0
THIN_EVERY_S = 60.0

StoreCall = Callable[..., Awaitable[Any]]


@dataclass
class InFlight:
    seqs: list[int]
    deadline: float  # time.monotonic()


@dataclass
class UplinkStats:
    batches: int = 0
    items_acked: int = 0
    thinned: int = 0
    last_error: str | None = None
    outbox: int = 0
    connected: bool = False
    withheld: bool = False  # the owner does not consent to telemetry


class Uplink:
    def __init__(
        self,
        cfg: TelemetryConfig,
        credentials: Path,
        store: Store,
        db: StoreCall,
        clock: Clock,
        poll_s: dict[str, float],
        security: SecurityLog | None = None,
        consent: Callable[[], bool] = lambda: True,
    ) -> None:
        self.cfg = cfg
        self.consent = consent
        self.credentials = credentials
        self.store = store
        self._db = db
        self.clock = clock
        self.poll_s = poll_s
        self.security = security
        self.stats = UplinkStats()
        self._in_flight: dict[str, InFlight] = {}
        self._acks: asyncio.Queue[Ack] = asyncio.Queue()
        self._head = 0
        self._last_thin = 0.0

    async def run(self) -> None:
        """For ever: connect, send, and on any MQTT failure wait (backing off) and reconnect.
        One warning per outage; never an exception out of here."""
        backoff = 1.0
        while True:
            if not self.consent():
                if not self.stats.withheld:
                    log.info("telemetry: withheld by the owner; nothing leaves the box")
                self.stats.withheld, self.stats.outbox = True, 0
                await self._db(self.store.outbox_clear)
                await asyncio.sleep(self.cfg.every_s)
                continue
            self.stats.withheld = False
            link: MqttLink | None = None
            try:
                link = await asyncio.to_thread(self._connect, asyncio.get_running_loop())
                if self.stats.last_error is not None:
                    log.info("telemetry: %s reachable again", link.where)
                self.stats.last_error, self.stats.connected, backoff = None, True, 1.0
                await self._session(link)
            except (MqttError, OSError, ValueError) as exc:
                if self.stats.last_error is None:
                    log.warning("telemetry: %s; outbox keeps the data, retrying", exc)
                self.stats.last_error = str(exc)
            finally:
                self.stats.connected = False
                if link is not None:
                    await asyncio.to_thread(link.close)
            await self._upkeep()  # the bound holds through an outage too
            await asyncio.sleep(backoff)
            backoff = min(MAX_BACKOFF_S, backoff * 2)

    def _connect(self, loop: asyncio.AbstractEventLoop) -> MqttLink:
        creds = Credentials.load(self.credentials)  # read each time: renewal replaces the files
        link = MqttLink(creds, self.cfg.host, self.cfg.port, security=self.security)
        link.connect()
        self.box = link.identity.name
        self._key, self._chain = creds.key(), creds.chain()

        def on_ack(topic: str, payload: bytes) -> None:
            try:
                ack = Ack.decode(payload)
            except ValueError as exc:
                log.warning("telemetry: unreadable acknowledgement on %s: %s", topic, exc)
                return
            loop.call_soon_threadsafe(self._acks.put_nowait, ack)

        try:
            link.subscribe(ack_topic(self.box), on_ack)
        except MqttError:
            link.close()
            raise
        return link

    async def _session(self, link: MqttLink) -> None:
        # what is in flight from an earlier session may never be acknowledged: send it again
        self._in_flight.clear()
        self._head = await self._db(self.store.outbox_last_seq)
        while self.consent():
            if not link.connected:
                raise MqttError(f"{link.where}: connection lost")
            await self._take_acks()
            await self._upkeep()
            sent = await self._send_round(link)
            if len(self._in_flight) >= self.cfg.in_flight or not sent:
                await self._wait_ack(self.cfg.every_s)

    async def _send_round(self, link: MqttLink) -> int:
        """Current data first, then the backlog while there are free slots; batches sent."""
        sent = 0
        if len(self._in_flight) < self.cfg.in_flight:
            items = await self._take(after=self._head)
            if len(items[0]) + len(items[1]):
                self._head = max(i.seq for part in items for i in part)
                await self._publish(link, *items)
                sent += 1
        while len(self._in_flight) < self.cfg.in_flight:
            items = await self._take(after=0, upto=self._head)
            if not len(items[0]) + len(items[1]):
                break
            await self._publish(link, *items)
            sent += 1
        return sent

    async def _take(
        self, *, after: int, upto: int | None = None
    ) -> tuple[list[ReadingItem], list[PtuItem]]:
        skip = [(min(f.seqs), max(f.seqs)) for f in self._in_flight.values()]
        result: tuple[list[ReadingItem], list[PtuItem]] = await self._db(
            lambda: self.store.outbox_take(self.cfg.batch_max, after=after, upto=upto, skip=skip)
        )
        return result

    async def _publish(
        self, link: MqttLink, readings: list[ReadingItem], ptus: list[PtuItem]
    ) -> None:
        devices = {r.device for r in readings}
        batch = Batch(
            box=self.box,
            id=new_batch_id(),
            sent=time.time(),
            clock=self.clock.now(),
            readings=readings,
            ptus=ptus,
            poll_s={d: s for d, s in self.poll_s.items() if d in devices},
        )
        topic = telemetry_topic(self.box)
        frame = await asyncio.to_thread(seal, batch, topic, self._key, self._chain)
        seqs = [r.seq for r in readings] + [p.seq for p in ptus]
        self._in_flight[batch.id] = InFlight(seqs, time.monotonic() + self.cfg.ack_timeout_s)
        try:
            await asyncio.to_thread(link.publish, topic, frame, 1)
        except MqttError:
            del self._in_flight[batch.id]
            raise
        self.stats.batches += 1

    async def _wait_ack(self, wait_s: float) -> None:
        try:
            ack = await asyncio.wait_for(self._acks.get(), wait_s)
        except TimeoutError:
            return
        self._acks.put_nowait(ack)  # handled with the others in _take_acks

    async def _take_acks(self) -> None:
        done: list[int] = []
        while not self._acks.empty():
            ack = self._acks.get_nowait()
            flight = self._in_flight.get(ack.batch)
            if flight is None:
                continue  # a batch of an earlier session, or answered already
            del self._in_flight[ack.batch]
            done += flight.seqs
        if done:
            self.stats.items_acked += await self._db(self.store.outbox_delete, done)
        now = time.monotonic()
        for batch_id, flight in list(self._in_flight.items()):
            if flight.deadline <= now:
                del self._in_flight[batch_id]
                log.warning("telemetry: batch %s not acknowledged in time; resending", batch_id)

    async def _upkeep(self) -> None:
        """Keep the outbox under its bound (at most once a minute) and its size in the stats."""
        now = time.monotonic()
        if now - self._last_thin < THIN_EVERY_S:
            return
        self._last_thin = now
        self.stats.outbox = await self._db(self.store.outbox_size)
        if self.stats.outbox > self.cfg.outbox_max_rows:
            removed = await self._db(self.store.outbox_thin, self.cfg.outbox_max_rows)
            self.stats.thinned += removed
            log.warning(
                "telemetry: outbox over %d rows; %d old raw readings thinned",
                self.cfg.outbox_max_rows,
                removed,
            )
