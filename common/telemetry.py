"""Telemetry batches: what a box publishes to `homeflex/box/<box>/telemetry`, signed by the box,
and the ingest's acknowledgement on `homeflex/cloud/ack/<box>`.

Wire form of a batch (bytes):

    b"HFT1" | u32 big-endian length of head | head | body

- head: canonical JSON `{"chain":[<leaf DER b64>,<fleet CA DER b64>],"sig":<b64>}`. The chain
  travels with every batch (about 1.4 kB) so the ingest verifies any batch without state; it
  verifies each distinct chain once and remembers the verdict (agents/chains.py).
- body: zlib-compressed (deflate) UTF-8 JSON, columnar:

      {"v":1, "box":NAME, "id":32 hex, "sent":wall Unix s, "clock":box clock Unix s,
       "poll":{DEVICE: seconds between polls},
       "series":[[DEVICE, QUANTITY], ...],
       "r":{"seq":[...], "s":[...], "t":[...], "v":[...]},
       "p":[[seq, DEVICE, ptu_start_ms, import_wh, export_wh, estimated 0|1, mean_power_w|null]]}

  Readings are four parallel columns: sequence numbers and times (ms) as differences from the
  previous entry (the first absolute), series as an index into `series`, values as numbers.
  Consecutive readings differ by 1 in seq and by 0 or one poll interval in time, so deflate
  turns a 5,000-item backlog batch into about 2.6 bytes an item; a batch of 20 current
  readings is about 17 bytes a reading, and the chain makes its frame ~1.8 kB
  (bench/telemetry_ingest and bench/telemetry_drain print the figures).

  Why this encoding: JSON and zlib are in every Python and every language the aggregator may
  write tools in, a batch can be read with `python -m json.tool` after decompressing, and
  the columnar layout recovers what a binary format (CBOR, protobuf) would save, without a
  schema compiler or another dependency on the box.

- signature: ECDSA P-256/SHA-256 by the box's key over SIGN_LABEL || topic || 0x00 || body.
  The topic is signed, so a batch moved to another box's topic fails even before the identity
  check; the body is signed as sent (compressed), so nothing is decompressed before it is known
  to come from a box of ours.

The ingest's checks, in order, each refusal with a code: size, frame, chain (TrustError code),
role home and name equal to the topic's box (wrong-box), signature (bad-signature), body
(malformed), the body's box (wrong-box), freshness (stale); replay is the history's call.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from homeflex.agents.chains import ChainError, ChainVerifier, Verified, b64decode_strict, b64encode
from homeflex.mqtt_client import box_of
from homeflex.pki.identity import Role
from homeflex.pki.trust import TrustError

MAGIC = b"HFT1"
VERSION = 1
SIGN_LABEL = b"homeflex telemetry v1 signature\x00"
MAX_FRAME = 1024 * 1024  # the broker's packet limit
MAX_BODY = 16 * 1024 * 1024  # decompressed; a zip bomb stops here
MAX_HEAD = 8 * 1024
MAX_ITEMS = 50_000
MAX_AGE_S = 7 * 86_400  # a batch is built when it is sent: an older one is a replay
CLOCK_SKEW_S = 300.0
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
_QUANTITY = re.compile(r"^[a-z0-9_]{1,40}$")
_HEX_ID = re.compile(r"^[0-9a-f]{32}$")


def telemetry_topic(box: str) -> str:
    return f"homeflex/box/{box}/telemetry"


def ack_topic(box: str) -> str:
    return f"homeflex/cloud/ack/{box}"


@dataclass(frozen=True, slots=True)
class ReadingItem:
    seq: int
    device: str
    quantity: str
    ts_ms: int
    value: float


@dataclass(frozen=True, slots=True)
class PtuItem:
    """A PTU's energy as the box aggregated it; a later item for the same PTU replaces it."""

    seq: int
    device: str
    ptu_start_ms: int
    import_wh: float
    export_wh: float
    estimated: bool
    mean_power_w: float | None


@dataclass(frozen=True)
class Batch:
    box: str
    id: str
    sent: float  # wall-clock Unix seconds when built
    clock: float  # the box's clock then (differs from `sent` on a simulated home)
    readings: list[ReadingItem] = field(default_factory=list)
    ptus: list[PtuItem] = field(default_factory=list)
    poll_s: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.readings) + len(self.ptus)


def new_batch_id() -> str:
    return secrets.token_hex(16)


class BatchRefused(Exception):
    """A batch the ingest does not take; `code` is the security event's kind."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


# --- encoding (the box) ---------------------------------------------------------------------


def _deltas(values: list[int]) -> list[int]:
    return [v - p for p, v in zip([0, *values], values, strict=False)]


def encode_body(batch: Batch) -> bytes:
    series: dict[tuple[str, str], int] = {}
    rs = sorted(batch.readings, key=lambda r: r.seq)
    idx = [series.setdefault((r.device, r.quantity), len(series)) for r in rs]
    body = {
        "v": VERSION,
        "box": batch.box,
        "id": batch.id,
        "sent": batch.sent,
        "clock": batch.clock,
        "poll": batch.poll_s,
        "series": [list(k) for k in series],
        "r": {
            "seq": _deltas([r.seq for r in rs]),
            "s": idx,
            "t": _deltas([r.ts_ms for r in rs]),
            "v": [r.value for r in rs],
        },
        "p": [
            [
                p.seq,
                p.device,
                p.ptu_start_ms,
                p.import_wh,
                p.export_wh,
                int(p.estimated),
                p.mean_power_w,
            ]
            for p in batch.ptus
        ],
    }
    text = json.dumps(body, separators=(",", ":"), allow_nan=False)
    return zlib.compress(text.encode(), 6)


def seal(
    batch: Batch, topic: str, key: ec.EllipticCurvePrivateKey, chain: list[x509.Certificate]
) -> bytes:
    body = encode_body(batch)
    sig = key.sign(SIGN_LABEL + topic.encode() + b"\x00" + body, ec.ECDSA(hashes.SHA256()))
    head = json.dumps(
        {
            "chain": [b64encode(c.public_bytes(serialization.Encoding.DER)) for c in chain],
            "sig": b64encode(sig),
        },
        separators=(",", ":"),
        sort_keys=True,
    ).encode()
    return MAGIC + struct.pack(">I", len(head)) + head + body


# --- decoding (the ingest) ------------------------------------------------------------------


def open_batch(frame: bytes, topic: str, verifier: ChainVerifier, now: float) -> Batch:
    """The batch in `frame`, published on `topic`, after every check; BatchRefused otherwise."""
    if len(frame) > MAX_FRAME:
        raise BatchRefused("oversized", f"{len(frame)} bytes, more than {MAX_FRAME}")
    box = box_of(topic)
    if box is None:
        raise BatchRefused("malformed", f"topic {topic!r} is not a box's topic")
    if len(frame) < 8 or frame[:4] != MAGIC:
        raise BatchRefused("malformed", f"frame does not start with {MAGIC!r}")
    (head_len,) = struct.unpack(">I", frame[4:8])
    if head_len > MAX_HEAD or 8 + head_len > len(frame):
        raise BatchRefused("malformed", f"head length {head_len} does not fit the frame")
    head_bytes, body = frame[8 : 8 + head_len], frame[8 + head_len :]
    try:
        head = json.loads(head_bytes)
        chain = tuple(head["chain"])
        sig = b64decode_strict(head["sig"])
        if not all(isinstance(c, str) for c in chain):
            raise TypeError("chain entries must be strings")
    except (ValueError, KeyError, TypeError) as exc:
        raise BatchRefused("malformed", f"head: {exc}") from None
    try:
        verified = verifier.verify(chain, now)
    except TrustError as exc:
        raise BatchRefused(exc.code, exc.detail) from None
    except ChainError as exc:
        raise BatchRefused("malformed", f"chain: {exc}") from None
    _check_sender(verified, box)
    try:
        verified.key.verify(
            sig, SIGN_LABEL + topic.encode() + b"\x00" + body, ec.ECDSA(hashes.SHA256())
        )
    except InvalidSignature:
        raise BatchRefused(
            "bad-signature", f"the signature is not {verified.identity.name}'s over this batch"
        ) from None
    batch = decode_body(body)
    if batch.box != box:
        raise BatchRefused("wrong-box", f"the batch names box {batch.box!r}, the topic {box!r}")
    if not now - MAX_AGE_S <= batch.sent <= now + CLOCK_SKEW_S:
        raise BatchRefused(
            "stale", f"sent at {batch.sent:.0f}, outside [{now - MAX_AGE_S:.0f}, now + skew]"
        )
    return batch


def _check_sender(verified: Verified, box: str) -> None:
    identity = verified.identity
    if identity.role != Role.HOME:
        raise BatchRefused(
            "wrong-box", f"{identity.name} has role {identity.role}, only a home publishes data"
        )
    if identity.name != box:
        raise BatchRefused(
            "wrong-box", f"{identity.name}'s certificate published on box {box!r}'s topic"
        )


def decode_body(body: bytes) -> Batch:
    """The batch in a (compressed) body; BatchRefused `malformed` saying what is wrong."""
    try:
        inflater = zlib.decompressobj()
        text = inflater.decompress(body, MAX_BODY)
        if inflater.unconsumed_tail or not inflater.eof:
            raise ValueError(f"not one complete deflate stream of at most {MAX_BODY} bytes")
        raw = json.loads(text)
        return _parse(raw)
    except (zlib.error, ValueError, TypeError, KeyError, IndexError) as exc:
        raise BatchRefused("malformed", f"body: {exc}") from None


def _int(v: Any, what: str) -> int:
    if type(v) is not int:
        raise TypeError(f"{what}: {v!r} is not an integer")
    return v


def _num(v: Any, what: str) -> float:
    if type(v) not in (int, float) or not math.isfinite(v):
        raise TypeError(f"{what}: {v!r} is not a finite number")
    return float(v)


def _name(v: Any, what: str, pattern: re.Pattern[str] = _NAME) -> str:
    if not isinstance(v, str) or not pattern.match(v):
        raise ValueError(f"{what}: {v!r} is not a valid name")
    return v


def _undelta(values: Any, what: str) -> list[int]:
    if not isinstance(values, list):
        raise TypeError(f"{what} must be a list")
    out, acc = [], 0
    for n, d in enumerate(values):
        acc += _int(d, f"{what}[{n}]")
        out.append(acc)
    return out


def _parse(raw: Any) -> Batch:
    if not isinstance(raw, dict):
        raise TypeError("the body is not an object")
    if raw.get("v") != VERSION:
        raise ValueError(f"version {raw.get('v')!r}, this ingest reads {VERSION}")
    box = _name(raw["box"], "box")
    batch_id = raw["id"]
    if not isinstance(batch_id, str) or not _HEX_ID.match(batch_id):
        raise ValueError(f"id {batch_id!r} is not 32 hex digits")
    poll = raw["poll"]
    if not isinstance(poll, dict):
        raise TypeError("poll must be an object")
    poll_s = {_name(k, "poll device"): _num(v, f"poll[{k}]") for k, v in poll.items()}
    series_raw = raw["series"]
    if not isinstance(series_raw, list):
        raise TypeError("series must be a list")
    series = []
    for n, s in enumerate(series_raw):
        if not isinstance(s, list) or len(s) != 2:
            raise TypeError(f"series[{n}] must be [device, quantity]")
        series.append((_name(s[0], f"series[{n}] device"), _name(s[1], "quantity", _QUANTITY)))
    r = raw["r"]
    if not isinstance(r, dict):
        raise TypeError("r must be an object")
    seqs, times = _undelta(r["seq"], "r.seq"), _undelta(r["t"], "r.t")
    idx, values = r["s"], r["v"]
    if not isinstance(idx, list) or not isinstance(values, list):
        raise TypeError("r.s and r.v must be lists")
    if not len(seqs) == len(times) == len(idx) == len(values):
        raise ValueError("the reading columns differ in length")
    readings = []
    for n in range(len(seqs)):
        i = _int(idx[n], f"r.s[{n}]")
        if not 0 <= i < len(series):
            raise IndexError(f"r.s[{n}] = {i}: no such series")
        dev, q = series[i]
        readings.append(ReadingItem(seqs[n], dev, q, times[n], _num(values[n], f"r.v[{n}]")))
    ptus = []
    for n, p in enumerate(raw["p"]):
        if not isinstance(p, list) or len(p) != 7:
            raise TypeError(f"p[{n}] must have 7 fields")
        mean = None if p[6] is None else _num(p[6], f"p[{n}] mean_power_w")
        if p[5] not in (0, 1):
            raise ValueError(f"p[{n}] estimated must be 0 or 1")
        ptus.append(
            PtuItem(
                _int(p[0], f"p[{n}] seq"),
                _name(p[1], f"p[{n}] device"),
                _int(p[2], f"p[{n}] ptu_start_ms"),
                _num(p[3], f"p[{n}] import_wh"),
                _num(p[4], f"p[{n}] export_wh"),
                bool(p[5]),
                mean,
            )
        )
    if not readings and not ptus:
        raise ValueError("the batch holds no item")
    if len(readings) + len(ptus) > MAX_ITEMS:
        raise ValueError(f"{len(readings) + len(ptus)} items, more than {MAX_ITEMS}")
    all_seqs = [x.seq for x in readings] + [p.seq for p in ptus]
    if len(set(all_seqs)) != len(all_seqs) or min(all_seqs) < 1:
        raise ValueError("sequence numbers must be positive and distinct")
    return Batch(
        box,
        batch_id,
        _num(raw["sent"], "sent"),
        _num(raw["clock"], "clock"),
        readings,
        ptus,
        poll_s,
    )


# --- acknowledgements -----------------------------------------------------------------------


@dataclass(frozen=True)
class Ack:
    """The ingest's answer to a batch it stored: `new` items were not in the history before.
    A refused batch gets no answer (the refusal is the ingest's security event); the box sends
    its items again after its timeout."""

    batch: str
    new: int

    def encode(self) -> bytes:
        return json.dumps({"batch": self.batch, "new": self.new}, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> Ack:
        try:
            raw = json.loads(data)
            if not isinstance(raw, dict) or not _HEX_ID.match(str(raw.get("batch"))):
                raise ValueError("no batch id")
            return cls(str(raw["batch"]), _int(raw.get("new"), "new"))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"not an acknowledgement: {exc}") from None
