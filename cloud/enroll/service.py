"""The enrollment service boxes talk to over HTTPS (EST-like, JSON instead of PKCS#7):

- `POST /enroll` {"code", "csr"}: the one-time code names the box; the answer holds its
  certificate chain, the root, the CRL and its XMPP account. No client certificate (the box
  has none yet); failed code attempts are limited per client address.
- `POST /renew` {"csr"} with the box's current certificate as TLS client certificate.
- `GET /crl.pem`: the current revocation list.

Every refusal is a JSON {"error": ...} with a 4xx status and one security event; the service
keeps running. TLS asks for client certificates but does not require them (enrollment has
none) and does not check the CRL itself: the context's CRL would be loaded once and go stale,
after which OpenSSL would refuse every box. /renew checks the certificate with a TrustStore
that re-reads the published CRL instead, and answers a revoked box with a clear error."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from homeflex.cloud.enroll import flows
from homeflex.cloud.enroll.accounts import XmppAccounts
from homeflex.cloud.enroll.codes import MalformedCode
from homeflex.cloud.enroll.registry import CodeRefused, Registry
from homeflex.pki.bundle import Credentials
from homeflex.pki.ca import CaError, FleetCA
from homeflex.pki.trust import TrustStore, server_context
from homeflex.security import SecurityLog

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024  # a code and a CSR fit in 2 KiB
CRL_REPUBLISH = timedelta(hours=1)  # the published list is valid for 2 days (pki.ca.CRL_VALID)


class AttemptLimiter:
    """At most `limit` failed code attempts per client address in `window` seconds: 10 an hour
    make guessing an 80-bit code hopeless even from a million addresses."""

    MAX_ADDRESSES = 100_000  # bound the memory a flood of addresses can take

    def __init__(self, limit: int = 10, window: float = 3600.0) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, address: str, now: float) -> deque[float]:
        times = self._failures.get(address, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def blocked(self, address: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return len(self._recent(address, now)) >= self.limit

    def failed(self, address: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if address not in self._failures and len(self._failures) >= self.MAX_ADDRESSES:
            for stale in [a for a, t in self._failures.items() if not self._recent(a, now)]:
                del self._failures[stale]
            if len(self._failures) >= self.MAX_ADDRESSES:  # still full: forget the oldest
                del self._failures[next(iter(self._failures))]
        times = self._recent(address, now)
        times.append(now)
        self._failures[address] = times


class Refusal(Exception):
    """Turned into a JSON error response and a security event by the middleware."""

    def __init__(self, status: int, kind: str, reason: str, detail: str, **fields: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.reason = reason
        self.detail = detail
        self.fields = fields


def _pem(certs: list[x509.Certificate]) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


def _issued_json(issued: flows.Issued) -> dict[str, Any]:
    return {
        "box": issued.box,
        "certificate": _pem(issued.chain),
        "ca": _pem([issued.root]),
        "crl": issued.crl.decode(),
        "not_after": issued.chain[0].not_valid_after_utc.isoformat(),
    }


def _source(request: web.Request) -> str:
    return request.remote or "unknown"


class EnrollmentService:
    def __init__(
        self,
        fleet: FleetCA,
        registry: Registry,
        accounts: XmppAccounts,
        security: SecurityLog,
        xmpp_domain: str,
        limiter: AttemptLimiter | None = None,
    ) -> None:
        self.fleet = fleet
        self.registry = registry
        self.accounts = accounts
        self.security = security
        self.xmpp_domain = xmpp_domain
        self.limiter = limiter or AttemptLimiter()
        self.trust = TrustStore.load(fleet.dir / "ca.pem", fleet.dir / "crl.pem")

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._errors])
        app.router.add_post("/enroll", self._enroll)
        app.router.add_post("/renew", self._renew)
        app.router.add_get("/crl.pem", self._crl)
        return app

    @web.middleware
    async def _errors(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except Refusal as r:
            self.security.record(
                r.kind,
                _source(request),
                f"{request.method} {request.path}: {r.detail}",
                reason=r.reason,
                **r.fields,
            )
            return web.json_response({"error": r.detail, "reason": r.reason}, status=r.status)
        except web.HTTPException as exc:  # unknown path, wrong method: JSON like the rest
            if exc.status < 400:
                raise
            return web.json_response(
                {"error": f"{request.method} {request.path}: {exc.reason}"}, status=exc.status
            )
        except Exception:
            log.exception("enrollment: %s %s failed", request.method, request.path)
            return web.json_response(
                {"error": "internal error (see the service's log)"}, status=500
            )

    async def _json(self, request: web.Request) -> dict[str, Any]:
        if request.content_length is not None and request.content_length > MAX_BODY:
            raise Refusal(
                413,
                "bad-request",
                "too-large",
                f"body of {request.content_length} bytes, at most {MAX_BODY}",
            )
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise Refusal(
                413, "bad-request", "too-large", f"body larger than {MAX_BODY} bytes"
            ) from None
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise Refusal(400, "bad-request", "not-json", f"body is not JSON ({exc})") from None
        if not isinstance(body, dict):
            raise Refusal(400, "bad-request", "not-json", "body must be a JSON object")
        return body

    def _csr(self, body: dict[str, Any]) -> x509.CertificateSigningRequest:
        try:
            return flows.parse_csr(body.get("csr"))
        except flows.Refused as r:
            raise Refusal(400, "bad-request", r.reason, r.detail) from None

    async def _enroll(self, request: web.Request) -> web.Response:
        source = _source(request)
        if self.limiter.blocked(source):
            raise Refusal(
                429,
                "rate-limited",
                "too-many-attempts",
                f"{self.limiter.limit} failed enrollment attempts from {source} within "
                f"{self.limiter.window:.0f} s; try again later",
            )
        try:
            body = await self._json(request)
            code = body.get("code")
            if not isinstance(code, str):
                raise Refusal(400, "bad-request", "no-code", "field 'code' (text) is missing")
            csr = self._csr(body)
            try:
                result = flows.enroll(
                    self.fleet, self.registry, self.accounts, code, csr, self.xmpp_domain
                )
            except CaError as exc:  # e.g. the name went to a service since the code was made
                raise Refusal(409, "enroll-refused", "ca-refused", str(exc)) from None
            except MalformedCode as exc:
                raise Refusal(400, "enroll-refused", "malformed-code", str(exc)) from None
            except CodeRefused as exc:
                status = 410 if exc.reason in ("used-code", "expired-code") else 403
                # the box name is logged, never told to the client: it did not prove anything
                raise Refusal(
                    status,
                    "enroll-refused",
                    exc.reason,
                    "enrollment code refused: " + exc.reason.replace("-", " "),
                    box=exc.box or "",
                ) from None
        except Refusal:
            self.limiter.failed(source)
            raise
        log.info(
            "enrolled box %s (serial %x) from %s", result.box, result.chain[0].serial_number, source
        )
        answer = _issued_json(result)
        answer["xmpp"] = {"address": result.xmpp, "password": result.password}
        return web.json_response(answer)

    async def _renew(self, request: web.Request) -> web.Response:
        ssl_object = request.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:
            raise Refusal(
                401,
                "renew-refused",
                "no-certificate",
                "renewal needs the box's current certificate as TLS client certificate",
            )
        body = await self._json(request)
        csr = self._csr(body)
        leaf = x509.load_der_x509_certificate(der)
        try:
            result = flows.renew(
                self.fleet, self.registry, self.trust, [leaf, *self.fleet.chain], csr
            )
        except flows.Refused as r:
            raise Refusal(
                403, "renew-refused", r.reason, r.detail, serial=f"{leaf.serial_number:x}"
            ) from None
        log.info("renewed box %s (serial %x)", result.box, result.chain[0].serial_number)
        return web.json_response(_issued_json(result))

    async def _crl(self, request: web.Request) -> web.Response:
        data = (self.fleet.dir / "crl.pem").read_bytes()
        return web.Response(body=data, content_type="application/x-pem-file")

    async def republish_crl(self, stop: asyncio.Event) -> None:
        """Keep the published CRL fresh: boxes and services refuse an out-of-date one."""
        while True:
            self.fleet.publish_crl()
            try:
                await asyncio.wait_for(stop.wait(), CRL_REPUBLISH.total_seconds())
                return
            except TimeoutError:
                pass

    async def serve(
        self,
        creds: Credentials,
        host: str,
        port: int,
        stop: asyncio.Event,
        ready: Callable[[str, int], None] | None = None,
    ) -> None:
        """Listen on host:port (0: any free port) until `stop` is set."""
        runner = web.AppRunner(self.app())
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=tls_context(creds))
        await site.start()
        republish = asyncio.create_task(self.republish_crl(stop))
        try:
            if ready is not None:
                ready(host, site.port)
            await stop.wait()
        finally:
            stop.set()
            await republish
            await runner.cleanup()


def tls_context(creds: Credentials) -> ssl.SSLContext:
    ctx = server_context(creds, require_client_cert=False)
    # ask for a client certificate (renewal) without requiring one (enrollment); one that is
    # presented must still chain to our root
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx
