"""XMPP with verified TLS: SPADE agents in separate processes talk through the embedded server
(pyjabber) and through Prosody; plaintext, a server from another CA, a wrong password,
self-registration and a forged sender are refused, and each refusal is a security event."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import select
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import slixmpp
import yaml

from homeflex.agents.xmpp_tls import XmppEndpoint, secure_client, xmpp_tls_context
from homeflex.cloud.xmpp.domain import TEST_DOMAIN, AccountError, new_password
from homeflex.cloud.xmpp.embedded import PyjabberAccounts
from homeflex.cloud.xmpp.prosody import ProsodyServer, find_prosody
from homeflex.pki.bundle import Credentials, issue_credentials
from homeflex.pki.ca import FleetCA
from homeflex.pki.identity import Identity, Role
from homeflex.security import Event, read_events
from tests.pki_fixtures import make_fleet

AGENT = str(Path(__file__).with_name("xmpp_agent.py"))
REPO = Path(__file__).resolve().parents[2]
SERVICE = Identity("xmpp", Role.SERVICE, dns=(TEST_DOMAIN,))


def jid(name: str) -> str:
    return f"{name}@{TEST_DOMAIN}"


@dataclass
class Party:
    creds: Credentials
    password: str

    @property
    def jid(self) -> str:
        xmpp = self.creds.identity().xmpp
        assert xmpp is not None
        return xmpp


@dataclass
class Server:
    kind: str
    port: int
    security_log: Path  # where this server's refusals end up
    parties: dict[str, Party]
    prosody: ProsodyServer | None = None

    def events(self, kind: str) -> list[Event]:
        if self.prosody is not None:  # Prosody logs; we turn its lines into events
            from homeflex.security import SecurityLog

            self.prosody.record_refusals(SecurityLog(self.security_log))
        return [e for e in read_events(self.security_log) if e.kind == kind]

    def wait_events(self, kind: str, count: int = 1, timeout: float = 5) -> list[Event]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.events(kind)
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _readline(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else b""


def _parties(creds: Any, names: tuple[str, ...] = ("alice", "bob")) -> dict[str, Party]:
    return {n: Party(creds(Identity(n, Role.HOME, xmpp=jid(n))), new_password()) for n in names}


@contextmanager
def embedded_server(
    base: Path, server_creds: Credentials, parties: dict[str, Party], **options: Any
) -> Iterator[Server]:
    """The embedded server as a process of its own (`python -m ...embedded`), accounts made
    beforehand in its database, stopped with SIGTERM; `options`: more configuration keys."""
    base.mkdir(parents=True, exist_ok=True)
    accounts = PyjabberAccounts(base / "pyjabber.db", TEST_DOMAIN)
    for party in parties.values():
        accounts.add_account(party.jid, party.password)
    config = {
        "domain": TEST_DOMAIN,
        "listen": "127.0.0.1",
        "port": 0,
        "credentials": str(server_creds.dir),
        "database": str(base / "pyjabber.db"),
        "security_log": str(base / "security.jsonl"),
        **options,
    }
    (base / "xmpp.yaml").write_text(yaml.safe_dump(config))
    stderr = (base / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "homeflex.cloud.xmpp.embedded", "--config", str(base / "xmpp.yaml")],
        stdout=subprocess.PIPE,
        stderr=stderr,
        cwd=REPO,
    )
    try:
        line = _readline(proc, 20).decode().split()
        assert line[:1] == ["READY"], (base / "server.log").read_text()[-2000:]
        yield Server("embedded", int(line[2]), base / "security.jsonl", parties)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        stderr.close()
    assert code == 0, f"embedded server exited with {code}"


@pytest.fixture
def embedded(tmp_path: Path, creds: Any) -> Iterator[Server]:
    with embedded_server(tmp_path / "embedded", creds(SERVICE), _parties(creds)) as server:
        yield server


@pytest.fixture
def prosody(tmp_path: Path, creds: Any) -> Iterator[Server]:
    if find_prosody() is None:
        pytest.skip("the prosody binary is not installed (apt-get install prosody; dev.sh does)")
    parties = _parties(creds)
    server = ProsodyServer(TEST_DOMAIN, creds(SERVICE), tmp_path / "prosody", _free_port())
    for party in parties.values():
        server.add_account(party.jid, party.password)
    server.start()
    try:
        yield Server("prosody", server.port, tmp_path / "prosody-security.jsonl", parties, server)
    finally:
        server.stop()


@pytest.fixture(params=["embedded", "prosody"])
def server(request: pytest.FixtureRequest) -> Server:
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


_spawned: list[asyncio.subprocess.Process] = []


@pytest.fixture(autouse=True)
async def _reap_agents() -> Any:
    """Every agent process a test started is gone, and its pipes closed, when the test ends."""
    yield
    while _spawned:
        proc = _spawned.pop()
        if proc.returncode is None:
            proc.kill()
        await proc.communicate()


async def start_agent(
    server: Server,
    party: Party,
    *args: str,
    password: str | None = None,
    security_log: Path | None = None,
) -> asyncio.subprocess.Process:
    extra = ["--security-log", str(security_log)] if security_log else []
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        AGENT,
        "--creds", str(party.creds.dir),
        "--address", "127.0.0.1",
        "--port", str(server.port),
        "--domain", TEST_DOMAIN,
        "--timeout", "10",
        *extra,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "XMPP_PASSWORD": password or party.password},
    )  # fmt: skip
    _spawned.append(proc)
    return proc


async def next_event(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    if not line:
        assert proc.stderr is not None
        err = await proc.stderr.read()
        raise AssertionError(f"agent ended without a word: {err.decode()[-2000:]}")
    event: dict[str, Any] = json.loads(line)
    return event


async def finish(proc: asyncio.subprocess.Process) -> int:
    await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode


# --- agents talk -------------------------------------------------------------------------


async def test_agents_in_two_processes_exchange_messages(server: Server) -> None:
    alice, bob = server.parties["alice"], server.parties["bob"]
    echo = await start_agent(server, bob, "echo")
    assert await next_event(echo) == {"event": "connected", "jid": bob.jid, "tls": "TLSv1.3"}

    sender = await start_agent(server, alice, "send", bob.jid, "meter 42 kWh")
    assert (await next_event(sender))["event"] == "connected"
    assert await next_event(sender) == {"event": "sent", "to": bob.jid, "body": "meter 42 kWh"}

    got = await next_event(echo)
    assert got["event"] == "received" and got["body"] == "meter 42 kWh"
    assert got["sender"].split("/")[0] == alice.jid
    answer = await next_event(sender)
    assert answer["event"] == "received" and answer["body"] == "echo: meter 42 kWh"
    assert answer["sender"].split("/")[0] == bob.jid
    assert await finish(echo) == 0 and await finish(sender) == 0


async def test_message_to_an_offline_agent_is_delivered_when_it_connects(server: Server) -> None:
    alice, bob = server.parties["alice"], server.parties["bob"]
    sender = await start_agent(server, alice, "--no-answer", "send", bob.jid, "while you slept")
    assert (await next_event(sender))["event"] == "connected"
    assert (await next_event(sender))["event"] == "sent"
    assert await finish(sender) == 0

    echo = await start_agent(server, bob, "echo")
    assert (await next_event(echo))["event"] == "connected"
    got = await next_event(echo)
    assert got["event"] == "received" and got["body"] == "while you slept"
    assert got["sender"].split("/")[0] == alice.jid


# --- refusals ----------------------------------------------------------------------------


def _plaintext_login(port: int, user: str, password: str) -> list[bytes]:
    """A client that never starts TLS: opens a stream, offers its password in the clear, then
    asks for its roster as if it had a session. Returns what the server sent after each step."""
    answers = []
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.settimeout(1.5)

        def exchange(data: bytes) -> bytes:
            try:
                s.sendall(data)
            except OSError:
                return b"<closed>"
            got = b""
            try:
                while chunk := s.recv(65536):
                    got += chunk
                got += b"<closed>"
            except TimeoutError:
                pass
            except OSError:
                got += b"<closed>"
            return got

        answers.append(
            exchange(
                f"<?xml version='1.0'?><stream:stream to='{TEST_DOMAIN}' xmlns='jabber:client' "
                "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>".encode()
            )
        )
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        auth = f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>"
        answers.append(exchange(auth.encode()))
        answers.append(exchange(b"<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>"))
    return answers


def test_plaintext_client_gets_no_session(server: Server) -> None:
    bob = server.parties["bob"]
    features, auth, roster = _plaintext_login(server.port, "bob", bob.password)
    # both servers offer STARTTLS, and only as required
    assert b"urn:ietf:params:xml:ns:xmpp-tls" in features and b"required" in features
    assert b"mechanism" not in features
    # the right password in the clear opens nothing
    assert b"<success" not in auth
    if server.kind == "embedded":
        assert b"not-authorized" in auth and auth.endswith(b"<closed>")
    else:
        assert b"<encryption-required/>" in auth
    # and asking for a roster afterwards gets nothing but an error or a closed socket
    assert b"type='result'" not in roster and b'type="result"' not in roster
    events = server.wait_events("xmpp-no-tls")
    assert len(events) == 1 and events[0].source.startswith("127.0.0.1")


async def test_slixmpp_with_tls_off_gets_no_session(server: Server) -> None:
    """A stock slixmpp client with STARTTLS switched off, even willing to send its password in
    the clear: the server offers it nothing to log in with, so it never has a session."""
    bob = server.parties["bob"]
    client = slixmpp.ClientXMPP(bob.jid, bob.password)
    client.enable_starttls = False
    client.enable_direct_tls = False
    client.enable_plaintext = True
    client["feature_mechanisms"].unencrypted_plain = True
    features: list[str] = []
    started = asyncio.Event()
    client.add_event_handler("session_start", lambda _: started.set())
    client.register_handler(
        slixmpp.xmlstream.handler.Callback(
            "features",
            slixmpp.xmlstream.matcher.MatchXPath("{http://etherx.jabber.org/streams}features"),
            lambda stanza: features.append(str(stanza)),
        )
    )
    client.connect("127.0.0.1", server.port)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(started.wait(), 2)
    await client.disconnect(wait=0)
    assert len(features) == 1, features
    assert "urn:ietf:params:xml:ns:xmpp-tls" in features[0] and "required" in features[0]
    assert "mechanism" not in features[0]
    assert not client.authenticated


async def test_wrong_password_is_refused(server: Server, tmp_path: Path) -> None:
    bob = server.parties["bob"]
    agent = await start_agent(server, bob, "connect", password=new_password())
    event = await next_event(agent)
    assert event["event"] == "error" and event["kind"] == "AuthenticationFailure"
    assert await finish(agent) == 1
    refused = server.wait_events("xmpp-auth-failed")
    assert refused and all("bob" in e.detail for e in refused)


async def test_client_refuses_server_from_another_ca_with_the_same_names(
    tmp_path: Path, fleet_ca: FleetCA, creds: Any
) -> None:
    """An impostor with its own root and fleet CA named exactly like ours, and a service
    certificate for our domain: our agents' TLS context refuses it before any password."""
    impostor_fleet = make_fleet(tmp_path / "impostor-pki")
    assert impostor_fleet.root.subject == fleet_ca.root.subject
    impostor = issue_credentials(impostor_fleet, SERVICE, tmp_path / "impostor-server")
    parties = _parties(creds)
    client_log = tmp_path / "client-security.jsonl"
    with embedded_server(tmp_path / "impostor", impostor, parties) as server:
        agent = await start_agent(server, parties["bob"], "connect", security_log=client_log)
        event = await next_event(agent)
        assert event["event"] == "error" and event["kind"] == "DisconnectedException"
        assert await finish(agent) == 1
        untrusted = [e for e in read_events(client_log) if e.kind == "xmpp-server-untrusted"]
        assert len(untrusted) == 1 and "certificate verify failed" in untrusted[0].detail
        # the server saw the handshake fail, and no login was attempted on it
        assert server.wait_events("xmpp-tls-failed")
        assert not server.events("xmpp-auth-failed")
    impostor_fleet.close()


async def test_client_context_checks_the_domain_name(embedded: Server) -> None:
    """Our root, a valid certificate, but the agent expects another domain: refused by the
    agent's TLS context. (pyjabber goes on to TLS whatever domain a client names; Prosody
    would already end the stream with host-unknown.)"""
    server = embedded
    bob = server.parties["bob"]
    client = slixmpp.ClientXMPP("bob@xmpp.elsewhere.test", bob.password)
    secure_client(
        client,
        xmpp_tls_context(bob.creds),
        XmppEndpoint("xmpp.elsewhere.test", "127.0.0.1", server.port),
    )
    outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    client.add_event_handler(
        "ssl_invalid_chain", lambda exc: outcome.done() or outcome.set_result(str(exc))
    )
    client.add_event_handler(
        "session_start", lambda _: outcome.done() or outcome.set_result("session")
    )
    client.connect()
    result = await asyncio.wait_for(outcome, 15)
    await client.disconnect(wait=0)
    assert "Hostname mismatch" in result or "doesn't match" in result, result


def _recv_until(sock: socket.socket, marker: bytes) -> bytes:
    got = b""
    while marker not in got:
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def test_in_band_registration_is_refused(embedded: Server) -> None:
    """After STARTTLS (verified with our context), asking to register an account is refused;
    the account does not appear."""
    tls = xmpp_tls_context(embedded.parties["bob"].creds)
    opening = (
        f"<?xml version='1.0'?><stream:stream to='{TEST_DOMAIN}' xmlns='jabber:client' "
        "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
    ).encode()
    with socket.create_connection(("127.0.0.1", embedded.port), timeout=5) as raw:
        raw.sendall(opening)
        assert b"xmpp-tls" in _recv_until(raw, b"</stream:features>")
        raw.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        assert b"proceed" in _recv_until(raw, b"proceed")
        with tls.wrap_socket(raw, server_hostname=TEST_DOMAIN) as s:
            s.sendall(opening.removeprefix(b"<?xml version='1.0'?>"))  # one declaration per socket
            features = _recv_until(s, b"</stream:features>")
            assert b"PLAIN" in features and b"iq-register" not in features
            s.sendall(
                b"<iq type='set' id='reg1'><query xmlns='jabber:iq:register'>"
                b"<username>mallory</username><password>mallory-password-123456</password>"
                b"</query></iq>"
            )
            answer = b""
            try:
                while chunk := s.recv(65536):
                    answer += chunk
            except (TimeoutError, ssl.SSLError, OSError):
                pass
    assert b"not-authorized" in answer and b"type='result'" not in answer
    accounts = PyjabberAccounts(embedded.security_log.parent / "pyjabber.db", TEST_DOMAIN)
    assert sorted(accounts.accounts()) == [jid("alice"), jid("bob")]
    assert len(embedded.wait_events("xmpp-registration-refused")) == 1


async def test_embedded_server_stamps_the_authenticated_sender(embedded: Server) -> None:
    """pyjabber would pass on the `from` a client writes; ours replaces it with the session's
    address, so alice cannot speak as the DSO."""
    alice, bob = embedded.parties["alice"], embedded.parties["bob"]
    echo = await start_agent(embedded, bob, "echo")
    assert (await next_event(echo))["event"] == "connected"

    client = slixmpp.ClientXMPP(alice.jid, alice.password)
    secure_client(
        client, xmpp_tls_context(alice.creds), XmppEndpoint(TEST_DOMAIN, "127.0.0.1", embedded.port)
    )
    started = asyncio.Event()
    client.add_event_handler("session_start", lambda _: started.set())
    client.connect()
    await asyncio.wait_for(started.wait(), 15)
    client.send_message(mto=bob.jid, mbody="curtail now", mfrom=jid("dso"))
    got = await next_event(echo)
    await client.disconnect(wait=0)
    assert got["body"] == "curtail now"
    assert got["sender"].split("/")[0] == alice.jid


# --- accounts ----------------------------------------------------------------------------


def test_accounts_are_checked_before_they_are_made(tmp_path: Path) -> None:
    accounts = PyjabberAccounts(tmp_path / "db.sqlite", TEST_DOMAIN)
    password = new_password()
    accounts.add_account(jid("home-1"), password)
    assert accounts.check(jid("home-1"), password)
    assert not accounts.check(jid("home-1"), new_password())
    with pytest.raises(AccountError, match="exists already"):
        accounts.add_account(jid("home-1"), new_password())
    with pytest.raises(AccountError, match="at least 20 characters"):
        accounts.add_account(jid("home-2"), "admin")
    with pytest.raises(AccountError, match="not in this server's domain"):
        accounts.add_account("home-2@example.org", new_password())
    replaced = new_password()
    accounts.add_account(jid("home-1"), replaced, replace=True)
    assert accounts.check(jid("home-1"), replaced) and not accounts.check(jid("home-1"), password)
    assert accounts.accounts() == [jid("home-1")]
