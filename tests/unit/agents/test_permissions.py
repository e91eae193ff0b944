"""The role table and the home-aggregator relation, as each party applies them."""

from __future__ import annotations

import pytest

from homeflex.agents.permissions import ALLOWED, MESSAGE_TYPES, Denied, Permissions, role_allows
from homeflex.pki.identity import Identity, Role

from .conftest import AGG, BOX, BOX2, DSO

AGG2 = Identity("agg-2", Role.AGGREGATOR, xmpp="agg-2@xmpp.homeflex.test")
FORECASTER = Identity("forecast-1", Role.FORECASTER, xmpp="forecast-1@xmpp.homeflex.test")
SECURITY = Identity("security", Role.SERVICE, xmpp="security@xmpp.homeflex.test")

ON_BOX = Permissions(BOX, aggregator="agg-1")
ON_AGG = Permissions(AGG, homes=frozenset({"box-0001"}))
ON_DSO = Permissions(DSO)


def allowed(perms: Permissions, sender: Identity, recipient: Identity, type: str) -> bool:
    try:
        perms.check(sender, recipient, type)
    except Denied:
        return False
    return True


def test_the_usef_cycle_goes_the_right_way() -> None:
    H, A, D, F = Role.HOME, Role.AGGREGATOR, Role.DSO, Role.FORECASTER
    expected = {
        "prices": {(A, H)},
        "flex-request": {(D, A)},
        "flex-offer": {(A, D), (H, A)},
        "flex-order": {(A, H), (D, A)},
        "p-plan": {(H, A)},
        "d-prognosis": {(A, D)},
        "forecast-request": {(H, F), (A, F)},
        "forecast": {(F, H), (F, A)},
        "settlement": {(A, H), (D, A)},
        "metered": {(A, D)},
        "security-event": {(r, Role.SERVICE) for r in Role},
        "ack": {(H, A), (A, H), (A, D), (D, A), (H, F), (F, H), (A, F), (F, A)},
    }
    assert set(expected) == MESSAGE_TYPES
    assert {(s, t, r) for t, pairs in expected.items() for s, r in pairs} == set(ALLOWED)


def test_only_the_aggregator_sends_prices_and_orders_to_homes() -> None:
    for type in ("prices", "flex-order", "settlement"):
        assert [s for s in Role if role_allows(s, type, Role.HOME)] == [Role.AGGREGATOR]
    assert [s for s in Role if role_allows(s, "flex-request", Role.AGGREGATOR)] == [Role.DSO]
    assert not role_allows(Role.HOME, "flex-order", Role.AGGREGATOR)
    assert not role_allows(Role.HOME, "prices", Role.HOME)
    assert not role_allows(Role.DSO, "prices", Role.HOME)


def test_a_home_speaks_only_to_its_own_aggregator() -> None:
    assert allowed(ON_BOX, AGG, BOX, "prices")
    assert allowed(ON_BOX, BOX, AGG, "p-plan")  # the same rules for what the box sends
    assert not allowed(ON_BOX, AGG2, BOX, "prices")
    assert not allowed(ON_BOX, BOX, AGG2, "flex-offer")
    with pytest.raises(Denied, match="agg-2 is not the aggregator of home box-0001"):
        ON_BOX.check(AGG2, BOX, "flex-order")
    with pytest.raises(Denied, match="none configured"):
        Permissions(BOX).check(AGG, BOX, "prices")
    assert allowed(ON_BOX, FORECASTER, BOX, "forecast")  # no relation needed with a forecaster


def test_an_aggregator_speaks_only_to_its_own_homes() -> None:
    assert allowed(ON_AGG, BOX, AGG, "flex-offer")
    assert allowed(ON_AGG, AGG, BOX, "flex-order")
    with pytest.raises(Denied, match="home box-0002 is not one of aggregator agg-1's homes"):
        ON_AGG.check(BOX2, AGG, "p-plan")
    assert not allowed(ON_AGG, AGG, BOX2, "prices")
    assert allowed(ON_AGG, DSO, AGG, "flex-request")
    assert allowed(ON_AGG, AGG, DSO, "d-prognosis")


def test_denials_name_the_rule() -> None:
    with pytest.raises(Denied, match="role home may not send 'flex-order' to role aggregator"):
        ON_AGG.check(BOX, AGG, "flex-order")
    with pytest.raises(Denied, match="unknown message type 'launch'"):
        ON_AGG.check(DSO, AGG, "launch")
    with pytest.raises(Denied, match="neither side is dso-1"):
        ON_DSO.check(BOX, AGG, "p-plan")
    assert allowed(ON_DSO, DSO, SECURITY, "security-event")
    assert not allowed(ON_DSO, SECURITY, DSO, "security-event")
