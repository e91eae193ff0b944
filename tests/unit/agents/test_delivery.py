"""Delivery until acknowledged: resend times, acknowledgement by any attempt and only from the
recipient, expiry, and a restart that keeps what was pending."""

from __future__ import annotations

from pathlib import Path

from homeflex.agents.delivery import RETRY_MAX_S, Deliveries

T0 = 1_782_000_000.0


def test_a_message_is_resent_with_growing_waits_until_acknowledged(tmp_path: Path) -> None:
    d = Deliveries(tmp_path / "deliveries.db")
    assert d.add("order:o1", "home-1", "flex-order", b"{}", T0, ttl_s=3600)
    sent_at = []
    t = T0
    while t < T0 + 300:
        for p in d.due(t):
            assert (p.key, p.recipient, p.type, p.payload) == (
                "order:o1",
                "home-1",
                "flex-order",
                b"{}",
            )
            d.sent(p.key, f"env-{p.tries}")
            sent_at.append(t - T0)
        t += 0.5
    # 2, 4, 8, 16, 32 s apart, then every RETRY_MAX_S
    assert sent_at[:7] == [0, 2, 6, 14, 30, 62, 62 + RETRY_MAX_S]
    # the third attempt's acknowledgement from the recipient delivers it; nothing is due after
    assert d.acked("env-3", "home-2") is None  # not the recipient
    assert d.acked("env-3", "home-1") == "order:o1"
    assert d.acked("env-1", "home-1") is None  # a late ack of an earlier attempt: done already
    assert d.pending() == [] and d.due(t + 1000) == []


def test_the_same_key_added_twice_is_one_delivery(tmp_path: Path) -> None:
    d = Deliveries(tmp_path / "deliveries.db")
    assert d.add("plan:r1", "agg", "p-plan", b"a", T0, ttl_s=60)
    assert not d.add("plan:r1", "agg", "p-plan", b"b", T0 + 1, ttl_s=60)
    (p,) = d.due(T0 + 1)
    assert p.payload == b"a"


def test_an_unacknowledged_message_expires_and_is_reported_once(tmp_path: Path) -> None:
    d = Deliveries(tmp_path / "deliveries.db")
    d.add("offer:r1", "agg", "flex-offer", b"x", T0, ttl_s=10)
    d.add("offer:r2", "agg", "flex-offer", b"y", T0, ttl_s=100)
    assert [p.key for p in d.due(T0)] == ["offer:r1", "offer:r2"]
    assert [p.key for p in d.due(T0 + 12)] == ["offer:r2"]  # r1 is past its expiry: not sent
    (gone,) = d.expired(T0 + 12)
    assert (gone.key, gone.tries) == ("offer:r1", 1)
    assert d.expired(T0 + 12) == [] and d.pending() == ["offer:r2"]


def test_a_restart_resends_what_was_pending_on_its_schedule(tmp_path: Path) -> None:
    d = Deliveries(tmp_path / "deliveries.db")
    d.add("order:o1", "home-1", "flex-order", b"{}", T0, ttl_s=3600)
    (p,) = d.due(T0)
    d.sent(p.key, "env-1")
    d.close()
    again = Deliveries(tmp_path / "deliveries.db")  # the agent restarted
    assert again.due(T0 + 1) == []  # the next attempt is still 2 s after the first
    (p,) = again.due(T0 + 2)
    assert p.tries == 2
    assert again.acked("env-1", "home-1") == "order:o1"  # an ack of the attempt before the restart
