"""Turns Mosquitto's log into security events. The broker cannot call our code, but it logs every
refusal: a TLS handshake it refused (no certificate, a certificate not from our root, revoked or
expired, not TLS at all), a client it disconnected as not authorised, and (at log level debug
only) each publish the ACL denied. One refusal gives one event.

Mosquitto 2.0 does not name the peer in an OpenSSL error line; the watcher attributes it to the
connection whose handshake is pending (logged as "New connection from ADDR"), and says so when
several are pending at once."""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from dataclasses import dataclass

from homeflex.security import Event, SecurityLog

log = logging.getLogger(__name__)

_TIMESTAMP = re.compile(r"^(?:\d+|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d): ")
_NEW_CONNECTION = re.compile(r"^New connection from (?P<addr>\S+) on port \d+\.$")
_CONNECTED = re.compile(
    r"^New client connected from (?P<addr>\S+) as (?P<cid>\S+) \((?P<flags>[^)]*)\)\.$"
)
_USER = re.compile(r"u'(?P<user>[^']*)'")
_DENIED = re.compile(
    r"^Denied (?P<what>PUBLISH) from (?P<cid>\S+) "
    r"\(d\d, q(?P<qos>\d), r\d, m\d+, '(?P<topic>.*)', \.\.\. \((?P<size>\d+) bytes\)\)$"
)
_NOT_AUTHORISED = re.compile(r"^Client (?P<cid>\S+) disconnected, not authori[sz]ed\.$")
_DISCONNECTED = re.compile(r"^Client (?P<cid>\S+) (?:disconnected|closed its connection)")
_OPENSSL = re.compile(r"^OpenSSL Error\[(?P<n>\d+)\]: (?P<err>.*)$")
_ACCEPT_FAILED = re.compile(r"^Client connection from (?P<addr>\S+) failed: (?P<err>.*?)\.?$")

# what OpenSSL's words mean for us; mosquitto does not say why a certificate failed to verify
_TLS_REASONS = (
    ("peer did not return a certificate", "no-certificate", "no client certificate"),
    (
        "certificate verify failed",
        "certificate-refused",
        "client certificate refused (not from our root, revoked, or expired)",
    ),
    ("wrong version number", "not-tls", "not TLS (a plaintext MQTT client?)"),
    ("http request", "not-tls", "not TLS (an HTTP request)"),
    ("alert unknown ca", "peer-refused-us", "the client does not trust the broker's certificate"),
    ("alert bad certificate", "peer-refused-us", "the client refused the broker's certificate"),
)
MAX_PENDING = 64  # handshakes in progress we remember; more are a flood, attributed "unknown"


@dataclass
class _Client:
    user: str | None
    addr: str


class BrokerLogWatch:
    def __init__(self, security: SecurityLog | None, broker: str) -> None:
        self.security = security
        self.broker = broker  # where the broker listens, recorded with each event
        self._pending: OrderedDict[str, None] = OrderedDict()
        self._clients: dict[str, _Client] = {}
        self._after_error = False  # OpenSSL lines after "Error: ..." are the broker's own
        self._after_openssl = False  # the "Client <unknown> disconnected" after a refusal

    def feed(self, line: str) -> Event | None:
        """Read one log line; the security event it caused, if any. Never raises on odd
        lines: the log is the broker's, not ours."""
        msg = _TIMESTAMP.sub("", line.rstrip("\r\n"), count=1)
        try:
            return self._feed(msg)
        except Exception:  # a parser bug must not stop the broker's log from being read
            log.exception("cannot interpret mosquitto log line %r", msg)
            return None

    def _feed(self, msg: str) -> Event | None:
        after_openssl, self._after_openssl = self._after_openssl, False
        if m := _OPENSSL.match(msg):
            self._after_openssl = True
            if self._after_error or m["n"] != "0":
                return None  # the detail of a broker error, or of a refusal already recorded
            return self._tls_refused(self._take_pending(), m["err"])
        self._after_error = msg.startswith("Error")
        if m := _NEW_CONNECTION.match(msg):
            self._pending[m["addr"]] = None
            while len(self._pending) > MAX_PENDING:
                self._pending.popitem(last=False)
        elif m := _CONNECTED.match(msg):
            self._pending.pop(m["addr"], None)
            user = _USER.search(m["flags"])
            self._clients[m["cid"]] = _Client(user["user"] if user else None, m["addr"])
        elif m := _DENIED.match(msg):
            return self._denied(m)
        elif m := _NOT_AUTHORISED.match(msg):
            client = self._clients.pop(m["cid"], None)
            return self._record(
                "mqtt-connect-denied",
                client.user or m["cid"] if client else m["cid"],
                f"the broker refused the connection of {m['cid']}: not authorised",
                client_id=m["cid"],
                address=client.addr if client else None,
            )
        elif m := _DISCONNECTED.match(msg):
            self._clients.pop(m["cid"], None)
            if m["cid"] == "<unknown>" and not after_openssl and len(self._pending) == 1:
                self._pending.clear()  # a handshake abandoned without error: a port probe
        elif m := _ACCEPT_FAILED.match(msg):
            self._pending.pop(m["addr"], None)
            return self._tls_refused(([m["addr"]], True), m["err"])
        return None

    def _take_pending(self) -> tuple[list[str], bool]:
        """The peers the OpenSSL error may belong to, and whether that is certain."""
        if len(self._pending) == 1:
            addr, _ = self._pending.popitem()
            return [addr], True
        return list(self._pending), False

    def _tls_refused(self, peers: tuple[list[str], bool], err: str) -> Event:
        candidates, certain = peers
        reason, words = "tls-error", "TLS handshake failed"
        for needle, code, text in _TLS_REASONS:
            if needle in err:
                reason, words = code, text
                break
        source = candidates[0] if certain else "unknown peer"
        return self._record(
            "mqtt-tls-refused",
            source,
            f"the broker refused a connection: {words} (OpenSSL: {err})",
            reason=reason,
            candidates=None if certain else candidates,
        )

    def _denied(self, m: re.Match[str]) -> Event:
        client = self._clients.get(m["cid"])
        who = (client.user if client else None) or m["cid"]
        what = m["what"].lower()
        return self._record(
            f"mqtt-{what}-denied",
            who,
            f"{who} may not {what} to {m['topic']!r}: denied by the broker's ACL",
            topic=m["topic"],
            client_id=m["cid"],
            address=client.addr if client else None,
            qos=int(m["qos"]),
            size=int(m["size"]),
        )

    def _record(self, kind: str, source: str, detail: str, **fields: object) -> Event:
        fields = {k: v for k, v in fields.items() if v is not None}
        if self.security is None:
            log.warning("security: %s from %s: %s", kind, source, detail)
            return Event(0, 0.0, kind, source, detail, {**fields, "broker": self.broker})
        return self.security.record(kind, source, detail, broker=self.broker, **fields)
