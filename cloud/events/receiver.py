"""Security events arriving from boxes: `POST /security-events` over mutual TLS, the sender
known only from its verified certificate. Stored per sender in SQLite, idempotent on
(sender, seq) so a resend never duplicates; each event's hash and its link to the previous
one are checked again here, and what does not fit (an edited, missing or reordered event) is
kept as a finding next to what arrived, never silently accepted or dropped."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import ssl
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509

from homeflex.pki.bundle import Credentials
from homeflex.pki.trust import TrustError, TrustStore, server_context
from homeflex.security import Event, SecurityLog, verify_chain

log = logging.getLogger(__name__)
MAX_BODY = 1024 * 1024


class EventStore:
    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS events (sender TEXT NOT NULL, seq INTEGER NOT NULL,"
            " event TEXT NOT NULL, hash TEXT NOT NULL, PRIMARY KEY (sender, seq))"
        )
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS findings (sender TEXT NOT NULL, seq INTEGER NOT NULL,"
            " problem TEXT NOT NULL)"
        )

    def store(self, sender: str, events: list[Event]) -> tuple[int, list[str]]:
        """Keep the events not held yet; (the highest seq held for `sender`, new findings)."""
        findings: list[str] = []
        with self.db:
            for e in sorted(events, key=lambda e: e.seq):
                held = self.db.execute(
                    "SELECT hash FROM events WHERE sender = ? AND seq = ?", (sender, e.seq)
                ).fetchone()
                if held is not None:
                    if held[0] != e.hash:
                        findings.append(f"event {e.seq}: sent again with other content")
                    continue
                before = self.db.execute(
                    "SELECT seq, hash FROM events WHERE sender = ? AND seq < ? "
                    "ORDER BY seq DESC LIMIT 1",
                    (sender, e.seq),
                ).fetchone()
                prev = before[1] if before else e.prev
                if before is not None and before[0] != e.seq - 1:
                    findings.append(f"event {e.seq}: events {before[0] + 1}..{e.seq - 1} missing")
                findings += verify_chain([e], prev)
                self.db.execute(
                    "INSERT INTO events (sender, seq, event, hash) VALUES (?, ?, ?, ?)",
                    (sender, e.seq, json.dumps(asdict(e)), e.hash),
                )
            for problem in findings:
                seq = int(problem.split()[1].rstrip(":"))
                self.db.execute(
                    "INSERT INTO findings (sender, seq, problem) VALUES (?, ?, ?)",
                    (sender, seq, problem),
                )
        top = self.db.execute("SELECT MAX(seq) FROM events WHERE sender = ?", (sender,)).fetchone()[
            0
        ]
        return int(top or 0), findings

    def events(self, sender: str) -> list[Event]:
        rows = self.db.execute(
            "SELECT event FROM events WHERE sender = ? ORDER BY seq", (sender,)
        ).fetchall()
        return [Event(**json.loads(r[0])) for r in rows]

    def findings(self, sender: str) -> list[str]:
        rows = self.db.execute(
            "SELECT problem FROM findings WHERE sender = ? ORDER BY rowid", (sender,)
        ).fetchall()
        return [r[0] for r in rows]

    def close(self) -> None:
        self.db.close()


class Receiver:
    def __init__(self, creds: Credentials, store: EventStore, security: SecurityLog) -> None:
        self.creds = creds
        self.store = store
        self.security = security
        self.trust = TrustStore.of(creds)  # follows crl.pem as it is replaced
        self.fleet = creds.chain()[1:]

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/security-events", self._post)
        return app

    def _refuse(self, status: int, source: str, reason: str) -> web.Response:
        self.security.record("events-refused", source, reason)
        return web.json_response({"error": reason}, status=status)

    async def _post(self, request: web.Request) -> web.Response:
        peer = str(request.remote)
        ssl_object = request.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:
            return self._refuse(401, peer, "no client certificate")
        try:
            sender = self.trust.verify([x509.load_der_x509_certificate(der), *self.fleet]).name
        except TrustError as exc:
            return self._refuse(403, peer, f"certificate refused: {exc}")
        try:
            raw: Any = json.loads(await request.read())
            if not isinstance(raw, list):
                raise ValueError("expected a JSON list of events")
            events = [Event(**item) for item in raw]
        except web.HTTPRequestEntityTooLarge:
            return self._refuse(413, sender, f"batch over {MAX_BODY} bytes")
        except (ValueError, TypeError) as exc:
            return self._refuse(400, sender, f"malformed batch: {exc}")
        top, findings = await asyncio.to_thread(self.store.store, sender, events)
        for problem in findings:  # the box's log was changed behind its back, or events lost
            self.security.record("events-chain-broken", sender, problem)
        return web.json_response({"stored_up_to": top, "findings": findings})


def tls_context(creds: Credentials) -> ssl.SSLContext:
    # every client shows a certificate of our root; revocation is checked per request by the
    # trust store, which follows the republished list (a list loaded into TLS once would expire)
    ctx = server_context(creds, require_client_cert=False)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


async def serve(
    receiver: Receiver,
    host: str,
    port: int,
    stop: asyncio.Event,
    ready: Callable[[str, int], None] | None = None,
) -> None:
    runner = web.AppRunner(receiver.app())
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=tls_context(receiver.creds))
    await site.start()
    try:
        if ready is not None:
            ready(host, site.port)
        await stop.wait()
    finally:
        await runner.cleanup()
