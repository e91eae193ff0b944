"""MQTT over mutually authenticated TLS, for the gateway (box side) and the cloud services alike.

Topic layout (the broker's ACL, `homeflex.cloud.mqtt.broker`, enforces it):

    homeflex/box/<box name>/...   what a box publishes: `telemetry/...`, `security/...`.
                                  A box may publish and read only under its own name; the
                                  name is its certificate's CN (the broker takes it as the MQTT
                                  user name, so a box cannot claim another's).
    homeflex/cloud/...            what cloud services publish among themselves.

Cloud services (certificate role `service`, listed by name in the broker's ACL) may read every
box's topics (`homeflex/box/+/#`). Nothing flows from the cloud to a box over MQTT: commands go
to the home agent over XMPP.

MQTT 5, not 3.1.1: Mosquitto answers a refused QoS 1 publish with PUBACK reason code 135 (Not
authorized) under MQTT 5, but with an ordinary success PUBACK under 3.1.1, so only MQTT 5 lets a
box notice (and record) that the broker dropped its message.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from homeflex.pki.bundle import Credentials
from homeflex.pki.identity import Identity
from homeflex.pki.trust import client_context
from homeflex.security import SecurityLog

log = logging.getLogger(__name__)

BOX_PREFIX = "homeflex/box"
CLOUD_PREFIX = "homeflex/cloud"
ALL_BOXES = f"{BOX_PREFIX}/+/#"  # what an ingest service subscribes to


def box_topic(box: str, *parts: str) -> str:
    """`homeflex/box/<box>/<parts...>`; ValueError for a part that would escape the prefix."""
    for part in (box, *parts):
        if not part or any(c in part for c in "/+#\0"):
            raise ValueError(f"topic level {part!r}: must be non-empty, without / + # or NUL")
    return "/".join((BOX_PREFIX, box, *parts))


def box_of(topic: str) -> str | None:
    """The box a topic belongs to (`homeflex/box/<box>/...`), None for other topics."""
    parts = topic.split("/")
    if len(parts) >= 4 and "/".join(parts[:2]) == BOX_PREFIX:
        return parts[2]
    return None


class MqttError(Exception):
    """The MQTT session failed; the message says what and where."""


class ConnectRefused(MqttError):
    pass


class PublishRefused(MqttError):
    def __init__(self, topic: str, reason: str) -> None:
        super().__init__(f"the broker refused the publish to {topic}: {reason}")
        self.topic = topic
        self.reason = reason


def make_client(creds: Credentials, *, client_id: str | None = None) -> mqtt.Client:
    """A paho client (MQTT 5, callback API 2) that presents `creds` and verifies the broker's
    certificate against our root, its host name and the revocation list. Not yet connected.
    The broker uses the certificate's CN as client id and user name whatever is sent here."""
    identity = creds.identity()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id or identity.name,
        protocol=mqtt.MQTTv5,
    )
    client.tls_set_context(client_context(creds))
    client.reconnect_delay_set(1, 60)
    return client


MessageHandler = Callable[[str, bytes], None]


class MqttLink:
    """One identity's session with the broker: connect, publish and wait for the broker's
    answer, subscribe with a handler. Refusals raise and, with a SecurityLog, are recorded (the
    box's own view; the broker records its side too). Handlers run on paho's network thread."""

    def __init__(
        self,
        creds: Credentials,
        host: str,
        port: int,
        *,
        security: SecurityLog | None = None,
        timeout: float = 5.0,
        keepalive: int = 30,
        max_inflight: int = 20,
    ) -> None:
        """`max_inflight`: QoS 1 messages sent and not yet acknowledged before paho queues the
        next (paho's default 20; 0 for no limit, for a service answering many boxes)."""
        self.identity: Identity = creds.identity()
        self.host = host
        self.port = port
        self.security = security
        self.timeout = timeout
        self.keepalive = keepalive
        self.client = make_client(creds)
        self.client.max_inflight_messages_set(max_inflight)  # only possible before connecting
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._finished = threading.Event()  # the first connection attempt has an outcome
        self._connect_error: str | None = None
        self._closing = False
        self._acks: dict[int, ReasonCode] = {}
        self._subacks: dict[int, list[ReasonCode]] = {}
        self._subacked = threading.Condition(self._lock)
        self._subscriptions: dict[str, int] = {}  # filter → QoS, renewed at each reconnect
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe

    @property
    def where(self) -> str:
        return f"mqtts://{self.host}:{self.port}"

    # -- connection -------------------------------------------------------------------------

    def connect(self) -> None:
        """Connect and wait for the CONNACK; ConnectRefused (recorded) when either side refuses
        the other, MqttError when the broker cannot be reached."""
        try:
            self.client.connect(self.host, self.port, keepalive=self.keepalive)
        except ssl.SSLCertVerificationError as exc:
            # we refuse the broker: its certificate is not ours, or is for another name
            self._refused(
                "mqtt-server-refused", f"broker certificate refused: {exc.verify_message}"
            )
        except ssl.SSLError as exc:
            # the broker refused the handshake (an alert about our certificate, for instance)
            self._refused("mqtt-connect-refused", f"TLS handshake failed: {exc}")
        except OSError as exc:  # nobody listening, no route: an outage, not a refusal
            raise MqttError(f"{self.where}: cannot connect: {exc}") from None
        # the first answer is awaited on this thread: paho's background loop would sleep a
        # whole reconnect delay before noticing a close() after a refusal
        deadline = time.monotonic() + self.timeout
        while not self._finished.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.close()
                raise ConnectRefused(f"{self.where}: no answer to CONNECT within {self.timeout} s")
            rc = self.client.loop(min(remaining, 0.1))
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS and not self._finished.is_set():
                self._connect_error = f"connection lost before CONNACK: {mqtt.error_string(rc)}"
                self._finished.set()
        if self._connect_error is not None:
            self.close()
            self._refused("mqtt-connect-refused", self._connect_error)
        self.client.loop_start()  # from here on paho keeps the session and reconnects

    def _refused(self, kind: str, detail: str) -> None:
        if self.security is not None:
            self.security.record(kind, self.where, detail, identity=self.identity.name)
        raise ConnectRefused(f"{self.where}: {detail}")

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self._connect_error = f"CONNACK {reason}"
        else:
            self._connected.set()
            log.info("%s connected to %s", self.identity.name, self.where)
            # a clean session starts without subscriptions: renew ours after a reconnect
            for topic_filter, qos in list(self._subscriptions.items()):
                client.subscribe(topic_filter, qos=qos)
        self._finished.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._connected.clear()
        if not self._finished.is_set():
            # TLS 1.3 finishes the client's side of the handshake before the broker has checked
            # the client certificate: a refused certificate shows as a close before CONNACK
            self._connect_error = (
                f"the broker closed the connection before CONNACK ({reason}); "
                "is our certificate valid, unrevoked and issued under its root?"
            )
            self._finished.set()
        elif not self._closing:
            log.warning("%s disconnected from %s: %s", self.identity.name, self.where, reason)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def close(self) -> None:
        self._closing = True
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> MqttLink:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- publish ----------------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Publish and, for QoS 1 and 2, wait for the broker's acknowledgement; PublishRefused
        (recorded) when the broker refuses it, MqttError when it cannot be sent in time."""
        if not self.connected:
            raise MqttError(f"{self.where}: not connected; cannot publish to {topic}")
        info = self.client.publish(topic, payload, qos=qos)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS,):
            raise MqttError(f"{self.where}: publish to {topic}: {mqtt.error_string(info.rc)}")
        info.wait_for_publish(self.timeout)
        if not info.is_published():
            raise MqttError(f"{self.where}: no acknowledgement for {topic} in {self.timeout} s")
        with self._lock:
            reason = self._acks.pop(info.mid, None)
        if reason is not None and reason.is_failure:
            if self.security is not None:
                self.security.record(
                    "mqtt-publish-refused",
                    self.where,
                    f"the broker refused {self.identity.name}'s publish to {topic}: {reason}",
                    identity=self.identity.name,
                    topic=topic,
                    reason_code=reason.value,
                )
            raise PublishRefused(topic, str(reason))

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason: ReasonCode,
        properties: Properties,
    ) -> None:
        # runs before paho marks the message published, so publish() finds the reason here
        with self._lock:
            self._acks[mid] = reason

    # -- subscribe --------------------------------------------------------------------------

    def subscribe(self, topic_filter: str, handler: MessageHandler, qos: int = 1) -> None:
        """Deliver messages matching `topic_filter` to `handler(topic, payload)`. Mosquitto
        grants any subscription and applies the ACL to each message delivered, so a filter
        wider than what we may read is accepted but only ever yields what we may read."""

        def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
            try:
                handler(msg.topic, bytes(msg.payload))
            except Exception:  # a bad message must not stop the network thread
                log.exception("handler for %s failed on a message on %s", topic_filter, msg.topic)

        self.client.message_callback_add(topic_filter, on_message)
        rc, mid = self.client.subscribe(topic_filter, qos=qos)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise MqttError(f"{self.where}: subscribe {topic_filter}: {mqtt.error_string(rc)}")
        with self._subacked:
            if not self._subacked.wait_for(lambda: mid in self._subacks, self.timeout):
                raise MqttError(f"{self.where}: no SUBACK for {topic_filter} in {self.timeout} s")
            codes = self._subacks.pop(mid)
        if any(c.is_failure for c in codes):
            raise MqttError(f"{self.where}: subscription to {topic_filter} refused: {codes[0]}")
        self._subscriptions[topic_filter] = qos

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        codes: list[ReasonCode],
        properties: Properties,
    ) -> None:
        with self._subacked:
            self._subacks[mid] = codes
            self._subacked.notify_all()
