"""Certificate chains that travel in envelopes, verified once and then remembered.

Verifying a chain against the trust store costs several signature checks (leaf by fleet CA,
fleet CA by root, the path builder's own checks, the revocation list's signature): more than
everything else in opening an envelope. A sender's chain is the same in every envelope, so the
verdict is cached per chain (its exact base64 text) for as long as it stays true: while the
revocation list is the same object (a changed crl.pem is re-read by the trust store and empties
the cache) and the time lies inside every certificate's validity and before the list's next
update. Only acceptances are cached; a refused chain is checked again each time."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from homeflex.pki.identity import Identity
from homeflex.pki.trust import TrustError, TrustStore

MAX_CHAIN = 3  # leaf, fleet CA, and one spare (a root sent along is ignored by the verifier)
MAX_CERT_B64 = 4096  # our certificates are ~900 characters of base64


@dataclass(frozen=True)
class Verified:
    identity: Identity
    chain: tuple[x509.Certificate, ...]
    key: ec.EllipticCurvePublicKey  # the leaf's, P-256
    valid_from: float  # the verdict holds for times in [valid_from, valid_until]
    valid_until: float

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]


class ChainError(ValueError):
    """The chain cannot even be read (not base64 DER certificates); a malformed envelope."""


def b64decode_strict(text: str) -> bytes:
    """Standard base64 with padding, accepted only in its one canonical spelling: a text that
    decodes but re-encodes differently (non-zero padding bits, missing padding) is refused, so
    a flipped bit in an envelope never decodes to the same bytes."""
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ValueError("not base64") from None
    if base64.b64encode(data).decode("ascii") != text:
        raise ValueError("not canonical base64")
    return data


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class ChainVerifier:
    def __init__(self, trust: TrustStore, max_entries: int = 4096) -> None:
        self.trust = trust
        self.max_entries = max_entries
        self._cache: dict[tuple[str, ...], Verified] = {}
        self._crl = trust.crl
        self.hits = 0
        self.misses = 0

    def verify(self, chain_b64: tuple[str, ...], at: float) -> Verified:
        """The verified identity of `chain_b64` (base64 DER, leaf first) at `at` (Unix
        seconds); TrustError (its code says why) or ChainError (unreadable)."""
        self.trust.refresh()  # a stat(); re-reads crl.pem when it was replaced
        if self.trust.crl is not self._crl:
            self._cache.clear()
            self._crl = self.trust.crl
        hit = self._cache.get(chain_b64)
        if hit is not None and hit.valid_from <= at <= hit.valid_until:
            self.hits += 1
            return hit
        self.misses += 1
        verified = self._verify(chain_b64, at)
        if len(self._cache) >= self.max_entries:
            # dicts keep insertion order: drop the oldest entry
            del self._cache[next(iter(self._cache))]
        self._cache[chain_b64] = verified
        return verified

    def _verify(self, chain_b64: tuple[str, ...], at: float) -> Verified:
        if not 1 <= len(chain_b64) <= MAX_CHAIN:
            raise ChainError(f"{len(chain_b64)} certificates: expected 1 to {MAX_CHAIN}")
        chain = []
        for n, text in enumerate(chain_b64):
            if len(text) > MAX_CERT_B64:
                raise ChainError(f"certificate {n}: {len(text)} characters, too long")
            try:
                chain.append(x509.load_der_x509_certificate(b64decode_strict(text)))
            except ValueError as exc:
                raise ChainError(f"certificate {n}: {exc}") from None
        identity = self.trust.verify(chain, at=datetime.fromtimestamp(at, UTC))
        leaf = chain[0]
        key = leaf.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise TrustError("wrong-usage", f"{identity.name}: the key is not a P-256 key")
        # the verifier used the leaf and its issuer; bound the verdict by both and by the list
        used = [leaf, *(c for c in chain[1:] if c.subject == leaf.issuer)][:2]
        valid_from = max(c.not_valid_before_utc.timestamp() for c in used)
        valid_until = min(c.not_valid_after_utc.timestamp() for c in used)
        crl = self.trust.crl
        if crl is not None and crl.next_update_utc is not None:
            valid_until = min(valid_until, crl.next_update_utc.timestamp())
        return Verified(identity, tuple(chain), key, valid_from, valid_until)
