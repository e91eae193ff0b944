"""Modbus/TCP Security (Modbus over TLS, port 802) for the Modbus driver.

The gateway connects with mutual TLS: it verifies the device's certificate against our root, the
fleet CA's revocation list and the device's name, requires the device role, and presents its own
certificate. Every connection attempt takes the current context (credentials are renewed and the
revocation list is replaced on disk while the gateway runs), and a refusal — ours or the
device's — is remembered with its reason so the link's DeviceError can say why; the gateway's own
refusals are also security events.

pymodbus 3.16 neither passes a server name to TLS (it would check the certificate against the
address it dials) nor says why a connection failed, so `ModbusTls.client` wraps the client's
connection factory (`ctx.call_create`) and its disconnect callback; both are checked at build
time so a pymodbus upgrade that moves them fails loudly instead of connecting unverified.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from pymodbus.client import AsyncModbusTlsClient

from homeflex.pki.bundle import Credentials
from homeflex.pki.identity import Identity, Role
from homeflex.pki.trust import client_context
from homeflex.security import SecurityLog

log = logging.getLogger(__name__)

# OpenSSL's X509_V_ERR_* codes (x509_vfy.h) → our refusal kinds (those of pki.trust.TrustError,
# plus wrong-name); anything else is a bad-certificate.
_VERIFY_KINDS = {
    2: "unknown-ca",  # unable to get issuer certificate
    3: "crl",  # unable to get CRL
    7: "unknown-ca",  # certificate signature failure
    9: "not-yet-valid",
    10: "expired",
    11: "crl",  # CRL not yet valid
    12: "crl",  # CRL has expired
    18: "unknown-ca",  # self-signed certificate
    19: "unknown-ca",  # self-signed certificate in chain
    20: "unknown-ca",  # unable to get local issuer certificate
    21: "unknown-ca",  # unable to verify the first certificate
    23: "revoked",
    26: "wrong-usage",  # unsupported certificate purpose
    62: "wrong-name",  # hostname mismatch
    64: "wrong-name",  # IP address mismatch
}


@dataclass(frozen=True)
class TlsFailure:
    kind: str  # unknown-ca, revoked, wrong-name, wrong-role, not-tls, refused-by-device, …
    reason: str
    ours: bool  # the gateway refused the device (a security event), not the other way round


class ClientContexts:
    """The gateway's TLS client context from its credentials directory, rebuilt when a file in
    it changes: an SSLContext reads the certificate and the revocation list only once, and a list
    past its next update would make OpenSSL refuse every device."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self._stamp: tuple[int, ...] = ()
        self._ctx: ssl.SSLContext | None = None

    def __call__(self) -> ssl.SSLContext:
        creds = Credentials.load(self.dir)  # FileNotFoundError naming what is missing
        paths = (creds.key_path, creds.cert_path, creds.ca_path, creds.crl_path)
        stamp = tuple(p.stat().st_mtime_ns if p.exists() else 0 for p in paths)
        if self._ctx is None or stamp != self._stamp:
            self._ctx = client_context(creds)
            self._stamp = stamp
        return self._ctx


class ModbusTls:
    """The TLS side of one Modbus link: which context, which name the device must carry, and
    why the last connection failed."""

    def __init__(
        self,
        context: Callable[[], ssl.SSLContext],
        server_name: str,
        security: SecurityLog | None = None,
    ) -> None:
        self.context = context
        self.server_name = server_name
        self.security = security
        self.devices: list[str] = []  # the ids behind this link, for messages and events
        self.failure: TlsFailure | None = None
        self._recorded: TlsFailure | None = None
        self._answered = False  # whether the device sent anything on this connection

    def _trace(self, sending: bool, data: bytes) -> bytes:
        if not sending:
            self._answered = True
        return data

    def client(self, host: str, port: int, timeout_s: float) -> AsyncModbusTlsClient:
        # The context given here is never used: `_open` passes the current one on every attempt.
        # On its own it trusts no root, so it could not connect to anything.
        client = AsyncModbusTlsClient(
            host,
            port=port,
            sslctx=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT),
            timeout=timeout_s,
            retries=0,
            reconnect_delay=0,
            trace_packet=self._trace,
        )
        proto: Any = client.ctx
        create = getattr(proto, "call_create", None)
        lost = getattr(proto, "callback_disconnected", None)
        if create is None or lost is None:
            raise RuntimeError("pymodbus changed: cannot give its TLS client our context")
        where = f"{host}:{port}"

        async def _open() -> Any:
            try:
                ctx = self.context()
            except (OSError, ssl.SSLError, ValueError) as exc:
                self._fail(
                    where, TlsFailure("credentials", f"the gateway's credentials: {exc}", False)
                )
                raise OSError(str(exc)) from None  # pymodbus reports OSError as "not connected"
            try:
                transport, protocol = await create(ssl=ctx, server_hostname=self.server_name)
            except ssl.SSLCertVerificationError as exc:
                self._fail(where, _verify_failure(exc, self.server_name))
                raise
            except ssl.SSLError as exc:
                self._fail(where, _tls_failure(exc))
                raise
            except asyncio.CancelledError:  # pymodbus's connect timeout
                self._fail(
                    where,
                    TlsFailure(
                        "timeout",
                        "no TLS session within the timeout (does the device speak TLS on this "
                        "port?)",
                        False,
                    ),
                )
                raise
            except OSError as exc:
                self._fail(where, TlsFailure("unreachable", str(exc), False))
                raise
            refusal = _role_refusal(transport)
            if refusal is not None:
                protocol.close()  # pymodbus's own close: it forgets the transport at once
                self._fail(where, refusal)
                raise OSError(refusal.reason)
            self.failure = self._recorded = None
            self._answered = False
            return transport, protocol

        def _lost(exc: Exception | None) -> None:
            # With TLS 1.3 the device judges our certificate after the handshake, so its refusal
            # ends the connection under the first request: with an alert naming the reason, or
            # (Python's asyncio servers, among others) by just closing it.
            if isinstance(exc, ssl.SSLError):
                self._fail(where, _tls_failure(exc))
            elif not self._answered:
                self._fail(where, CLOSED_UNANSWERED)
            lost(exc)

        proto.call_create = _open
        proto.callback_disconnected = _lost
        return client

    def _fail(self, where: str, failure: TlsFailure) -> None:
        self.failure = failure
        # one event per refusal, not one per retry: a device with a bad certificate is retried
        # every few seconds for as long as nobody fixes it
        if failure.ours and self.security is not None and failure != self._recorded:
            self.security.record(
                failure.kind,
                where,
                f"Modbus device {', '.join(self.devices) or '?'}: {failure.reason}",
                protocol="modbus-tls",
                devices=list(self.devices),
            )
            self._recorded = failure


CLOSED_UNANSWERED = TlsFailure(
    "closed-by-device",
    "the device closed the connection after the TLS handshake without answering: it does not "
    "accept the gateway's certificate (none sent, revoked, or not of a CA it trusts)",
    False,
)


def _verify_failure(exc: ssl.SSLCertVerificationError, name: str) -> TlsFailure:
    kind = _VERIFY_KINDS.get(exc.verify_code, "bad-certificate")
    reason = exc.verify_message or str(exc)
    if kind == "wrong-name":
        reason = f"its certificate is not issued to {name!r}"
    elif kind == "unknown-ca":
        reason = f"its certificate is not issued under our root ({reason})"
    elif kind == "revoked":
        reason = "its certificate is revoked"
    return TlsFailure(kind, f"the gateway refused the device: {reason}", True)


def _tls_failure(exc: ssl.SSLError) -> TlsFailure:
    code = str(exc.reason or exc)
    if "ALERT_" in code:  # the device sent an alert: it refused us (or our TLS version)
        what = code.split("ALERT_", 1)[1].lower().replace("_", " ")
        return TlsFailure("refused-by-device", f"the device refused the gateway: {what}", False)
    if code in {"WRONG_VERSION_NUMBER", "UNEXPECTED_EOF_WHILE_READING", "RECORD_LAYER_FAILURE"}:
        return TlsFailure("not-tls", f"the device does not speak TLS on this port ({code})", True)
    return TlsFailure("tls-error", f"TLS failed: {exc}", False)


def _role_refusal(transport: asyncio.BaseTransport) -> TlsFailure | None:
    """Our CA issues server certificates to services and devices alike; a Modbus peer must be
    a device, or a stolen service key could pose as the home's meter."""
    sslobj = transport.get_extra_info("ssl_object")
    der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
    if not der:
        return TlsFailure("bad-certificate", "the device showed no certificate", True)
    try:
        identity = Identity.from_certificate(x509.load_der_x509_certificate(der))
    except ValueError as exc:
        return TlsFailure("no-identity", f"the gateway refused the device: {exc}", True)
    if identity.role is not Role.DEVICE:
        return TlsFailure(
            "wrong-role",
            f"the gateway refused the device: {identity.name} is a {identity.role.value}, "
            "not a device",
            True,
        )
    return None
