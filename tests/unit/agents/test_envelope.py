"""Envelopes between parties with real certificates: what is sealed opens only at its recipient,
unchanged, from the certificate's holder; every other envelope is refused with a security event
of the right kind in the log file, and nothing (random text, random JSON, any flipped bit)
makes the receiver raise anything but Refused."""

from __future__ import annotations

import base64
import binascii
import json
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from homeflex.agents.chains import ChainVerifier
from homeflex.agents.envelope import (
    CLOCK_SKEW_S,
    MAX_WIRE,
    Receiver,
    Refused,
    Sender,
    _signed_bytes,
    canonical_json,
    seal,
)
from homeflex.agents.peers import Peers
from homeflex.agents.permissions import Permissions
from homeflex.agents.replay import ReplayCache
from homeflex.pki.bundle import issue_credentials
from homeflex.pki.ca import FleetCA
from homeflex.pki.identity import Identity
from homeflex.pki.trust import TrustError, TrustStore
from homeflex.security import SecurityLog
from tests.fakeclock import FakeClock
from tests.pki_fixtures import make_fleet

from .conftest import AGG, BOX, BOX2, DSO, Party, PartyFactory

PAYLOAD = b'{"ptu_prices": [0.21, 0.19, 0.35], "marker": "SECRET-MARKER-7f3a"}'


@pytest.fixture
def agg(party: PartyFactory) -> Party:
    return party(AGG, homes=frozenset({"box-0001", "box-0002"}))


@pytest.fixture
def box(party: PartyFactory) -> Party:
    return party(BOX, aggregator="agg-1")


def prices(agg: Party, box: Party, clock: FakeClock, payload: bytes = PAYLOAD) -> str:
    return seal(
        payload, type="prices", sender=agg.sender, recipient=box.creds.certificate(), now=clock.t
    )


def edit(wire: str, **changes: object) -> str:
    """The envelope with top-level fields replaced, re-serialised canonically."""
    obj = json.loads(wire)
    obj.update(changes)
    return canonical_json(obj).decode()


def flip(b64: str, bit: int) -> str:
    data = bytearray(base64.b64decode(b64))
    data[bit // 8] ^= 1 << (bit % 8)
    return base64.b64encode(bytes(data)).decode()


def test_round_trip_and_reply(agg: Party, box: Party, clock: FakeClock) -> None:
    wire = prices(agg, box, clock)
    opened = box.receiver.open(wire, agg.jid + "/spade-1")  # a full JID: the resource is ignored
    assert opened.payload == PAYLOAD
    assert opened.sender == AGG
    assert opened.sender_cert == agg.creds.certificate()
    h = opened.header
    assert (h.version, h.type, h.sender, h.recipient) == (1, "prices", "agg-1", "box-0001")
    assert (h.sender_xmpp, h.in_reply_to) == ("agg-1@xmpp.homeflex.test", None)
    assert re.fullmatch(r"[0-9a-f]{32}", h.id)
    assert h.created == int(clock.t) and h.expires == h.created + 300
    # the box learns the aggregator's certificate from the envelope and answers it
    peers = Peers(box.receiver.chains)
    peers.learn(opened, clock.t)
    reply = seal(
        b"ok",
        type="ack",
        sender=box.sender,
        recipient=peers.certificate("agg-1", clock.t),
        in_reply_to=h.id,
        now=clock.t,
    )
    back = agg.receiver.open(reply, box.jid)
    assert (back.payload, back.sender, back.header.in_reply_to) == (b"ok", BOX, h.id)
    assert box.log.events() == [] and agg.log.events() == []


def test_the_wire_form_is_canonical_json_with_the_header_in_clear(
    agg: Party, box: Party, clock: FakeClock
) -> None:
    wire = prices(agg, box, clock, b"x" * 200)
    obj = json.loads(wire)
    assert canonical_json(obj).decode() == wire
    assert sorted(obj) == ["chain", "ct", "epk", "hdr", "sig"]
    assert obj["hdr"]["recipient"] == "box-0001" and obj["hdr"]["sender"] == "agg-1"
    assert [base64.b64decode(c) for c in obj["chain"]] == [
        c.public_bytes(serialization.Encoding.DER) for c in agg.creds.chain()
    ]
    assert len(base64.b64decode(obj["ct"])) == 200 + 16  # GCM adds its tag only
    assert len(base64.b64decode(obj["epk"])) == 33
    assert 1800 < len(wire.encode()) < 2600  # ~2.1 kB, mostly the certificate chain


def test_the_payload_is_not_readable_on_the_wire(agg: Party, box: Party, clock: FakeClock) -> None:
    wire = prices(agg, box, clock)
    assert b"SECRET-MARKER" not in wire.encode()
    obj = json.loads(wire)
    texts = [*obj["chain"], obj["ct"], obj["epk"], obj["sig"], *map(str, obj["hdr"].values())]
    for text in texts:
        for shift in range(4):  # base64 of any alignment of the text
            try:
                decoded = base64.b64decode(text[shift:] + "=" * (-len(text[shift:]) % 4))
            except binascii.Error:
                continue
            assert b"SECRET-MARKER" not in decoded
            assert b"ptu_prices" not in decoded


def test_a_certificate_from_another_ca_with_the_same_name(
    box: Party, clock: FakeClock, tmp_path: Path
) -> None:
    impostor_ca = make_fleet(tmp_path / "impostor")
    impostor = issue_credentials(impostor_ca, AGG, tmp_path / "impostor-agg")
    wire = seal(
        PAYLOAD,
        type="prices",
        sender=Sender.of(impostor),
        recipient=box.creds.certificate(),
        now=clock.t,
    )
    refused = box.refuse(wire, AGG.xmpp or "")
    assert refused.kind == "unknown-ca"
    assert "not issued under our root" in refused.detail
    impostor_ca.close()


def test_an_expired_certificate(agg: Party, box: Party, clock: FakeClock) -> None:
    box.receiver.open(prices(agg, box, clock), agg.jid)  # the chain's verdict is now cached
    clock.t = agg.creds.certificate().not_valid_after_utc.timestamp() + 1
    wire = prices(agg, box, clock)  # sealed "now": fresh, but the certificate is past its end
    assert box.refuse(wire, agg.jid).kind == "expired"


def test_a_revoked_certificate_once_the_list_is_republished(
    agg: Party, box: Party, clock: FakeClock, fleet_ca: FleetCA
) -> None:
    box.receiver.open(prices(agg, box, clock), agg.jid)  # the chain's verdict is now cached
    fleet_ca.revoke(agg.creds.certificate().serial_number, "key compromise")
    box.receiver.open(prices(agg, box, clock), agg.jid)  # not published yet: still accepted
    fleet_ca.publish_crl()
    refused = box.refuse(prices(agg, box, clock), agg.jid)
    assert refused.kind == "revoked"
    assert f"{agg.creds.certificate().serial_number:x}" in refused.detail


def test_the_xmpp_sender_must_be_the_certificates_address(
    agg: Party, box: Party, clock: FakeClock
) -> None:
    wire = prices(agg, box, clock)
    refused = box.refuse(wire, "box-0002@xmpp.homeflex.test/x")
    assert refused.kind == "wrong-sender"
    assert "agg-1@xmpp.homeflex.test" in refused.detail
    assert box.receiver.open(wire, agg.jid).payload == PAYLOAD  # the genuine delivery still works


def test_a_header_naming_someone_else_than_the_certificate(
    agg: Party, box: Party, clock: FakeClock
) -> None:
    hdr = json.loads(prices(agg, box, clock))["hdr"]
    wire = edit(prices(agg, box, clock), hdr={**hdr, "sender": "agg-2"})
    assert box.refuse(wire, agg.jid).kind == "wrong-sender"


@pytest.mark.parametrize("part", ["ct", "sig", "epk"])
def test_one_flipped_bit_in_a_binary_part(
    agg: Party, box: Party, clock: FakeClock, part: str
) -> None:
    wire = prices(agg, box, clock)
    size = len(base64.b64decode(json.loads(wire)[part])) * 8
    for bit in (0, 7, size // 2, size - 1):
        refused = box.refuse(edit(wire, **{part: flip(json.loads(wire)[part], bit)}), agg.jid)
        # a flipped signature may no longer be DER, a flipped point may be off the curve:
        # either way the signature check refuses it before any decryption
        assert refused.kind == "bad-signature", (bit, refused)
    assert box.receiver.open(wire, agg.jid).payload == PAYLOAD


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", "0" * 32),
        ("created", None),  # set below: one second earlier
        ("expires", None),  # set below: one second more
        ("type", "flex-order"),
        ("in_reply_to", "f" * 32),
    ],
)
def test_a_changed_header_field_breaks_the_signature(
    agg: Party, box: Party, clock: FakeClock, field: str, value: object
) -> None:
    wire = prices(agg, box, clock)
    hdr = json.loads(wire)["hdr"]
    hdr[field] = {"expires": hdr["expires"] + 1, "created": hdr["created"] - 1}.get(field, value)
    assert box.refuse(edit(wire, hdr=hdr), agg.jid).kind == "bad-signature"


def test_any_flipped_bit_anywhere_is_refused(agg: Party, box: Party, clock: FakeClock) -> None:
    wire = prices(agg, box, clock)
    start = wire.index('"ct"')  # everything after the chain: each character; the chain sampled
    positions = [*range(0, start, 13), *range(start, len(wire))]
    kinds: dict[str, int] = {}
    for n, pos in enumerate(positions):
        bit = n % 7  # ASCII stays ASCII; a non-ASCII character is just as refused
        changed = wire[:pos] + chr(ord(wire[pos]) ^ (1 << bit)) + wire[pos + 1 :]
        with pytest.raises(Refused) as err:
            box.receiver.open(changed, agg.jid)
        kinds[err.value.kind] = kinds.get(err.value.kind, 0) + 1
    assert set(kinds) <= {"malformed", "bad-signature", "wrong-sender", "unknown-ca", "bad-chain"}
    assert kinds["bad-signature"] > 100 and kinds["malformed"] > 100
    assert len(box.log.events()) == len(positions)  # one security event each
    assert box.receiver.open(wire, agg.jid).payload == PAYLOAD  # the original was not consumed


def test_a_replay_is_refused_also_after_a_restart(
    agg: Party, box: Party, clock: FakeClock, fleet_ca: FleetCA
) -> None:
    wire = prices(agg, box, clock)
    box.receiver.open(wire, agg.jid)
    assert box.refuse(wire, agg.jid).kind == "replay"
    # a new process: a new receiver on the same replay file
    replay = ReplayCache(box.replay_path)
    restarted = Receiver(
        box.creds,
        TrustStore.load(box.creds.ca_path, fleet_ca.dir / "crl.pem"),
        replay,
        Permissions(BOX, aggregator="agg-1"),
        SecurityLog(box.log.path),
        clock,
    )
    box.receiver = restarted
    assert box.refuse(wire, agg.jid).kind == "replay"
    assert restarted.open(prices(agg, box, clock), agg.jid).payload == PAYLOAD
    replay.close()


def test_stale_envelopes_are_refused_before_the_replay_cache(
    agg: Party, box: Party, clock: FakeClock
) -> None:
    sealed_at = clock.t = float(int(clock.t))  # the header holds whole seconds
    wire = prices(agg, box, clock)
    clock.t = sealed_at + 300 + CLOCK_SKEW_S + 1
    refused = box.refuse(wire, agg.jid)
    assert refused.kind == "stale"
    assert len(box.receiver.replay) == 0  # never remembered: the cache only holds fresh ones
    clock.t = sealed_at - CLOCK_SKEW_S - 5  # the receiver's clock is behind: from the future
    assert box.refuse(wire, agg.jid).kind == "stale"
    clock.t = sealed_at + 300 + CLOCK_SKEW_S  # inside the allowance
    assert box.receiver.open(wire, agg.jid).payload == PAYLOAD


def test_a_home_may_not_send_a_flexibility_order(agg: Party, box: Party, clock: FakeClock) -> None:
    wire = seal(
        b"{}",
        type="flex-order",
        sender=box.sender,
        recipient=agg.creds.certificate(),
        now=clock.t,
    )
    refused = agg.refuse(wire, box.jid)
    assert refused.kind == "denied"
    assert "role home may not send 'flex-order' to role aggregator" in refused.detail
    offer = seal(
        b"{}", type="flex-offer", sender=box.sender, recipient=agg.creds.certificate(), now=clock.t
    )
    assert agg.receiver.open(offer, box.jid).header.type == "flex-offer"


def test_a_home_accepts_prices_only_from_its_own_aggregator(
    party: PartyFactory, box: Party, clock: FakeClock
) -> None:
    other = party(Identity("agg-2", AGG.role, xmpp="agg-2@xmpp.homeflex.test"))
    refused = box.refuse(prices(other, box, clock), other.jid)
    assert refused.kind == "denied" and "not the aggregator of home box-0001" in refused.detail


def test_a_dso_order_reaches_an_aggregator(
    party: PartyFactory, agg: Party, clock: FakeClock
) -> None:
    dso = party(DSO)
    wire = seal(
        b"{}",
        type="flex-request",
        sender=dso.sender,
        recipient=agg.creds.certificate(),
        now=clock.t,
    )
    assert agg.receiver.open(wire, dso.jid).sender == DSO


def test_a_message_for_another_recipient(
    party: PartyFactory, agg: Party, box: Party, clock: FakeClock
) -> None:
    box2 = party(BOX2, aggregator="agg-1")
    wire = prices(agg, box2, clock)
    refused = box.refuse(wire, agg.jid)
    assert refused.kind == "not-for-me" and "box-0002" in refused.detail
    assert box2.receiver.open(wire, agg.jid).payload == PAYLOAD


def test_sealed_to_another_key_of_the_same_name_cannot_be_decrypted(
    party: PartyFactory, agg: Party, box: Party, clock: FakeClock
) -> None:
    # the box was re-issued (new key); an envelope sealed to its old certificate is addressed
    # to it by name, signed correctly, yet the new key cannot open it
    renewed = party(BOX, aggregator="agg-1")
    assert renewed.creds.certificate().public_key() != box.creds.certificate().public_key()
    wire = prices(agg, box, clock)
    assert renewed.refuse(wire, agg.jid).kind == "undecryptable"
    # and a valid signature over a corrupted ciphertext (a buggy or malicious sender) too
    obj = json.loads(prices(agg, box, clock))
    hdr = canonical_json(obj["hdr"])
    ct = base64.b64decode(flip(obj["ct"], 5))
    epk = base64.b64decode(obj["epk"])
    sig = agg.sender.key.sign(_signed_bytes(hdr, epk, ct), ec.ECDSA(hashes.SHA256()))
    forged = edit(
        prices(agg, box, clock),
        **{**obj, "ct": base64.b64encode(ct).decode(), "sig": base64.b64encode(sig).decode()},
    )
    assert box.refuse(forged, agg.jid).kind == "undecryptable"


def test_a_ciphertext_re_signed_by_another_party_does_not_decrypt(
    party: PartyFactory, agg: Party, box: Party, clock: FakeClock
) -> None:
    # box-0002 (a genuine home of the same aggregator) intercepts box-0001's offer and passes
    # it off as its own: it must name itself in the header to pass the sender checks, and that
    # header no longer matches the one the ciphertext was encrypted with
    box2 = party(BOX2, aggregator="agg-1")
    offer = seal(
        PAYLOAD,
        type="flex-offer",
        sender=box.sender,
        recipient=agg.creds.certificate(),
        now=clock.t,
    )
    obj = json.loads(offer)
    obj["hdr"].update(sender="box-0002", sender_xmpp=box2.jid)
    hdr = canonical_json(obj["hdr"])
    epk, ct = base64.b64decode(obj["epk"]), base64.b64decode(obj["ct"])
    sig = box2.sender.key.sign(_signed_bytes(hdr, epk, ct), ec.ECDSA(hashes.SHA256()))
    obj.update(chain=list(box2.sender.chain_b64), sig=base64.b64encode(sig).decode())
    assert agg.refuse(canonical_json(obj).decode(), box2.jid).kind == "undecryptable"
    assert agg.receiver.open(offer, box.jid).payload == PAYLOAD


def test_a_non_canonical_spelling_is_refused(agg: Party, box: Party, clock: FakeClock) -> None:
    wire = prices(agg, box, clock)
    spaced = json.dumps(json.loads(wire), sort_keys=True)  # same content, with spaces
    assert box.refuse(spaced, agg.jid).kind == "malformed"
    padded_bits = json.loads(wire)
    sig = padded_bits["sig"]
    # the last base64 character before '=' carries unused bits: set one, same bytes decoded
    i = len(sig.rstrip("=")) - 1
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    if sig.endswith("="):
        sig2 = sig[:i] + alphabet[alphabet.index(sig[i]) ^ 1] + sig[i + 1 :]
        assert base64.b64decode(sig2) == base64.b64decode(sig)
        assert box.refuse(edit(wire, sig=sig2), agg.jid).kind == "malformed"
    assert box.refuse("x" * (MAX_WIRE + 1), agg.jid).kind == "malformed"
    assert box.refuse("[" * 50_000 + "]" * 50_000, agg.jid).kind == "malformed"
    assert box.refuse(edit(wire, sig="NaN").replace('"NaN"', "NaN"), agg.jid).kind == "malformed"
    assert box.receiver.open(wire, agg.jid).payload == PAYLOAD


def test_peers_refuse_to_hand_out_a_revoked_certificate(
    agg: Party, box: Party, clock: FakeClock, fleet_ca: FleetCA
) -> None:
    peers = Peers(ChainVerifier(TrustStore.load(agg.creds.ca_path, fleet_ca.dir / "crl.pem")))
    peers.add(box.creds.chain(), clock.t)
    assert peers.certificate("box-0001", clock.t) == box.creds.certificate()
    fleet_ca.revoke(box.creds.certificate().serial_number)
    fleet_ca.publish_crl()
    with pytest.raises(TrustError) as err:
        peers.certificate("box-0001", clock.t)
    assert err.value.code == "revoked"
    with pytest.raises(KeyError):
        peers.certificate("box-0002", clock.t)


FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@FUZZ
@given(text=st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_random_text_is_refused(box: Party, text: str) -> None:
    _only_refused(box, text)


@FUZZ
@given(value=JSON)
def test_random_json_is_refused(box: Party, value: object) -> None:
    _only_refused(box, json.dumps(value, sort_keys=True, separators=(",", ":")))


@FUZZ
@given(data=st.data())
def test_an_envelope_with_random_parts_is_refused(
    agg: Party, box: Party, clock: FakeClock, data: st.DataObject
) -> None:
    obj = json.loads(prices(agg, box, clock))
    if data.draw(st.booleans()):
        key = data.draw(st.sampled_from(sorted(obj)))
        part = obj
    else:
        key = data.draw(st.sampled_from(sorted(obj["hdr"])))
        part = obj["hdr"]
    value = data.draw(JSON)
    assume(json.dumps(value) != json.dumps(part[key]))  # a real change
    part[key] = value
    _only_refused(box, canonical_json(obj).decode())


def _only_refused(box: Party, wire: str) -> None:
    try:
        box.receiver.open(wire, "agg-1@xmpp.homeflex.test")
    except Refused as refused:
        assert refused.kind != "internal-error", refused
    else:  # pragma: no cover - the fuzzers can only produce a valid envelope by a miracle
        pytest.fail(f"accepted {wire!r}")
