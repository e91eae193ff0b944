"""An agent's envelope endpoint: what it sends is sealed to the recipient's certificate and
allowed by the role table before it leaves; what it receives is opened (every check of
`Receiver`) before any behaviour sees it. SPADE carries the wire text as the message body;
the thread-free metadata names only the message type, so the XMPP server can count and route
without reading."""

from __future__ import annotations

import logging
from pathlib import Path

from cryptography import x509
from spade.message import Message

from homeflex.agents.chains import ChainVerifier
from homeflex.agents.envelope import Opened, Receiver, Refused, Sender, seal
from homeflex.agents.peers import Peers
from homeflex.agents.permissions import Denied, Permissions
from homeflex.agents.replay import ReplayCache
from homeflex.clock import Clock, SystemClock
from homeflex.pki.bundle import Credentials
from homeflex.pki.identity import Identity
from homeflex.pki.trust import TrustStore
from homeflex.security import SecurityLog

log = logging.getLogger(__name__)
ENVELOPE_METADATA = "homeflex-type"  # SPADE metadata key: the message type, for templates


class Messenger:
    def __init__(
        self,
        creds: Credentials,
        permissions: Permissions,
        security: SecurityLog,
        replay_path: Path,
        clock: Clock | None = None,
    ) -> None:
        self.clock = clock or SystemClock()
        self.sender = Sender.of(creds)
        self.permissions = permissions
        self.security = security
        self.chains = ChainVerifier(TrustStore.of(creds))
        self.peers = Peers(self.chains)
        self.replay = ReplayCache(replay_path)
        self.receiver = Receiver(
            creds,
            self.chains.trust,
            self.replay,
            permissions,
            security,
            self.clock,
            chains=self.chains,
        )

    @property
    def identity(self) -> Identity:
        return self.sender.identity

    def know(self, chain: list[x509.Certificate]) -> Identity:
        """A peer given by configuration or enrollment (a home's aggregator)."""
        return self.peers.add(chain, self.clock.now())

    def message(
        self,
        to: str,
        type: str,
        payload: bytes,
        *,
        in_reply_to: str | None = None,
        ttl_s: float = 300,
    ) -> Message:
        """The SPADE message carrying `payload` to peer `to` (an identity name). KeyError when
        the peer is unknown, TrustError when its certificate is no longer good, Denied when
        the role table forbids it: we never send what the other side must refuse."""
        now = self.clock.now()
        cert = self.peers.certificate(to, now)
        recipient = Identity.from_certificate(cert)
        self.permissions.check(self.identity, recipient, type)
        assert recipient.xmpp is not None  # Peers only holds chains that verified, with one
        wire = seal(
            payload,
            type=type,
            sender=self.sender,
            recipient=cert,
            in_reply_to=in_reply_to,
            ttl_s=ttl_s,
            now=now,
        )
        return Message(to=recipient.xmpp, body=wire, metadata={ENVELOPE_METADATA: type})

    def open(self, msg: Message) -> Opened | None:
        """The opened envelope, or None when it was refused (the refusal is a security event
        already, and a log line); the sender becomes a known peer for the reply."""
        try:
            opened = self.receiver.open(msg.body or "", str(msg.sender))
        except Refused:
            return None
        self.peers.learn(opened, self.clock.now())
        return opened

    def close(self) -> None:
        self.replay.close()


__all__ = ["Denied", "Messenger"]
