"""Revocation locks a box out of XMPP: the box enrolled (flows.enroll made its account on the
real server's store) and its agent process is connected; `flows.revoke_box` removes the account;
within one session-check interval the server ends the open session, a new login is refused,
and the other agents stay connected and keep talking. Embedded server (pyjabber) and Prosody."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from homeflex.cloud.enroll import flows
from homeflex.cloud.enroll.accounts import XmppAccounts
from homeflex.cloud.enroll.registry import Registry
from homeflex.cloud.xmpp.domain import TEST_DOMAIN, new_password
from homeflex.cloud.xmpp.embedded import PyjabberAccounts
from homeflex.cloud.xmpp.prosody import ProsodyAccounts, ProsodyServer, find_prosody
from homeflex.pki.bundle import Credentials, issue_credentials
from homeflex.pki.ca import FleetCA
from homeflex.pki.identity import Identity, Role
from homeflex.pki.keys import generate_key, make_csr
from tests.integration.test_xmpp_tls import (
    SERVICE,
    Party,
    Server,
    _free_port,
    _reap_agents,  # noqa: F401  (autouse: agent processes are reaped after each test)
    embedded_server,
    finish,
    jid,
    next_event,
    start_agent,
)
from tests.pki_fixtures import make_fleet

INTERVAL = 0.5  # the embedded server's session_check_s in these tests
# the agent process has to notice the closed stream and print; generous for a loaded 2-core box
NOTICE = 1.0


@contextmanager
def running_server(
    kind: str, base: Path, service: Credentials, parties: dict[str, Party]
) -> Iterator[tuple[Server, XmppAccounts]]:
    """A running server of `kind` with accounts for `parties`, and its real account store."""
    if kind == "embedded":
        with embedded_server(base / "embedded", service, parties, session_check_s=INTERVAL) as s:
            yield s, PyjabberAccounts(base / "embedded" / "pyjabber.db", TEST_DOMAIN)
        return
    if find_prosody() is None:
        pytest.skip("the prosody binary is not installed (apt-get install prosody; dev.sh does)")
    prosody = ProsodyServer(TEST_DOMAIN, service, base / "prosody", _free_port())
    for party in parties.values():
        prosody.add_account(party.jid, party.password)
    prosody.start()
    try:
        server = Server("prosody", prosody.port, base / "prosody-security.jsonl", parties, prosody)
        yield server, ProsodyAccounts(prosody.config_path)
    finally:
        prosody.stop()


def enroll_box(
    fleet: FleetCA, registry: Registry, accounts: XmppAccounts, name: str, directory: Path
) -> Party:
    """What the enrollment service does for a box, in process: code, CSR, certificate and the
    XMPP account on the server's store; the box's files installed in `directory`."""
    code = registry.new_code(name).code
    directory.mkdir(mode=0o700)
    key = generate_key(directory / "key.pem")
    csr = make_csr(key, Identity(name, Role.HOME))
    done = flows.enroll(fleet, registry, accounts, code, csr, TEST_DOMAIN)
    Credentials(directory).install(done.chain, done.root, done.crl)
    return Party(Credentials.load(directory), done.password)


@pytest.mark.parametrize("kind", ["embedded", "prosody"])
async def test_a_revoked_box_is_locked_out_of_xmpp(kind: str, tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path / "pki")
    registry = Registry.open(fleet.dir)
    service = issue_credentials(fleet, SERVICE, tmp_path / "service")
    parties = {
        name: Party(
            issue_credentials(fleet, Identity(name, Role.HOME, xmpp=jid(name)), tmp_path / name),
            new_password(),
        )
        for name in ("alice", "bob")
    }
    alice, bob = parties["alice"], parties["bob"]
    try:
        with running_server(kind, tmp_path, service, parties) as (server, accounts):
            box = enroll_box(fleet, registry, accounts, "box-0001", tmp_path / "box")
            assert box.jid == "box-0001@xmpp.homeflex.test"

            held = await start_agent(server, box, "hold")
            echo = await start_agent(server, bob, "echo")
            connected = await next_event(held)
            assert connected["event"] == "connected"
            assert connected["jid"].split("/")[0] == box.jid
            assert (await next_event(echo))["event"] == "connected"

            if isinstance(accounts, ProsodyAccounts):  # removal goes through the admin shell
                assert accounts.running()
            revoked_at = time.monotonic()
            done = flows.revoke_box(fleet, registry, "box-0001", accounts)
            assert done.xmpp == box.jid and done.xmpp_removed is True
            assert await next_event(held) == {"event": "disconnected"}
            took = time.monotonic() - revoked_at
            assert took < INTERVAL + NOTICE, f"session ended {took:.2f} s after the revocation"
            assert await finish(held) == 0
            if kind == "embedded":
                closed = server.wait_events("xmpp-session-closed")
                assert len(closed) == 1, closed
                assert closed[0].fields["jid"].split("/")[0] == box.jid
                assert closed[0].source.startswith("127.0.0.1:")

            # the card's password no longer opens a session
            again = await start_agent(server, box, "connect")
            refused = await next_event(again)
            assert refused["event"] == "error" and refused["kind"] == "AuthenticationFailure"
            assert await finish(again) == 1

            # bob's session survived the check; alice reaches him
            sender = await start_agent(server, alice, "send", bob.jid, "still here")
            assert (await next_event(sender))["event"] == "connected"
            assert (await next_event(sender))["event"] == "sent"
            got = await next_event(echo)
            assert got["event"] == "received" and got["body"] == "still here"
            assert got["sender"].split("/")[0] == alice.jid
            answer = await next_event(sender)
            assert answer["event"] == "received" and answer["body"] == "echo: still here"
            assert await finish(echo) == 0 and await finish(sender) == 0
            if kind == "embedded":  # nobody else's session was closed
                assert len(server.events("xmpp-session-closed")) == 1
    finally:
        registry.close()
        fleet.close()
