"""Whom an agent can seal envelopes to: identity name → certificate chain, given at enrollment
or in the configuration (the aggregator's chain on a home) and learned from envelopes that were
opened, i.e. verified. A certificate is checked again (cheaply: the chain verdict is cached)
each time it is looked up, so nothing is ever encrypted to a revoked or expired key."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from homeflex.agents.chains import ChainError, ChainVerifier, b64encode
from homeflex.agents.envelope import Opened
from homeflex.pki.identity import Identity
from homeflex.pki.trust import TrustError


class Peers:
    def __init__(self, chains: ChainVerifier) -> None:
        self.chains = chains
        self._known: dict[str, tuple[str, ...]] = {}  # name → chain as base64 DER

    def add(self, chain: list[x509.Certificate], now: float) -> Identity:
        """Remember a chain (leaf first) after verifying it; TrustError when it is not ours.
        A newer certificate of the same name (a renewal) replaces an older one, never the
        other way round, so an old envelope cannot bring back a superseded key."""
        b64 = tuple(b64encode(c.public_bytes(serialization.Encoding.DER)) for c in chain)
        verified = self.chains.verify(b64, now)
        name = verified.identity.name
        current = self._known.get(name)
        if current is not None:
            try:
                held = self.chains.verify(current, now).leaf
            except (TrustError, ChainError):  # the held one is no longer good
                held = None
            if held is not None and held.not_valid_before_utc > verified.leaf.not_valid_before_utc:
                return verified.identity
        self._known[name] = b64
        return verified.identity

    def learn(self, opened: Opened, now: float) -> None:
        self.add(list(opened.sender_chain), now)

    def certificate(self, name: str, now: float) -> x509.Certificate:
        """The certificate to encrypt to; KeyError when `name` is unknown, TrustError when its
        certificate is no longer acceptable (revoked, expired)."""
        return self.chains.verify(self._known[name], now).leaf

    def __contains__(self, name: object) -> bool:
        return name in self._known
