"""An agent's message handling, apart from how the messages travel.

A `Brain` is what an agent speaks for (a home's planner, the aggregator's market, the DSO's
grid): it gets checked, typed messages and the clock, and answers with messages to send. The
`Node` around it does the rest, the same for every agent: envelopes in (every check of
agents/envelope.py, then the message registry of agents/messages.py; a payload that is not a
valid message is refused with an `ack` that says why, and is a security event), the brain's
acknowledgement back to the sender, its new messages out through `Deliveries` (sent again until
acknowledged, the brain told when one is delivered or has failed), and the periodic `tick`.
The SPADE agent that carries a Node only moves `spade.message.Message`s; tests can move them
between Nodes directly (real envelopes, no XMPP) or over a real XMPP server.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Protocol

from spade.message import Message

from homeflex.agents.delivery import Deliveries
from homeflex.agents.messages import Ack, MessageError, Payload, decode, encode
from homeflex.agents.messenger import Messenger

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outgoing:
    """A message for `to` (an identity name). With a `key` it is delivered until acknowledged
    (the same key again while pending is sent once); without, it is sent once."""

    to: str
    message: Payload
    key: str | None = None
    ttl_s: float = 900.0


class Brain(Protocol):
    def on_message(self, sender: str, message: Payload, now: float) -> tuple[Ack, list[Outgoing]]:
        """A message that is not an acknowledgement: the acknowledgement to send back (handling
        must be idempotent: the same message may come again) and messages to send."""
        ...

    def on_delivered(self, key: str, ack: Ack, now: float) -> list[Outgoing]: ...

    def on_failed(self, key: str, now: float) -> list[Outgoing]:
        """A keyed message expired without an acknowledgement."""
        ...

    def on_tick(self, now: float) -> list[Outgoing]: ...


class Reporting:
    """What most brains do when a delivery ends: log a refusal or a failure, nothing more.
    A brain that needs more overrides these; `name` is the party's."""

    name: str

    def on_delivered(self, key: str, ack: Ack, now: float) -> list[Outgoing]:
        if ack.status != "ok":
            log.warning("%s: %s refused: %s", self.name, key, ack.detail)
        return []

    def on_failed(self, key: str, now: float) -> list[Outgoing]:
        log.error("%s: %s was never acknowledged", self.name, key)
        return []

    def on_tick(self, now: float) -> list[Outgoing]:
        return []


class Node:
    def __init__(self, messenger: Messenger, deliveries: Deliveries, brain: Brain) -> None:
        self.messenger = messenger
        self.deliveries = deliveries
        self.brain = brain
        self.sent = 0
        self.resent = 0
        self.failed = 0

    @property
    def name(self) -> str:
        return self.messenger.identity.name

    def receive(self, msg: Message, now: float) -> list[Message]:
        """What to send in answer to one arriving SPADE message."""
        opened = self.messenger.open(msg)
        if opened is None:
            return []  # refused: a security event already
        sender, header = opened.sender.name, opened.header
        try:
            message = decode(header.type, opened.payload)
        except MessageError as exc:
            self.messenger.security.record(
                "malformed-message", f"xmpp {sender}", str(exc), envelope=header.id
            )
            if header.type == "ack":
                return []
            refused = Ack(status="refused", detail=str(exc))
            return [self._reply(sender, refused, header.id)]
        if isinstance(message, Ack):
            key = self.deliveries.acked(header.in_reply_to or "", sender)
            if key is None:
                return []  # a second acknowledgement, or of nothing we sent
            if message.status != "ok":
                log.warning("%s refused %s: %s", sender, key, message.detail)
            return self._send(self.brain.on_delivered(key, message, now), now)
        ack, out = self.brain.on_message(sender, message, now)
        return [self._reply(sender, ack, header.id), *self._send(out, now)]

    def tick(self, now: float) -> list[Message]:
        """The brain's timers, failures reported, and what is due to be sent (again)."""
        out = self.brain.on_tick(now)
        for gone in self.deliveries.expired(now):
            self.failed += 1
            log.warning("%s: %s to %s never acknowledged", self.name, gone.key, gone.recipient)
            out += self.brain.on_failed(gone.key, now)
        return self._send(out, now)

    def _reply(self, to: str, ack: Ack, in_reply_to: str) -> Message:
        self.sent += 1
        return self.messenger.message(to, "ack", ack.encode(), in_reply_to=in_reply_to)

    def _send(self, out: list[Outgoing], now: float) -> list[Message]:
        msgs = []
        for o in out:
            type_, payload = encode(o.message)
            if o.key is None:
                self.sent += 1
                msgs.append(self.messenger.message(o.to, type_, payload, ttl_s=o.ttl_s))
            else:
                self.deliveries.add(o.key, o.to, type_, payload, now, o.ttl_s)
        for p in self.deliveries.due(now):
            ttl = max(1.0, min(p.expires_at - now, 900.0))
            msg = self.messenger.message(p.recipient, p.type, p.payload, ttl_s=ttl)
            self.deliveries.sent(p.key, json.loads(msg.body)["hdr"]["id"])
            self.sent += 1
            self.resent += p.tries > 1
            msgs.append(msg)
        return msgs
