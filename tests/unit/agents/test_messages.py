"""The agents' message models: one per type of the role table, canonical bytes, and refusals that
name the type and the field."""

from __future__ import annotations

import json
from datetime import date

import pytest

from homeflex.agents.messages import (
    MESSAGES,
    Ack,
    DPrognosis,
    FlexOffer,
    FlexOrder,
    FlexRequest,
    Forecast,
    ForecastRequest,
    MessageError,
    Metered,
    OfferBlock,
    PPlan,
    Prices,
    SecurityEvent,
    Settlement,
    decode,
    encode,
)
from homeflex.agents.permissions import MESSAGE_TYPES

DAY = date(2026, 6, 21)
EXAMPLES = [
    Prices(
        round="r1",
        day=DAY,
        import_eur_kwh=[0.3] * 96,
        export_eur_kwh=[0.05] * 96,
        answer_by=1_782_000_000.0,
    ),
    PPlan(round="r1", day=DAY, net_kw=[0.5] * 96, revision=2),
    FlexOffer(
        round="r1",
        id="home-1.r1",
        day=DAY,
        blocks=[OfferBlock(ptu=80, direction="up", kw=2.5, price=0.12)],
    ),
    FlexRequest(
        round="r1",
        id="req-1",
        day=DAY,
        congestion_point="trafo-7",
        profile_kw={80: 12.0, 81: 8.0},
        max_price=0.25,
        answer_by=1_782_000_600,
    ),
    FlexOrder(
        round="r1",
        id="o1",
        day=DAY,
        offer="home-1.r1",
        direction="up",
        profile_kw={80: 2.5},
        price=0.12,
    ),
    DPrognosis(round="r1", day=DAY, congestion_point="trafo-7", net_kw=[250.0] * 96, homes=50),
    ForecastRequest(day=DAY, series=["pv", "load"]),
    Forecast(day=DAY, first_ptu=40, pv_kw=[1.0] * 56, load_kw=[0.4] * 56),
    Settlement(
        order="o1",
        day=DAY,
        delivered_kwh=0.5,
        shortfall_kwh=0.125,
        payment_eur=0.06,
        penalty_eur=0.05,
    ),
    Metered(day=DAY, first_ptu=76, congestion_point="trafo-7", net_kwh=[7.5] * 8, homes=10),
    Ack(status="ok"),
    SecurityEvent(kind="bad-signature", source="xmpp home-9", detail="signature does not verify"),
]


def test_every_type_the_role_table_allows_has_exactly_one_model() -> None:
    assert set(MESSAGES) == MESSAGE_TYPES
    assert {type(m) for m in EXAMPLES} == set(MESSAGES.values())


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_each_message_round_trips_through_canonical_bytes(message: object) -> None:
    assert not isinstance(message, type)
    type_, payload = encode(message)  # type: ignore[arg-type]
    assert decode(type_, payload) == message
    # canonical: sorted keys, no spaces, so the same message is always the same bytes
    canonical = json.dumps(json.loads(payload), sort_keys=True, separators=(",", ":"))
    assert payload == canonical.encode()


def test_the_wire_form_is_plain_json_with_ptus_as_keys() -> None:
    _, payload = encode(EXAMPLES[4])
    assert json.loads(payload) == {
        "round": "r1", "id": "o1", "day": "2026-06-21", "offer": "home-1.r1", "direction": "up",
        "profile_kw": {"80": 2.5}, "price": 0.12,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("type_", "payload", "field", "says"),
    [
        ("p-plan", b'{"round":"r1","day":"2026-06-21","net_kw":[NaN],"revision":0}', "payload",
         "NaN is not a JSON number"),
        ("p-plan", b'{"round":"r1","day":"2026-06-21","net_kw":[1e9],"revision":0}', "net_kw.0",
         "less than or equal"),
        ("p-plan", json.dumps({"round": "r1", "day": "2026-06-21", "net_kw": [0.0] * 97,
                               "revision": 0}).encode(), "payload", "run past the day's 96 PTUs"),
        ("prices", json.dumps({"round": "r1", "day": "2026-06-21", "import_eur_kwh": [0.3] * 96,
                               "export_eur_kwh": [0.1] * 95, "answer_by": 1.0}).encode(),
         "payload", "same PTUs"),
        ("flex-request", json.dumps({"round": "r1", "id": "q", "day": "2026-06-21",
                                     "congestion_point": "t", "profile_kw": {"96": 1.0},
                                     "max_price": 0.2, "answer_by": 1.0}).encode(),
         "profile_kw.96.[key]", "less than or equal to 95"),
        ("flex-offer", json.dumps({"round": "r1", "id": "o", "day": "2026-06-21", "blocks": [
            {"ptu": 3, "direction": "up", "kw": -1.0, "price": 0.1}]}).encode(),
         "blocks.0.kw", "greater than 0"),
        ("ack", b'{"status":"ok","extra":1}', "extra", "Extra inputs"),
        ("ack", b"[1, 2]", "payload", "not a JSON object"),
        ("ack", b"\xff", "payload", "not JSON"),
        ("gossip", b"{}", "type", "no such message type"),
    ],
)  # fmt: skip
def test_a_bad_payload_is_refused_naming_the_type_and_field(
    type_: str, payload: bytes, field: str, says: str
) -> None:
    with pytest.raises(MessageError) as caught:
        decode(type_, payload)
    assert caught.value.type == type_ and caught.value.field == field
    assert says in caught.value.detail, caught.value.detail
    assert str(caught.value).startswith(f"{type_}: {field}: ")


def test_an_oversized_payload_is_refused_before_parsing() -> None:
    with pytest.raises(MessageError, match="more than"):
        decode("ack", b" " * (256 * 1024 + 1))
