"""Security events arriving from boxes: `POST /security-events` over mutual TLS, the sender
known only from its verified certificate. Stored per sender in SQLite, idempotent on
(sender, seq) so a resend never duplicates; each event's hash and its link to the previous
one are checked again here, and what does not fit (an edited, missing or reordered event) is
kept as a finding next to what arrived, never silently accepted or dropped. Operators (and
nobody else) read a box's events and findings with `GET /security-events?box=NAME`."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import sqlite3
import ssl
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509

from homeflex.pki.bundle import Credentials
from homeflex.pki.identity import Identity, Role
from homeflex.pki.trust import TrustError, TrustStore, server_context
from homeflex.security import GENESIS, Event, SecurityLog, verify_chain

log = logging.getLogger(__name__)
MAX_BODY = 1024 * 1024
MAX_SEQ = 2**63 - 1  # SQLite's INTEGER


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
        # requests are stored from worker threads; one transaction at a time on the connection
        self._lock = threading.Lock()

    def store(self, sender: str, events: list[Event]) -> tuple[int, list[str]]:
        """Keep the events not held yet; (the highest seq held for `sender`, new findings)."""
        with self._lock, self.db:
            found: list[tuple[int, str]] = []
            for e in sorted(events, key=lambda e: e.seq):
                found += self._store_one(sender, e)
            self.db.executemany(
                "INSERT INTO findings (sender, seq, problem) VALUES (?, ?, ?)",
                [(sender, seq, problem) for seq, problem in found],
            )
            top = self.db.execute(
                "SELECT MAX(seq) FROM events WHERE sender = ?", (sender,)
            ).fetchone()[0]
        return int(top or 0), [problem for _, problem in found]

    def _store_one(self, sender: str, e: Event) -> list[tuple[int, str]]:
        held = self.db.execute(
            "SELECT event FROM events WHERE sender = ? AND seq = ?", (sender, e.seq)
        ).fetchone()
        if held is not None:  # a resend: idempotent, unless it is not the same event
            if json.loads(held[0]) != asdict(e):  # all of it: an edit may keep the old hash
                return [(e.seq, f"event {e.seq}: sent again with other content")]
            return []
        found: list[tuple[int, str]] = []
        before = self.db.execute(
            "SELECT seq, hash FROM events WHERE sender = ? AND seq < ? ORDER BY seq DESC LIMIT 1",
            (sender, e.seq),
        ).fetchone()
        last_seq, last_hash = before if before is not None else (0, GENESIS)
        if last_seq != e.seq - 1:  # the link cannot be checked across a gap; its own hash can
            found.append((e.seq, f"event {e.seq}: events {last_seq + 1}..{e.seq - 1} missing"))
            last_hash = e.prev
        found += [(e.seq, problem) for problem in verify_chain([e], last_hash)]
        self.db.execute(
            "INSERT INTO events (sender, seq, event, hash) VALUES (?, ?, ?, ?)",
            (sender, e.seq, json.dumps(asdict(e)), e.hash),
        )
        after = self.db.execute(
            "SELECT event FROM events WHERE sender = ? AND seq = ?", (sender, e.seq + 1)
        ).fetchone()
        if after is not None and Event(**json.loads(after[0])).prev != e.hash:
            # a gap being filled: the event stored earlier after it must link to this one
            found.append((e.seq + 1, f"event {e.seq + 1}: does not follow the event before it"))
        return found

    def events(self, sender: str) -> list[Event]:
        with self._lock:
            rows = self.db.execute(
                "SELECT event FROM events WHERE sender = ? ORDER BY seq", (sender,)
            ).fetchall()
        return [Event(**json.loads(r[0])) for r in rows]

    def findings(self, sender: str) -> list[str]:
        with self._lock:
            rows = self.db.execute(
                "SELECT problem FROM findings WHERE sender = ? ORDER BY rowid", (sender,)
            ).fetchall()
        return [r[0] for r in rows]

    def close(self) -> None:
        self.db.close()


def parse_event(item: object) -> Event:
    """One event of a batch, its fields of the right types (ValueError naming what is not)."""
    if not isinstance(item, dict):
        raise ValueError("an event is a JSON object")
    try:
        e = Event(**item)
    except TypeError as exc:
        raise ValueError(f"event fields: {exc}") from None
    at = f"event {e.seq!r}"
    if not isinstance(e.seq, int) or isinstance(e.seq, bool) or not 0 < e.seq <= MAX_SEQ:
        raise ValueError(f"{at}: seq must be an integer from 1 to {MAX_SEQ}")
    if not isinstance(e.ts, int | float) or isinstance(e.ts, bool) or not math.isfinite(e.ts):
        raise ValueError(f"{at}: ts must be a finite number")
    for name in ("kind", "source", "detail", "prev", "hash"):
        if not isinstance(getattr(e, name), str):
            raise ValueError(f"{at}: {name} must be a string")
    if not isinstance(e.fields, dict):
        raise ValueError(f"{at}: fields must be an object")
    return e


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
        app.router.add_get("/security-events", self._get)
        return app

    def _refuse(self, status: int, source: str, reason: str) -> web.Response:
        self.security.record("events-refused", source, reason)
        return web.json_response({"error": reason}, status=status)

    def _peer(self, request: web.Request) -> Identity | web.Response:
        """Who is asking, from the certificate TLS verified (never from what they send)."""
        peer = str(request.remote)
        ssl_object = request.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:
            return self._refuse(401, peer, "no client certificate")
        try:
            return self.trust.verify([x509.load_der_x509_certificate(der), *self.fleet])
        except TrustError as exc:
            return self._refuse(403, peer, f"certificate refused: {exc}")

    async def _post(self, request: web.Request) -> web.Response:
        who = self._peer(request)
        if isinstance(who, web.Response):
            return who
        sender = who.name
        try:
            # UTF-8 only (json.loads would guess UTF-16/32 from the bytes and garble the error)
            raw: Any = json.loads((await request.read()).decode("utf-8"))
            if not isinstance(raw, list):
                raise ValueError("expected a JSON list of events")
            events = [parse_event(item) for item in raw]
        except web.HTTPRequestEntityTooLarge:
            return self._refuse(413, sender, f"batch over {MAX_BODY} bytes")
        except ValueError as exc:
            return self._refuse(400, sender, f"malformed batch: {exc}")
        except RecursionError:  # the C JSON parser's answer to "[[[[..." nested too deep
            return self._refuse(400, sender, "malformed batch: JSON nested too deeply")
        top, findings = await asyncio.to_thread(self.store.store, sender, events)
        for problem in findings:  # the box's log was changed behind its back, or events lost
            self.security.record("events-chain-broken", sender, problem)
        return web.json_response({"stored_up_to": top, "findings": findings})

    async def _get(self, request: web.Request) -> web.Response:
        """`?box=NAME`: what NAME forwarded and the findings on it, for operators only."""
        who = self._peer(request)
        if isinstance(who, web.Response):
            return who
        if who.role is not Role.OPERATOR:
            return self._refuse(403, who.name, f"a {who.role.value} may not read the events")
        box = request.query.get("box", "")
        if not box:
            return web.json_response({"error": "which box? (?box=NAME)"}, status=400)
        events, findings = await asyncio.to_thread(
            lambda: (self.store.events(box), self.store.findings(box))
        )
        return web.json_response(
            {"box": box, "events": [asdict(e) for e in events], "findings": findings}
        )


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
