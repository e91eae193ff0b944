"""The envelope every agent message travels in, whatever carries it: the payload encrypted to
the recipient's certificate key, the whole signed by the sender's, the sender's certificate
chain alongside so a first contact can be verified.

Wire form: one canonical JSON text (below). A 200-byte payload becomes ~2,100 bytes: the chain
~1,415 (leaf ~800 and fleet CA ~610 characters of base64), ct 290 (payload + 16-byte GCM tag,
base64), hdr ~220, sig ~98, epk 46, field names ~35. The chain is two thirds of it; it travels
every time so any receiver can verify any envelope without state.

    {"chain":[<leaf DER b64>,<fleet CA DER b64>],"ct":<b64>,"epk":<b64>,"hdr":{...},"sig":<b64>}

- hdr: version, id (128 random bits, hex), type, sender, recipient (identity names),
  sender_xmpp, created, expires (integer Unix seconds, UTC), in_reply_to (an id or null). It is
  readable so the XMPP server and logs can route and account, but it is signed and it is the
  ciphertext's associated data.
- Canonical JSON: keys sorted, no whitespace (separators "," and ":"), UTF-8, non-ASCII kept as
  is (ensure_ascii off), integers only (floats have several spellings and differ between
  languages, so times are whole seconds). The receiver re-serialises what it parsed and refuses
  the envelope unless that gives back exactly the text received: one envelope has one spelling,
  so nothing can be changed without changing the signed bytes. Base64 is canonical too.
- Encryption (ECIES with P-256): a fresh ephemeral key `epk` (SEC1 compressed point); ECDH with
  the recipient certificate's key; HKDF-SHA256, no salt, info = label || SHA-256(hdr) || epk ||
  recipient key, gives 32 bytes of AES-256 key and a 12-byte GCM nonce (the key is new for every
  envelope, so the nonce never repeats under it); AES-256-GCM with hdr as associated data.
- Signature: ECDSA P-256/SHA-256 by the sender's key over label || len(hdr) || hdr || epk ||
  ct. Encrypt-then-sign: a receiver checks who sent it before spending a key agreement on it,
  and refuses forgeries without touching its private key. The usual weakness of
  encrypt-then-sign (a third party strips the signature and re-signs the ciphertext as its own)
  does not apply: the sender's name is in hdr, hdr is in the key derivation and the associated
  data, so a re-signed ciphertext (whose hdr must name the new signer to pass the checks) no
  longer decrypts. The recipient is in the signed hdr, so a signed envelope cannot be
  re-addressed either.

The receiver's checks, in order (the first that fails refuses the envelope, with a security
event): size, parse, chain trusted (the TrustError code), the XMPP sender is the certificate's
address and hdr's sender the certificate's name (wrong-sender), signature (bad-signature), the
recipient is me (not-for-me), freshness (stale), the role table (denied), first time seen
(replay), decryption (undecryptable).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import re
import secrets
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from homeflex.agents.chains import ChainError, ChainVerifier, b64decode_strict, b64encode
from homeflex.agents.permissions import Denied, Permissions
from homeflex.agents.replay import ReplayCache
from homeflex.clock import Clock
from homeflex.pki.bundle import Credentials
from homeflex.pki.identity import Identity
from homeflex.pki.trust import TrustError, TrustStore
from homeflex.security import SecurityLog

log = logging.getLogger(__name__)

VERSION = 1
SIGN_LABEL = b"homeflex envelope v1 signature\x00"
KDF_LABEL = b"homeflex envelope v1 key\x00"
MAX_PAYLOAD = 64 * 1024  # bytes; our messages are a few kB at most (96 PTUs of numbers)
MAX_WIRE = 128 * 1024  # characters: the payload's base64 plus ~2.5 kB of chain and header
MAX_TTL_S = 86_400  # bounds what the replay cache must remember
CLOCK_SKEW_S = 60  # boxes keep NTP time; tolerate this much disagreement
_HEX_ID = re.compile(r"^[0-9a-f]{32}$")
_TYPE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{0,62}$")
_JID = re.compile(r"^[^@/\s]{1,256}@[^@/\s]{1,256}$")
_MAX_TIME = 2**40  # far beyond any real time; keeps integers small and exact everywhere
_TOP_FIELDS = frozenset({"chain", "ct", "epk", "hdr", "sig"})


@dataclass(frozen=True)
class Header:
    version: int
    id: str
    type: str
    sender: str
    recipient: str
    sender_xmpp: str
    created: int
    expires: int
    in_reply_to: str | None

    def as_dict(self) -> dict[str, Any]:
        # the fields are all scalars: a shallow copy (asdict() deep-copies, 10x slower)
        return dict(self.__dict__)

    def canonical(self) -> bytes:
        return canonical_json(self.as_dict())

    @classmethod
    def parse(cls, obj: object) -> Header:
        """A header from parsed JSON; ValueError naming the first bad field."""
        if not isinstance(obj, dict):
            raise ValueError("hdr: not an object")
        fields = set(cls.__dataclass_fields__)
        if set(obj) != fields:
            extra, missing = sorted(set(obj) - fields), sorted(fields - set(obj))
            raise ValueError(f"hdr: unexpected fields {extra}, missing {missing}")
        for name in ("version", "created", "expires"):
            value = obj[name]
            # bool is an int in Python; JSON true must not pass for 1
            if type(value) is not int or not 0 <= value < _MAX_TIME:
                raise ValueError(f"hdr.{name}: not a non-negative integer")
        if obj["version"] != VERSION:
            raise ValueError(f"hdr.version {obj['version']}: this receiver speaks {VERSION}")
        for name, pattern in (
            ("id", _HEX_ID),
            ("type", _TYPE),
            ("sender", _NAME),
            ("recipient", _NAME),
            ("sender_xmpp", _JID),
        ):
            value = obj[name]
            if not isinstance(value, str) or not pattern.fullmatch(value):
                raise ValueError(f"hdr.{name}: not a valid {name}")
        reply = obj["in_reply_to"]
        if reply is not None and (not isinstance(reply, str) or not _HEX_ID.fullmatch(reply)):
            raise ValueError("hdr.in_reply_to: not a message id")
        if not 0 < obj["expires"] - obj["created"] <= MAX_TTL_S:
            raise ValueError(f"hdr: lifetime must be 1 to {MAX_TTL_S} seconds")
        return cls(**obj)


def canonical_json(obj: Any) -> bytes:
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _signed_bytes(hdr: bytes, epk: bytes, ct: bytes) -> bytes:
    # length-prefix the header so no split of the concatenation is ambiguous (epk is fixed size)
    return SIGN_LABEL + struct.pack(">I", len(hdr)) + hdr + epk + ct


def _point(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def _aead_key(shared: bytes, hdr: bytes, epk: bytes, recipient: bytes) -> tuple[bytes, bytes]:
    okm = HKDF(
        hashes.SHA256(),
        length=44,
        salt=None,
        info=KDF_LABEL + hashlib.sha256(hdr).digest() + epk + recipient,
    ).derive(shared)
    return okm[:32], okm[32:]


def _p256(key: object, what: str) -> ec.EllipticCurvePublicKey:
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError(f"{what}: not a P-256 key")
    return key


@functools.lru_cache(maxsize=1024)
def _recipient(cert: x509.Certificate) -> tuple[Identity, ec.EllipticCurvePublicKey, bytes]:
    """What sealing needs of a recipient's certificate, worked out once per certificate
    (reading the identity out of the certificate costs more than the key agreement)."""
    to = Identity.from_certificate(cert)
    key = _p256(cert.public_key(), f"{to.name}'s certificate")
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    if not usage.key_agreement:
        raise ValueError(f"{to.name}'s certificate does not allow key agreement")
    return to, key, _point(key)


@dataclass(frozen=True)
class Sender:
    """What sealing needs of the sending party: its key, its chain (leaf first, then the fleet
    CA) and the identity the leaf carries."""

    key: ec.EllipticCurvePrivateKey
    chain: tuple[x509.Certificate, ...]
    identity: Identity
    # the chain's base64 is the same in every envelope: encoded once
    chain_b64: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.identity.xmpp:
            raise ValueError(f"{self.identity.name}: the certificate carries no XMPP address")
        if _point(self.key.public_key()) != _point(_p256(self.chain[0].public_key(), "leaf")):
            raise ValueError(f"{self.identity.name}: the key does not match the certificate")
        der = (c.public_bytes(serialization.Encoding.DER) for c in self.chain)
        object.__setattr__(self, "chain_b64", tuple(b64encode(d) for d in der))

    @classmethod
    def of(cls, creds: Credentials) -> Sender:
        chain = creds.chain()
        return cls(creds.key(), tuple(chain), Identity.from_certificate(chain[0]))


def seal(
    payload: bytes,
    *,
    type: str,
    sender: Sender,
    recipient: x509.Certificate,
    in_reply_to: str | None = None,
    ttl_s: float = 300,
    now: float | None = None,
) -> str:
    """`payload` for `recipient` (its certificate, from Peers), from `sender`: the wire text."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes: the limit is {MAX_PAYLOAD}")
    if not 1 <= ttl_s <= MAX_TTL_S:
        raise ValueError(f"ttl_s={ttl_s}: must be 1 to {MAX_TTL_S} seconds")
    to, recipient_key, recipient_point = _recipient(recipient)
    created = math.floor(datetime.now(UTC).timestamp() if now is None else now)
    assert sender.identity.xmpp is not None  # checked in Sender
    header = Header(
        version=VERSION,
        id=secrets.token_hex(16),
        type=type,
        sender=sender.identity.name,
        recipient=to.name,
        sender_xmpp=sender.identity.xmpp,
        created=created,
        expires=created + math.ceil(ttl_s),
        in_reply_to=in_reply_to,
    )
    Header.parse(header.as_dict())  # the sender refuses to build what receivers refuse
    hdr = header.canonical()
    ephemeral = ec.generate_private_key(ec.SECP256R1())
    epk = ephemeral.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )
    key, nonce = _aead_key(ephemeral.exchange(ec.ECDH(), recipient_key), hdr, epk, recipient_point)
    ct = AESGCM(key).encrypt(nonce, payload, hdr)
    sig = sender.key.sign(_signed_bytes(hdr, epk, ct), ec.ECDSA(hashes.SHA256()))
    wire = {
        "chain": list(sender.chain_b64),
        "ct": b64encode(ct),
        "epk": b64encode(epk),
        "hdr": header.as_dict(),
        "sig": b64encode(sig),
    }
    return canonical_json(wire).decode("utf-8")


class Refused(Exception):
    """An envelope was not accepted. `kind` is the security event's kind: malformed, a
    TrustError code (unknown-ca, expired, not-yet-valid, revoked, bad-chain, wrong-usage,
    no-identity, crl), wrong-sender, bad-signature, not-for-me, stale, denied, replay,
    undecryptable."""

    def __init__(self, kind: str, detail: str, **fields: Any) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail
        self.fields = fields


@dataclass(frozen=True)
class Opened:
    header: Header
    payload: bytes
    sender: Identity
    sender_cert: x509.Certificate
    sender_chain: tuple[x509.Certificate, ...]  # for Peers: to encrypt the reply


def _bare_jid(jid: str) -> str:
    # the full JID's resource names a connection, not a party; JIDs compare case-insensitively
    return jid.split("/", 1)[0].lower()


def _printable(text: object, limit: int = 200) -> str:
    """Attacker-supplied text as it may appear in a log line: escaped and cut."""
    shown = repr(text) if not isinstance(text, str) else text.encode("unicode_escape").decode()
    return shown if len(shown) <= limit else shown[:limit] + "..."


class Receiver:
    """Opens envelopes addressed to one party (`creds`), refusing everything else; each refusal
    raises Refused and is recorded in `log`."""

    def __init__(
        self,
        creds: Credentials,
        trust: TrustStore,
        replay: ReplayCache,
        permissions: Permissions,
        log: SecurityLog,
        clock: Clock,
        *,
        chains: ChainVerifier | None = None,
    ) -> None:
        self.key = creds.key()
        self.identity = creds.identity()
        self._my_point = _point(self.key.public_key())
        self.chains = chains or ChainVerifier(trust)
        self.replay = replay
        self.permissions = permissions
        self.log = log
        self.clock = clock
        if permissions.me != self.identity:
            raise ValueError(
                f"permissions are for {permissions.me.name}, the credentials for "
                f"{self.identity.name}"
            )

    def open(self, wire: str, xmpp_from: str) -> Opened:
        try:
            return self._open(wire, xmpp_from)
        except Refused as refused:
            self.log.record(
                refused.kind,
                _printable(xmpp_from),
                refused.detail,
                recipient=self.identity.name,
                **refused.fields,
            )
            raise
        except Exception as exc:
            # a bug of ours, not the sender's fault: still a refusal, never a crash of the agent
            log.exception("envelope from %s: unexpected error", _printable(xmpp_from))
            detail = f"internal error {type(exc).__name__}: {_printable(str(exc))}"
            self.log.record(
                "internal-error", _printable(xmpp_from), detail, recipient=self.identity.name
            )
            raise Refused("internal-error", detail) from None

    def _open(self, wire: str, xmpp_from: str) -> Opened:
        # 1. size, then parse into the one canonical form
        if not isinstance(wire, str) or not isinstance(xmpp_from, str):
            raise Refused("malformed", "the envelope and the XMPP sender must be text")
        if len(wire) > MAX_WIRE:
            raise Refused("malformed", f"{len(wire)} characters, more than {MAX_WIRE}")
        try:
            obj = json.loads(wire, parse_constant=_no_constants)
            canonical = canonical_json(obj).decode("utf-8") == wire
        except (ValueError, RecursionError, UnicodeError) as exc:
            raise Refused("malformed", f"not JSON: {_printable(str(exc))}") from None
        if not canonical:
            raise Refused("malformed", "not in canonical form (sorted keys, no whitespace)")
        try:
            header, chain_b64, epk, ct, sig = _fields(obj)
        except ValueError as exc:
            raise Refused("malformed", str(exc)) from None
        # for the security event: what the envelope claims (verified or not, it helps tracing)
        ids = {"id": header.id, "type": header.type, "claimed_sender": header.sender}
        now = self.clock.now()

        # 2. the sender's chain leads to our root, unexpired and unrevoked
        try:
            verified = self.chains.verify(chain_b64, now)
        except ChainError as exc:
            raise Refused("malformed", f"chain: {exc}", **ids) from None
        except TrustError as exc:
            raise Refused(exc.code, exc.detail, **ids) from None
        sender = verified.identity

        # 3. the XMPP server authenticated the connection this came from: it must be the
        # certificate's own address, and the header must name the certificate's holder
        if sender.xmpp is None or _bare_jid(xmpp_from) != sender.xmpp.lower():
            raise Refused(
                "wrong-sender",
                f"sent from XMPP address {_printable(xmpp_from)}, but the certificate of "
                f"{sender.name} is for {sender.xmpp or 'no XMPP address'}",
                **ids,
            )
        if header.sender != sender.name or header.sender_xmpp != sender.xmpp:
            raise Refused(
                "wrong-sender",
                f"the header names {header.sender} ({header.sender_xmpp}), the certificate "
                f"{sender.name} ({sender.xmpp})",
                **ids,
            )

        # 4. the sender's key signed exactly this header, ephemeral key and ciphertext
        hdr = header.canonical()
        try:
            verified.key.verify(sig, _signed_bytes(hdr, epk, ct), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise Refused("bad-signature", f"not signed by {sender.name}'s key", **ids) from None

        # 5. for me
        if header.recipient != self.identity.name:
            raise Refused("not-for-me", f"addressed to {header.recipient}", **ids)

        # 6. fresh: neither expired nor from the future, beyond the clock skew we allow
        if not header.created - CLOCK_SKEW_S <= now <= header.expires + CLOCK_SKEW_S:
            raise Refused(
                "stale",
                f"valid {_utc(header.created)} to {_utc(header.expires)}, now is {_utc(now)}",
                **ids,
            )

        # 7. the role table and the home-aggregator relation
        try:
            self.permissions.check(sender, self.identity, header.type)
        except Denied as exc:
            raise Refused("denied", str(exc), **ids) from None

        # 8. first time: remembered until it would be refused as stale anyway
        if not self.replay.first_time(sender.name, header.id, header.expires + CLOCK_SKEW_S, now):
            raise Refused("replay", f"message {header.id} was already received", **ids)

        # 9. decrypt (a signed envelope that does not decrypt was sealed to another key)
        try:
            ephemeral = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), epk)
            key, nonce = _aead_key(
                self.key.exchange(ec.ECDH(), ephemeral), hdr, epk, self._my_point
            )
            payload = AESGCM(key).decrypt(nonce, ct, hdr)
        except (ValueError, InvalidTag):
            raise Refused(
                "undecryptable", "not encrypted to this party's current key", **ids
            ) from None
        return Opened(header, payload, sender, verified.leaf, verified.chain)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _utc(t: float) -> str:
    return f"{datetime.fromtimestamp(t, UTC):%Y-%m-%d %H:%M:%S} UTC"


def _fields(obj: object) -> tuple[Header, tuple[str, ...], bytes, bytes, bytes]:
    """The envelope's parts, decoded; ValueError naming the first bad one."""
    if not isinstance(obj, dict) or set(obj) != _TOP_FIELDS:
        raise ValueError(f"expected an object with the fields {sorted(_TOP_FIELDS)}")
    header = Header.parse(obj["hdr"])
    chain = obj["chain"]
    if not isinstance(chain, list) or not all(isinstance(c, str) for c in chain):
        raise ValueError("chain: not a list of base64 certificates")
    parts = []
    for name in ("epk", "ct", "sig"):
        value = obj[name]
        if not isinstance(value, str):
            raise ValueError(f"{name}: not base64 text")
        try:
            parts.append(b64decode_strict(value))
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    epk, ct, sig = parts
    if len(epk) != 33:
        raise ValueError(f"epk: {len(epk)} bytes, a compressed P-256 point has 33")
    if not 16 <= len(ct) <= MAX_PAYLOAD + 16:
        raise ValueError(f"ct: {len(ct)} bytes, outside 16 to {MAX_PAYLOAD + 16}")
    if not 8 <= len(sig) <= 72:
        raise ValueError(f"sig: {len(sig)} bytes, not a DER ECDSA P-256 signature")
    return header, tuple(chain), epk, ct, sig
