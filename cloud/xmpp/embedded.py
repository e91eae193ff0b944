"""The embedded XMPP server: pyjabber (0.4.x) serving one domain with our service certificate.

What pyjabber does and what we change (it runs in a process of its own, because pyjabber keeps
its state in module globals and singletons):
- c2s only, bound to the configured address (loopback by default). pyjabber's own `Server`
  would also listen on the machine's LAN address and open an s2s port whose TLS context
  verifies nothing, and generates a certificate from a CA key shipped inside the package when
  it finds none: we use none of that and start the pieces ourselves.
- STARTTLS is mandatory in pyjabber (it offers only `<starttls><required/>` and answers anything
  else with a not-authorized stream error); it has no direct-TLS port. The TLS context is
  `homeflex.pki.trust.server_context` with our certificate.
- In-band registration is off: not advertised, and the `jabber:iq:register` handler pyjabber
  keeps answering during authentication (whether advertised or not) is replaced by a refusal.
  Accounts are created by `PyjabberAccounts.add_account` straight in pyjabber's database.
- pyjabber forwards a client's `from` attribute as the client wrote it; we stamp every stanza
  with the authenticated address (RFC 6120 §8.1.2.1), so an agent cannot speak as another.
- Every refusal (no TLS, failed TLS, wrong password, registration attempt) is a security event.
- Removing an account stops new logins only: pyjabber never looks at the account of a session
  again. Every `session_check_s` we close the sessions whose account is gone (a revoked box),
  with a stream error `not-authorized` and the security event `xmpp-session-closed`.

Run: `python -m homeflex.cloud.xmpp.embedded --config xmpp.yaml` (or `homeflex cloud xmpp`);
it prints `READY <address> <port>` once it accepts connections and stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import os
import signal
import socket
import sqlite3
import ssl
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import uvloop
from pydantic import BaseModel, ConfigDict, Field, field_validator

from homeflex.cloud.xmpp.domain import (
    AccountError,
    check_password,
    check_service_certificate,
    local_part,
)
from homeflex.configfile import ConfigError, load_config
from homeflex.pki.bundle import Credentials
from homeflex.pki.trust import server_context
from homeflex.security import SecurityLog

log = logging.getLogger(__name__)
CLOSE_TIMEOUT_S = 5.0  # after the server stopped, the process ends within this

# pyjabber's stored form: sha256$<iterations>$<salt hex>$<PBKDF2-HMAC-SHA256 hex>; it reads the
# iteration count from each record, so ours (OWASP 2023 for PBKDF2-SHA256) is honoured at login
PBKDF2_ITERATIONS = 600_000

# what pyjabber may offer beyond the core: service discovery, pubsub, ping. Left out: in-band
# registration, XEP-0009 RPC, and HTTP upload (which starts an HTTP server with an admin page)
_FEATURES = [
    "http://jabber.org/protocol/disco#info",
    "http://jabber.org/protocol/disco#items",
    "http://jabber.org/protocol/pubsub",
    "http://jabber.org/protocol/pubsub#publish",
    "http://jabber.org/protocol/pubsub#subscribe",
    "http://jabber.org/protocol/pubsub#config-node",
    "http://jabber.org/protocol/pubsub#create-nodes",
    "http://jabber.org/protocol/pubsub#delete-nodes",
    "jabber:x:data",
    "urn:xmpp:ping",
]
_ITEMS = {
    "pubsub.$": {
        "name": "Pubsub Service",
        "category": "pubsub",
        "type": "service",
        "var": "http://jabber.org/protocol/pubsub",
        "extra": {},
    }
}


class EmbeddedXmppConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    domain: str = Field(description="the XMPP domain; the service certificate names it")
    listen: str = Field("127.0.0.1", description="IP address to accept clients on")
    port: int = Field(5222, ge=0, le=65535, description="0: any free port (tests)")
    credentials: Path = Field(description="directory with the service's key.pem, cert.pem ...")
    database: Path = Field(description="pyjabber's SQLite file: accounts, rosters, pubsub")
    security_log: Path
    offline_messages: bool = Field(
        True, description="hold messages for an offline address until it connects (memory only)"
    )
    idle_timeout: int = Field(120, ge=10, description="seconds of silence before a client is cut")
    session_check_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="seconds between checks that every open session's account still exists; "
        "a removed account (a revoked box) loses its sessions within this time",
    )

    @field_validator("listen")
    @classmethod
    def _ip(cls, value: str) -> str:
        ipaddress.ip_address(value)  # an address, not a name: no resolver decides where we listen
        return value


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, PBKDF2_ITERATIONS)
    return f"sha256${PBKDF2_ITERATIONS}${salt.hex()}${digest.hex()}"


def _password_matches(stored: str, password: str) -> bool:
    try:
        _, iterations, salt, digest = stored.split("$")
        mine = hashlib.pbkdf2_hmac(
            "sha256", password.encode(), bytes.fromhex(salt), int(iterations)
        )
    except ValueError:
        return False
    return hmac.compare_digest(mine.hex(), digest)


class PyjabberAccounts:
    """Accounts of the embedded server, written in its database (also while it runs: it reads
    the credentials table at each login)."""

    def __init__(self, database: Path, domain: str) -> None:
        self.database = database
        self.domain = domain

    def _connect(self) -> sqlite3.Connection:
        self.database.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.database, timeout=10)
        # the table as pyjabber's model declares it; pyjabber creates the rest at start-up
        con.execute(
            "CREATE TABLE IF NOT EXISTS credentials "
            "(id INTEGER NOT NULL PRIMARY KEY, jid VARCHAR NOT NULL, hash_pwd VARCHAR NOT NULL)"
        )
        return con

    def add_account(self, jid: str, password: str, *, replace: bool = False) -> None:
        """Create account `jid` (bare, in our domain); `replace` sets a new password on an
        existing one (re-enrollment). AccountError when the address, domain or password is not
        acceptable or the account exists."""
        user = local_part(jid, self.domain)
        check_password(jid, password)
        stored = hash_password(password)
        with self._connect() as con:
            exists = con.execute("SELECT 1 FROM credentials WHERE jid = ?", (user,)).fetchone()
            if exists and not replace:
                raise AccountError(f"XMPP account {jid} exists already")
            if exists:
                con.execute("UPDATE credentials SET hash_pwd = ? WHERE jid = ?", (stored, user))
            else:
                con.execute("INSERT INTO credentials (jid, hash_pwd) VALUES (?, ?)", (user, stored))
        con.close()

    def remove_account(self, jid: str) -> bool:
        user = local_part(jid, self.domain)
        with self._connect() as con:
            removed = con.execute("DELETE FROM credentials WHERE jid = ?", (user,)).rowcount
        con.close()
        return removed > 0

    def users(self) -> set[str]:
        """The user parts of all accounts."""
        with self._connect() as con:
            rows = con.execute("SELECT jid FROM credentials").fetchall()
        con.close()
        return {user for (user,) in rows}

    def accounts(self) -> list[str]:
        return [f"{user}@{self.domain}" for user in sorted(self.users())]

    def check(self, jid: str, password: str) -> bool:
        """Whether `password` is the one stored for `jid` (what the server's login does)."""
        user = local_part(jid, self.domain)
        with self._connect() as con:
            row = con.execute("SELECT hash_pwd FROM credentials WHERE jid = ?", (user,)).fetchone()
        con.close()
        return row is not None and _password_matches(row[0], password)


_ACCOUNT_GONE = (
    "<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
    "<text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>account removed</text></stream:error>"
)


def close_orphan_sessions(manager: Any, users: set[str], domain: str, security: SecurityLog) -> int:
    """Close every open client session of `manager` (pyjabber's ConnectionManager) whose user
    is not in `users` (the accounts that exist); how many were closed."""
    closed = 0
    for peer, client in list(manager._peerList.items()):
        jid = client.jid
        transport = client.transport
        # sessions still negotiating have no address yet; they log in against the database
        if jid is None or jid.user is None or transport is None or transport.is_closing():
            continue
        if jid.domain == domain and jid.user in users:
            continue
        transport.write(_ACCOUNT_GONE.encode())
        manager.close(peer)  # writes </stream:stream> and closes the transport
        security.record(
            "xmpp-session-closed",
            f"{peer[0]}:{peer[1]}",
            f"session of {jid} closed: its account no longer exists",
            jid=str(jid),
        )
        closed += 1
    return closed


async def _watch_sessions(
    cfg: EmbeddedXmppConfig, security: SecurityLog, stop: asyncio.Event
) -> None:
    """Every `session_check_s`, end the sessions of accounts removed since they logged in."""
    from pyjabber.network.ConnectionManager import ConnectionManager

    accounts = PyjabberAccounts(cfg.database, cfg.domain)
    manager = ConnectionManager()
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), cfg.session_check_s)
            return
        except TimeoutError:
            pass
        try:
            users = await asyncio.to_thread(accounts.users)
        except sqlite3.Error as exc:  # keep serving; the next round tries again
            log.error("session check: cannot read accounts from %s: %s", cfg.database, exc)
            continue
        try:
            close_orphan_sessions(manager, users, cfg.domain, security)
        except Exception:  # a bug here must not stop the checks (or the server)
            log.exception("session check failed")


def _peer(transport: Any) -> str:
    peer = transport.get_extra_info("peername") if transport is not None else None
    return f"{peer[0]}:{peer[1]}" if peer else "unknown peer"


def _plain_user(element: Any) -> str:
    """The authentication identity in a SASL PLAIN message, for the security log."""
    try:
        return str(base64.b64decode(element.text or "").split(b"\0")[1].decode()[:64])
    except (binascii.Error, IndexError, UnicodeDecodeError):
        return "(unreadable)"


class _NoUpload:
    """Stands in for pyjabber's HTTP upload plugin (XEP-0363), which we leave out."""

    async def feed(self, jid: Any, element: Any) -> bytes:
        from pyjabber.stanzas.error import StanzaError

        return bytes(StanzaError.feature_not_implemented("request", "urn:xmpp:http:upload:0"))


def _harden(security: SecurityLog) -> None:
    """Our changes to pyjabber's negotiation and routing, in one place (see module docstring).
    Methods are replaced on the classes: this process runs one server."""
    from pyjabber.features.SASL.SASL import SASL
    from pyjabber.network.ConnectionManager import ConnectionManager
    from pyjabber.plugins.xep_0363.xep_0363 import HTTPFieldUpload
    from pyjabber.stream.handlers.StanzaHandler import StanzaHandler
    from pyjabber.stream.negotiators.StreamNegotiator import StreamNegotiator
    from pyjabber.stream.utils.Enums import Signal, Stage
    from pyjabber.utils import Singleton
    from pyjabber.utils.Exceptions import NotAuthorizerStreamNegotiationException

    handle_tls = StreamNegotiator._handle_tls

    async def require_tls(self: Any, element: Any) -> Any:
        peer = _peer(self._transport)
        if not element.tag.endswith("}starttls"):
            security.record(
                "xmpp-no-tls", peer, f"client sent {element.tag} instead of STARTTLS; refused"
            )
            raise NotAuthorizerStreamNegotiationException()
        try:
            result = await handle_tls(self, element)
        except Exception as exc:
            # a refused handshake surfaces as an SSL error, or as pyjabber's own clean-up
            # failing on the transport the client already closed (RuntimeError); either way
            # the connection ends here
            security.record(
                "xmpp-tls-failed", peer, f"TLS handshake failed: {type(exc).__name__} {exc}"
            )
            if not self._transport.is_closing():
                self._transport.close()
            return Signal.FORCE_CLOSE
        if result == Signal.FORCE_CLOSE:
            security.record("xmpp-tls-failed", peer, "TLS handshake failed")
        return result

    async def refuse_registration(self: Any, element: Any) -> None:
        security.record(
            "xmpp-registration-refused",
            _peer(self._transport),
            "in-band registration attempted; accounts are created at enrollment only",
        )
        raise NotAuthorizerStreamNegotiationException()

    handle_auth = SASL.handle_auth

    async def audited_auth(self: Any, element: Any) -> Any:
        result = await handle_auth(self, element)
        if result != Stage.AUTH:
            user = _plain_user(element)
            security.record(
                "xmpp-auth-failed",
                _peer(self._transport),
                f"login as {user!r} refused ({element.attrib.get('mechanism')})",
                user=user,
            )
        return result

    init = StanzaHandler.__init__

    def init_online(self: Any, transport: Any) -> None:
        # pyjabber hands held (offline) messages over when the session starts, but only to
        # resources already marked online, which happens at the first presence, later: the
        # messages were dropped. A bound resource can receive (RFC 6120 §7), so mark it now.
        manager = ConnectionManager()
        bound = manager.get_jid(transport.get_extra_info("peername"))
        if bound is not None:
            manager.online(bound)
        init(self, transport)

    feed = StanzaHandler.feed

    async def stamp_from(self: Any, element: Any) -> Any:
        # the session's bound address, whatever the client wrote (RFC 6120 §8.1.2.1)
        if self._jid is not None:
            element.attrib["from"] = str(self._jid)
        return await feed(self, element)

    # pyjabber's plugin table always contains HTTP upload, whose singleton needs the upload HTTP
    # server we do not start; in its place an answer that the feature is not there
    Singleton._instances[HTTPFieldUpload] = _NoUpload()
    from pyjabber.plugins.xep_0363 import upload_server

    with contextlib.suppress(OSError):  # made when the module is imported; never used by us
        os.rmdir(upload_server.TEMP_DIR)

    StreamNegotiator._handle_tls = require_tls
    SASL.handle_iq = refuse_registration
    SASL.handle_auth = audited_auth
    StanzaHandler.__init__ = init_online
    StanzaHandler.feed = stamp_from


def _route_loguru() -> None:
    """pyjabber logs with loguru; send its records to the standard logging tree."""
    from loguru import logger

    pylog = logging.getLogger("pyjabber")

    def sink(message: Any) -> None:
        record = message.record
        pylog.log(max(record["level"].no, logging.DEBUG), "%s", record["message"])

    logger.remove()
    logger.add(sink, level=max(pylog.getEffectiveLevel(), logging.DEBUG), format="{message}")
    logging.getLogger("alembic").setLevel(logging.WARNING)


async def serve(
    cfg: EmbeddedXmppConfig,
    tls: ssl.SSLContext,
    security: SecurityLog,
    stop: asyncio.Event,
    on_ready: Callable[[str, int], Awaitable[None] | None] | None = None,
) -> None:
    """Run the server until `stop` is set; `on_ready(address, port)` once it listens."""
    from pyjabber import AppConfig

    _route_loguru()
    AppConfig.app_config = AppConfig.AppConfig(
        host=cfg.domain,
        ip=[cfg.listen],
        ssl_context=tls,
        ssl_context_s2s=tls,  # no s2s listener or connector runs; never used
        connection_timeout=cfg.idle_timeout,
        server_port=0,
        family=socket.AF_INET6 if ipaddress.ip_address(cfg.listen).version == 6 else socket.AF_INET,
        config_path="",
        cert_path=str(cfg.credentials),
        root_path=str(Path(AppConfig.__file__).parent),  # its database migrations live there
        database_path=str(cfg.database),
        database_in_memory=False,
        database_purge=False,
        database_debug=False,
        message_persistence=cfg.offline_messages,
        semaphore=asyncio.Semaphore(2),
        # password hashing off the event loop; hashlib releases the GIL, no processes needed
        process_pool_exe=ThreadPoolExecutor(2, thread_name_prefix="xmpp-pbkdf2"),
        verbose=False,
        plugins=list(_FEATURES),
        items=dict(_ITEMS),
    )
    _harden(security)

    from pyjabber.db.database import DB
    from pyjabber.features.presence.PresenceFeature import Presence
    from pyjabber.network.protocols.XMLProtocol import XMLProtocol
    from pyjabber.plugins.xep_0060.xep_0060 import PubSub
    from pyjabber.queues.QueueManager import QueueName, get_queue
    from pyjabber.queues.workers.MessageQueueWorker import queue_worker

    for name in (QueueName.CONNECTIONS, QueueName.MESSAGES, QueueName.SERVERS):
        get_queue(name)
    PyjabberAccounts(cfg.database, cfg.domain)._connect().close()
    await DB.setup_database()
    await asyncio.to_thread(DB.run_db_migrations)
    await Presence().get_all_pending_presence()
    await PubSub().update_memory_from_database()
    worker = asyncio.create_task(queue_worker(), name="pyjabber-queue")
    watcher = asyncio.create_task(_watch_sessions(cfg, security, stop), name="session-check")

    loop = asyncio.get_running_loop()
    listener = await loop.create_server(
        lambda: XMLProtocol(namespace="jabber:client", connection_timeout=cfg.idle_timeout),
        host=cfg.listen,
        port=cfg.port,
    )
    address, port = listener.sockets[0].getsockname()[:2]
    log.info("XMPP domain %s: clients on %s port %d (STARTTLS required)", cfg.domain, address, port)
    try:
        if on_ready is not None:
            maybe = on_ready(address, port)
            if maybe is not None:
                await maybe
        await stop.wait()
    finally:
        listener.close()
        from pyjabber.network.ConnectionManager import ConnectionManager

        for peer_transport in _open_transports(ConnectionManager()):
            peer_transport.close()
        worker.cancel()
        watcher.cancel()
        await asyncio.gather(worker, watcher, return_exceptions=True)
        await DB.close_engine_async()
        AppConfig.app_config.process_pool_exe.shutdown(wait=False)
        log.info("XMPP server stopped")


def _open_transports(manager: Any) -> list[Any]:
    """Client transports still open at shutdown, so clients see the stream end promptly."""
    peers = getattr(manager, "_peerList", {}) or {}
    out = []
    for entry in list(peers.values()):
        transport = getattr(entry, "transport", None)
        if transport is not None and not transport.is_closing():
            out.append(transport)
    return out


def load(path: Path) -> EmbeddedXmppConfig:
    return load_config(path, EmbeddedXmppConfig)


def run(config_path: Path) -> None:
    """The process entry point: load the configuration, check the certificate, serve until a
    signal. Errors in the configuration or credentials stop it before it listens."""
    cfg = load(config_path)
    creds = Credentials.load(cfg.credentials)
    check_service_certificate(creds, cfg.domain)
    # clients authenticate with passwords over verified TLS; they are not asked for certificates
    tls = server_context(creds, require_client_cert=False)
    security = SecurityLog(cfg.security_log)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        def ready(address: str, port: int) -> None:
            print(f"READY {address} {port}", flush=True)

        await serve(cfg, tls, security, stop, ready)

    # pyjabber is written for uvloop (its own launcher uses it): with the default loop, data a
    # client sends right after the TLS handshake can reach its parser before the negotiator
    # has switched to the encrypted stream, and that client's stream stalls
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
        _exit_soon()  # the server stopped as asked


def _exit_soon() -> None:
    """After the server stopped: end the process if closing the loop and the interpreter's exit
    take longer than CLOSE_TIMEOUT_S. Under load a task or executor thread pyjabber left behind
    has been seen to hold the exit for more than 10 s; the server has stopped and closed its
    database by then, so nothing is lost by not waiting (a service manager would kill it)."""

    def watchdog() -> None:
        time.sleep(CLOSE_TIMEOUT_S)
        stuck = sorted(t.name for t in threading.enumerate() if t is not threading.current_thread())
        log.warning("exit still waiting after %.0f s (threads: %s); ending the process",
                    CLOSE_TIMEOUT_S, ", ".join(stuck))  # fmt: skip
        logging.shutdown()
        os._exit(0)

    threading.Thread(target=watchdog, name="exit-watchdog", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m homeflex.cloud.xmpp.embedded")
    parser.add_argument("--config", type=Path, required=True, help="server configuration (YAML)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        run(args.config)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"xmpp server: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
