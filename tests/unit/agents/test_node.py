"""Nodes exchanging real envelopes without XMPP: a message delivered until acknowledged through a
lost message and a lost acknowledgement, handled by the brain once per delivery, a malformed
payload refused with a reason and a security event, and an expiry reported to the brain."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from spade.message import Message

from homeflex.agents.delivery import Deliveries
from homeflex.agents.messages import Ack, Payload, Prices
from homeflex.agents.messenger import Messenger
from homeflex.agents.node import Node, Outgoing
from homeflex.agents.permissions import Permissions
from homeflex.pki.identity import Identity
from homeflex.security import SecurityLog, read_events
from tests.fakeclock import FakeClock
from tests.pki_fixtures import CredsFactory
from tests.unit.agents.conftest import AGG, BOX

PRICES = Prices(round="r1", day=date(2026, 6, 21), import_eur_kwh=[0.3], export_eur_kwh=[0.1],
                answer_by=0)  # fmt: skip


@dataclass
class Recorder:
    """A brain that takes every message, remembers it, and sends what it is told to."""

    seen: list[tuple[str, Payload]] = field(default_factory=list)
    delivered: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    to_send: list[Outgoing] = field(default_factory=list)

    def on_message(self, sender: str, message: Payload, now: float) -> tuple[Ack, list[Outgoing]]:
        self.seen.append((sender, message))
        return Ack(status="ok"), []

    def on_delivered(self, key: str, ack: Ack, now: float) -> list[Outgoing]:
        self.delivered.append(key)
        return []

    def on_failed(self, key: str, now: float) -> list[Outgoing]:
        self.failed.append(key)
        return []

    def on_tick(self, now: float) -> list[Outgoing]:
        out, self.to_send = self.to_send, []
        return out


def node(creds: CredsFactory, who: Identity, tmp: Path, clock: FakeClock, **perms: object) -> Node:
    c = creds(who)
    messenger = Messenger(
        c, Permissions(who, **perms), SecurityLog(tmp / f"{who.name}.log"),  # type: ignore[arg-type]
        tmp / f"{who.name}-replay.db", clock=clock,
    )  # fmt: skip
    return Node(messenger, Deliveries(tmp / f"{who.name}-deliveries.db"), Recorder())


def introduce(a: Node, b: Node) -> None:
    a.messenger.know(list(b.messenger.sender.chain))
    b.messenger.know(list(a.messenger.sender.chain))


def carry(msgs: list[Message], sender: Node, to: Node, now: float) -> list[Message]:
    """Hand SPADE messages over as the XMPP server would (it sets the sender's address)."""
    out = []
    for m in msgs:
        m.sender = sender.messenger.identity.xmpp
        out += to.receive(m, now)
    return out


def pair(creds: CredsFactory, tmp_path: Path) -> tuple[Node, Node, FakeClock]:
    clock = FakeClock(float(int(time.time())))
    agg = node(creds, AGG, tmp_path, clock, homes=frozenset({BOX.name}))
    box = node(creds, BOX, tmp_path, clock, aggregator=AGG.name)
    introduce(agg, box)
    return agg, box, clock


def test_a_lost_message_and_a_lost_ack_still_deliver_once_each(
    creds: CredsFactory, tmp_path: Path
) -> None:
    agg, box, clock = pair(creds, tmp_path)
    brain_a, brain_b = agg.brain, box.brain
    assert isinstance(brain_a, Recorder) and isinstance(brain_b, Recorder)
    brain_a.to_send = [Outgoing(BOX.name, PRICES, key="prices:r1:box")]
    first = agg.tick(clock.t)
    assert len(first) == 1  # sent ... and lost on the way
    clock.t += 1
    assert agg.tick(clock.t) == []  # not yet due again
    clock.t += 1
    second = agg.tick(clock.t)
    acks = carry(second, agg, box, clock.t)  # arrives; its acknowledgement is lost
    assert brain_b.seen == [(AGG.name, PRICES)] and len(acks) == 1
    clock.t += 4
    third = agg.tick(clock.t)
    acks = carry(third, agg, box, clock.t)  # the same message again, in a new envelope
    assert len(brain_b.seen) == 2  # the brain is asked again; handling it is its idempotence
    assert carry(acks, box, agg, clock.t) == []
    assert brain_a.delivered == ["prices:r1:box"] and agg.deliveries.pending() == []
    assert (agg.sent, agg.resent) == (3, 2)
    clock.t += 100
    assert agg.tick(clock.t) == []  # nothing left to send


def test_a_malformed_payload_is_refused_with_why_and_logged(
    creds: CredsFactory, tmp_path: Path
) -> None:
    agg, box, clock = pair(creds, tmp_path)
    wire = agg.messenger.message(BOX.name, "prices", b'{"round":"r1"}')
    (answer,) = carry([wire], agg, box, clock.t)
    assert isinstance(box.brain, Recorder) and box.brain.seen == []
    answer.sender = BOX.xmpp
    opened = agg.messenger.open(answer)
    assert opened is not None and opened.header.type == "ack"
    assert b"refused" in opened.payload and b"prices: day: Field required" in opened.payload
    (event,) = read_events(box.messenger.security.path)
    assert event.kind == "malformed-message" and "prices: day" in event.detail


def test_a_message_never_acknowledged_is_reported_failed(
    creds: CredsFactory, tmp_path: Path
) -> None:
    agg, _, clock = pair(creds, tmp_path)
    assert isinstance(agg.brain, Recorder)
    agg.brain.to_send = [Outgoing(BOX.name, PRICES, key="prices:r1:box", ttl_s=30)]
    sends = 0
    for _ in range(40):
        sends += len(agg.tick(clock.t))
        clock.t += 1
    assert sends == 4  # at 0, 2, 6 and 14 s; the next would be at 30 s, its expiry
    assert agg.brain.failed == ["prices:r1:box"] and agg.failed == 1
