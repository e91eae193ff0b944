"""A real mosquitto on loopback with our TLS configuration: who may connect, who may publish
where, what each refusal leaves in the security log, and revocation taking effect on reload."""

from __future__ import annotations

import queue
import shutil
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from homeflex.cloud.mqtt.broker import (
    Broker,
    BrokerError,
    render_acl,
    render_config,
    run_broker,
)
from homeflex.mqtt_client import (
    ALL_BOXES,
    ConnectRefused,
    MqttError,
    MqttLink,
    PublishRefused,
    box_of,
    box_topic,
)
from homeflex.pki.bundle import Credentials, issue_credentials
from homeflex.pki.ca import FleetCA
from homeflex.pki.identity import Identity, Role
from homeflex.pki.trust import client_context
from homeflex.security import Event, SecurityLog, verify_chain
from tests.pki_fixtures import CredsFactory, make_fleet
from tests.recording_proxy import recording_proxy  # fixtures: tests/conftest.py

pytestmark = pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs mosquitto")

HOME = Role.HOME
BROKER_ID = Identity("mqtt", Role.SERVICE, dns=("localhost",), ips=("127.0.0.1",))
INGEST_ID = Identity("ingest", Role.SERVICE)
SHIPPED_CONF = Path(__file__).parents[2] / "packaging" / "mosquitto" / "homeflex.conf"
SHIPPED_ACL = Path(__file__).parents[2] / "packaging" / "mosquitto" / "acl"


@pytest.fixture
def broker(creds: CredsFactory, tmp_path: Path) -> Iterator[Broker]:
    security = SecurityLog(tmp_path / "broker-security.jsonl")
    b = Broker(creds(BROKER_ID), tmp_path / "broker", services=["ingest"], security=security)
    b.start()
    yield b
    b.stop()


def link(c: Credentials, broker: Broker, security: SecurityLog | None = None) -> MqttLink:
    return MqttLink(c, "127.0.0.1", broker.port, security=security, timeout=3.0)


def broker_events(broker: Broker) -> SecurityLog:
    assert broker.security is not None
    return broker.security


def wait_event(
    log: SecurityLog, kind: str, match: Callable[[Event], bool] = lambda e: True
) -> Event:
    """The broker's log is read on another thread: the event follows the refusal closely."""
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        found = [e for e in log.events() if e.kind == kind and match(e)]
        if found:
            return found[0]
        time.sleep(0.02)
    raise AssertionError(f"no {kind} event; events: {[(e.kind, e.source) for e in log.events()]}")


def raw_attempt(port: int, context: ssl.SSLContext | None, client_id: str = "intruder") -> str:
    """Connect with a bare paho client (no TLS, or TLS without our credentials): 'connack
    Success' if the broker accepted, else how it ended."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        reconnect_on_failure=False,
    )
    if context is not None:
        client.tls_set_context(context)
    outcome: queue.Queue[str] = queue.Queue()
    client.on_connect = lambda c, u, f, rc, p: outcome.put(f"connack {rc}")
    client.on_disconnect = lambda c, u, f, rc, p: outcome.put(f"closed {rc}")
    try:
        client.connect("127.0.0.1", port)
    except (OSError, ssl.SSLError) as exc:
        return f"error {exc}"
    client.loop_start()
    try:
        return outcome.get(timeout=5)
    finally:
        client.disconnect()
        client.loop_stop()


def collector(q: queue.Queue[tuple[str, bytes]]) -> Callable[[str, bytes], None]:
    return lambda topic, payload: q.put((topic, payload))


def test_box_publishes_under_its_own_topic_and_the_service_gets_the_exact_bytes(
    broker: Broker, creds: CredsFactory
) -> None:
    got: queue.Queue[tuple[str, bytes]] = queue.Queue()
    payload = bytes(range(256)) + b'{"kW": 2.5}\x00\xff'
    with (
        link(creds(INGEST_ID), broker) as ingest,
        link(creds(Identity("box-a", HOME)), broker) as a,
    ):
        ingest.subscribe(ALL_BOXES, collector(got))
        a.publish(box_topic("box-a", "telemetry", "meter"), payload)
        topic, data = got.get(timeout=3)
    assert topic == "homeflex/box/box-a/telemetry/meter"
    assert box_of(topic) == "box-a"
    assert data == payload
    assert broker_events(broker).events() == []


def test_publish_under_another_box_is_refused_not_delivered_and_recorded(
    broker: Broker, creds: CredsFactory, tmp_path: Path
) -> None:
    got: queue.Queue[tuple[str, bytes]] = queue.Queue()
    box_log = SecurityLog(tmp_path / "box-a-security.jsonl")
    a_creds = creds(Identity("box-a", HOME))
    with link(creds(INGEST_ID), broker) as ingest, link(a_creds, broker, box_log) as a:
        ingest.subscribe(ALL_BOXES, collector(got))
        with pytest.raises(PublishRefused, match="Not authorized") as refused:
            a.publish(box_topic("box-b", "telemetry"), b"forged reading")
        assert refused.value.topic == "homeflex/box/box-b/telemetry"
        # per-publisher order is kept: had the forged message been routed, it would come first
        a.publish(box_topic("box-a", "telemetry"), b"marker")
        assert got.get(timeout=3) == ("homeflex/box/box-a/telemetry", b"marker")
        assert got.empty()
        assert a.connected  # the refusal does not cost the box its session
    event = wait_event(broker_events(broker), "mqtt-publish-denied")
    assert event.source == "box-a"
    assert event.fields["topic"] == "homeflex/box/box-b/telemetry"
    assert event.fields["qos"] == 1
    assert event.fields["address"].startswith("127.0.0.1:")
    assert [e.kind for e in broker_events(broker).events()] == ["mqtt-publish-denied"]
    (mine,) = box_log.events()
    assert mine.kind == "mqtt-publish-refused"
    assert mine.fields["reason_code"] == 135  # MQTT 5 "Not authorized"
    assert verify_chain(broker_events(broker).events()) == []


def test_a_box_reading_all_boxes_gets_only_its_own(broker: Broker, creds: CredsFactory) -> None:
    got: queue.Queue[tuple[str, bytes]] = queue.Queue()
    a, b = creds(Identity("box-a", HOME)), creds(Identity("box-b", HOME))
    with link(a, broker) as la, link(b, broker) as lb:
        la.subscribe(ALL_BOXES, collector(got))  # granted, but the ACL filters each message
        lb.publish(box_topic("box-b", "telemetry"), b"b's private reading")
        la.publish(box_topic("box-a", "telemetry"), b"a's own")
        assert got.get(timeout=3) == ("homeflex/box/box-a/telemetry", b"a's own")
        assert got.empty()


def test_a_box_cannot_take_over_another_box_session(broker: Broker, creds: CredsFactory) -> None:
    got: queue.Queue[tuple[str, bytes]] = queue.Queue()
    a, b = creds(Identity("box-a", HOME)), creds(Identity("box-b", HOME))
    with link(a, broker) as la:
        la.subscribe(box_topic("box-a") + "/#", collector(got))
        # b asks for a's client id: the broker uses b's certificate name instead; had it not,
        # a's session would have been closed before b's CONNACK
        assert raw_attempt(broker.port, client_context(b), client_id="box-a") == "connack Success"
        la.publish(box_topic("box-a", "telemetry"), b"still mine")
        assert got.get(timeout=3) == ("homeflex/box/box-a/telemetry", b"still mine")
        assert la.connected


def test_plaintext_connection_is_refused(broker: Broker) -> None:
    outcome = raw_attempt(broker.port, None)
    assert not outcome.startswith("connack"), outcome
    event = wait_event(broker_events(broker), "mqtt-tls-refused")
    assert event.fields["reason"] == "not-tls"
    assert event.source.partition(":")[0] == "127.0.0.1"


def test_client_without_certificate_is_refused(broker: Broker, creds: CredsFactory) -> None:
    ours = creds(Identity("box-a", HOME))  # only for our root and list: trusts the broker
    outcome = raw_attempt(broker.port, client_context(ca=ours.ca_path, crl=ours.crl_path))
    assert not outcome.startswith("connack"), outcome
    event = wait_event(broker_events(broker), "mqtt-tls-refused")
    assert event.fields["reason"] == "no-certificate"
    assert event.source.partition(":")[0] == "127.0.0.1"  # with the port when mosquitto says it


def test_same_name_from_another_ca_is_refused(
    broker: Broker, creds: CredsFactory, tmp_path: Path
) -> None:
    other = make_fleet(tmp_path / "other-pki")  # same root name: only the keys differ
    try:
        forged = issue_credentials(other, Identity("box-a", HOME), tmp_path / "forged")
    finally:
        other.close()
    ours = creds(Identity("box-b", HOME))
    shutil.copy(ours.ca_path, forged.ca_path)  # the attacker knows and trusts our public root
    shutil.copy(ours.crl_path, forged.crl_path)
    box_log = SecurityLog(tmp_path / "forged-security.jsonl")
    with pytest.raises(ConnectRefused, match=r"before CONNACK|handshake"):
        link(forged, broker, box_log).connect()
    event = wait_event(broker_events(broker), "mqtt-tls-refused")
    assert event.fields["reason"] == "certificate-refused"
    assert event.source.partition(":")[0] == "127.0.0.1"  # with the port when mosquitto says it
    assert [e.kind for e in box_log.events()] == ["mqtt-connect-refused"]


def test_box_refuses_a_broker_not_certified_by_our_root(
    creds: CredsFactory, tmp_path: Path
) -> None:
    other = make_fleet(tmp_path / "rogue-pki")
    try:
        rogue = issue_credentials(other, BROKER_ID, tmp_path / "rogue-creds")
    finally:
        other.close()
    box_log = SecurityLog(tmp_path / "box-security.jsonl")
    with (
        Broker(rogue, tmp_path / "rogue") as b,
        pytest.raises(ConnectRefused, match="broker certificate refused"),
    ):
        link(creds(Identity("box-a", HOME)), b, box_log).connect()
    (event,) = box_log.events()
    assert event.kind == "mqtt-server-refused"
    assert event.source == f"mqtts://127.0.0.1:{b.port}"


def test_revoked_box_is_refused_after_the_list_is_republished_and_reloaded(
    broker: Broker, creds: CredsFactory, fleet_ca: FleetCA
) -> None:
    a, b = creds(Identity("box-a", HOME)), creds(Identity("box-b", HOME))
    for c in (a, b):
        with link(c, broker) as ok:
            assert ok.connected
    fleet_ca.revoke(a.certificate().serial_number, "key compromise")
    # the broker's list is fetched from the fleet CA; one refresh interval = republish + reload
    shutil.copy(fleet_ca.publish_crl(), broker.crl)
    broker.reload()
    with pytest.raises(ConnectRefused):
        link(a, broker).connect()
    event = wait_event(broker_events(broker), "mqtt-tls-refused")
    assert event.fields["reason"] == "certificate-refused"
    got: queue.Queue[tuple[str, bytes]] = queue.Queue()
    with link(b, broker) as lb:
        lb.subscribe(box_topic("box-b") + "/#", collector(got))
        lb.publish(box_topic("box-b", "telemetry"), b"still here")
        assert got.get(timeout=3) == ("homeflex/box/box-b/telemetry", b"still here")


def test_a_bad_revocation_list_is_not_loaded_and_the_broker_keeps_serving(
    broker: Broker, creds: CredsFactory
) -> None:
    broker.crl.write_text("not a list\n")
    with pytest.raises(BrokerError, match="not a revocation list"):
        broker.reload()
    with link(creds(Identity("box-b", HOME)), broker) as lb:
        lb.publish(box_topic("box-b", "telemetry"), b"ok")


def _directives(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            out[key] = value
    return out


def test_shipped_configuration_has_the_generated_settings(tmp_path: Path) -> None:
    c = Credentials(tmp_path)
    generated = _directives(
        render_config(
            host="127.0.0.1", port=1, creds=c, crl=tmp_path / "crl.pem", acl=tmp_path / "acl"
        )
    )
    shipped = _directives(SHIPPED_CONF.read_text())
    paths_and_places = {"listener", "acl_file", "cafile", "certfile", "keyfile", "crlfile"}
    paths_and_places |= {"log_dest", "user", "persistence"}
    assert shipped.keys() - {"user"} == generated.keys() - {"user"}
    for key, value in generated.items():
        if key not in paths_and_places:
            assert shipped[key] == value, key
    for key in paths_and_places & shipped.keys():
        assert shipped[key], key
    shipped_acl = _directives(SHIPPED_ACL.read_text())
    assert shipped_acl["pattern"] == _directives(render_acl([]))["pattern"]
    assert {"user", "topic"} <= shipped_acl.keys()


# The log watcher on lines mosquitto 2.0.11 wrote in these tests: attribution and what is not an
# event (a broker error's OpenSSL detail, a port probe, an ordinary disconnect).


def _watch(tmp_path: Path, lines: list[str]) -> list[Event]:
    from homeflex.cloud.mqtt.logwatch import BrokerLogWatch

    log = SecurityLog(tmp_path / "watch.jsonl")
    watch = BrokerLogWatch(log, "mqtts://127.0.0.1:8883")
    for line in lines:
        watch.feed(f"2026-11-22T09:04:25: {line}")
    return log.events()


def test_logwatch_attributes_a_tls_refusal_only_when_it_is_unambiguous(tmp_path: Path) -> None:
    events = _watch(
        tmp_path,
        [
            "New connection from 10.0.0.7:5000 on port 8883.",
            "OpenSSL Error[0]: error:0A000086:SSL routines::certificate verify failed",
            "OpenSSL Error[1]: error:0A000086:SSL routines::more detail of the same refusal",
            "Client <unknown> disconnected: Protocol error.",
            "New connection from 10.0.0.8:5001 on port 8883.",
            "New connection from 10.0.0.9:5002 on port 8883.",
            "OpenSSL Error[0]: error:0A0000C7:SSL routines::peer did not return a certificate",
        ],
    )
    assert [(e.source, e.fields["reason"]) for e in events] == [
        ("10.0.0.7:5000", "certificate-refused"),
        ("unknown peer", "no-certificate"),
    ]
    assert events[1].fields["candidates"] == ["10.0.0.8:5001", "10.0.0.9:5002"]


def test_logwatch_ignores_broker_errors_probes_and_normal_traffic(tmp_path: Path) -> None:
    events = _watch(
        tmp_path,
        [
            "Reloading config.",
            'Error: Unable to load certificate revocation file "/x/crl.pem". Check crlfile.',
            "OpenSSL Error[0]: error:0480006C:PEM routines::no start line",
            "New connection from 10.0.0.5:4000 on port 8883.",
            "Client <unknown> disconnected: Protocol error.",  # a probe that sent nothing
            "New connection from 10.0.0.6:4001 on port 8883.",
            "New client connected from 10.0.0.6:4001 as box-a (p5, c1, k30, u'box-a').",
            "Received PUBLISH from box-a (d0, q1, r0, m1, 'homeflex/box/box-a/t', ... (2 bytes))",
            "Client box-a disconnected.",
            "New connection from 10.0.0.4:4002 on port 8883.",
            "OpenSSL Error[0]: error:0A00010B:SSL routines::wrong version number",
        ],
    )
    # the probe's entry was dropped, so the last refusal is attributed to its own connection
    assert [(e.kind, e.source, e.fields["reason"]) for e in events] == [
        ("mqtt-tls-refused", "10.0.0.4:4002", "not-tls")
    ]


def test_logwatch_names_the_certificate_behind_a_denied_publish(tmp_path: Path) -> None:
    (event,) = _watch(
        tmp_path,
        [
            "New client connected from 10.0.0.6:4001 as box-a (p5, c1, k30, u'box-a').",
            "Denied PUBLISH from box-a (d0, q1, r0, m1, 'homeflex/box/box-b/it's (odd)', "
            "... (14 bytes))",
        ],
    )
    assert (event.kind, event.source) == ("mqtt-publish-denied", "box-a")
    assert event.fields["topic"] == "homeflex/box/box-b/it's (odd)"
    assert event.fields["address"] == "10.0.0.6:4001"
    assert event.fields["size"] == 14


def test_a_connected_box_is_cut_off_when_its_revocation_is_published(
    creds: CredsFactory, fleet_ca: FleetCA, tmp_path: Path
) -> None:
    """`run_broker` watches the list: a newly revoked box loses its connection within one check
    interval and cannot come back; the other box reconnects by itself."""
    broker = Broker(creds(BROKER_ID), tmp_path / "watched", services=["ingest"])
    stop = threading.Event()
    runner = threading.Thread(target=run_broker, args=(broker, stop, 0.2))
    runner.start()
    try:
        deadline = time.monotonic() + 5
        while not broker.running and time.monotonic() < deadline:
            time.sleep(0.05)
        a, b = creds(Identity("box-a", HOME)), creds(Identity("box-b", HOME))
        with link(a, broker) as la, link(b, broker) as lb:
            assert la.connected and lb.connected
            fleet_ca.revoke(a.certificate().serial_number, "stolen")
            shutil.copy(fleet_ca.publish_crl(), broker.crl)
            deadline = time.monotonic() + 5
            while la.connected and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not la.connected
            # box-b is back once a publish of its own gets through: its `connected` may still
            # be True from before the broker restarted, and paho's reconnect delay starts at 1 s
            deadline = time.monotonic() + 10
            while True:
                try:
                    lb.publish(box_topic("box-b", "telemetry"), b"back")
                    break
                except MqttError as exc:
                    if isinstance(exc, PublishRefused) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            assert not la.connected  # its reconnects are refused
        with pytest.raises(ConnectRefused):
            link(a, broker).connect()
    finally:
        stop.set()
        runner.join(10)


def test_a_capture_of_the_traffic_holds_none_of_the_payload(
    broker: Broker, creds: CredsFactory
) -> None:
    """Seed 004 TST-SEC#08: the bytes between box, broker and service, recorded on the way,
    hold neither the payload nor the topic."""
    marker = b"meter box-a 2026-06-01T18:00 import 1234.5 Wh"
    got: queue.Queue[tuple[str, bytes]] = queue.Queue()
    with recording_proxy(("127.0.0.1", broker.port)) as proxy:
        box = MqttLink(creds(Identity("box-a", HOME)), "127.0.0.1", proxy.port, timeout=3.0)
        ingest = MqttLink(creds(INGEST_ID), "127.0.0.1", proxy.port, timeout=3.0)
        with box, ingest:
            ingest.subscribe(ALL_BOXES, collector(got))
            box.publish(box_topic("box-a", "telemetry"), marker)
            assert got.get(timeout=3) == ("homeflex/box/box-a/telemetry", marker)
        captured = proxy.captured()
    assert b"\x17\x03\x03" in captured and len(captured) > 2 * len(marker)
    for known in (marker, b"1234.5", b"homeflex/box", b"box-a/telemetry"):
        assert known not in captured
