"""Agents in separate processes exchange envelopes through the embedded XMPP server and
through Prosody, both with verified TLS: the aggregator opens the home's P-plan and answers
with a sealed acknowledgement; a replayed, a tampered and a forbidden envelope are refused
with their security events; a capture of the traffic holds none of the payload."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from homeflex.cloud.xmpp.domain import TEST_DOMAIN, new_password
from homeflex.cloud.xmpp.prosody import ProsodyServer, find_prosody
from homeflex.pki.identity import Identity, Role
from homeflex.security import read_events, verify_chain
from tests.integration.test_xmpp_tls import SERVICE, Party, Server, _free_port, embedded_server
from tests.recording_proxy import RecordingProxy, recording_proxy

AGENT = str(Path(__file__).with_name("envelope_agent.py"))
MARKER = "P-plan box-a 7f3a9c: 96 PTUs, 1234 W at 18:00"


def _parties(creds: Any) -> dict[str, Party]:
    agg = Identity("agg-1", Role.AGGREGATOR, xmpp=f"agg-1@{TEST_DOMAIN}")
    box = Identity("box-a", Role.HOME, xmpp=f"box-a@{TEST_DOMAIN}")
    return {"agg": Party(creds(agg), new_password()), "box": Party(creds(box), new_password())}


@pytest.fixture(params=["embedded", "prosody"])
def server(request: pytest.FixtureRequest, tmp_path: Path, creds: Any) -> Iterator[Server]:
    parties = _parties(creds)
    if request.param == "embedded":
        with embedded_server(tmp_path / "embedded", creds(SERVICE), parties) as s:
            yield s
        return
    if find_prosody() is None:
        pytest.skip("the prosody binary is not installed (apt-get install prosody; dev.sh does)")
    prosody = ProsodyServer(TEST_DOMAIN, creds(SERVICE), tmp_path / "prosody", _free_port())
    for party in parties.values():
        prosody.add_account(party.jid, party.password)
    prosody.start()
    try:
        yield Server("prosody", prosody.port, tmp_path / "prosody.jsonl", parties, prosody)
    finally:
        prosody.stop()


@pytest.fixture
def proxy(server: Server) -> Iterator[RecordingProxy]:
    with recording_proxy(("127.0.0.1", server.port)) as p:
        yield p


async def agent(port: int, party: Party, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, AGENT,
        "--creds", str(party.creds.dir), "--address", "127.0.0.1", "--port", str(port),
        "--domain", TEST_DOMAIN, "--timeout", "15", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "XMPP_PASSWORD": party.password},
    )  # fmt: skip


async def events(proc: asyncio.subprocess.Process) -> list[dict[str, Any]]:
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    lines = [json.loads(line) for line in out.decode().splitlines()]
    assert proc.returncode == 0, (lines, err.decode()[-2000:])
    return lines


async def exchange(
    server: Server, port: int, count: int, *home_args: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    agg, box = server.parties["agg"], server.parties["box"]
    aggregator = await agent(port, agg, "--home", "box-a", "serve", str(count))
    assert aggregator.stdout is not None
    line = await asyncio.wait_for(aggregator.stdout.readline(), 30)
    if not line:
        assert aggregator.stderr is not None
        raise AssertionError((await aggregator.stderr.read()).decode()[-3000:])
    assert json.loads(line)["event"] == "connected", line
    home = await agent(
        port, box, "--aggregator", "agg-1", "--peer", "agg-1",
        "--peer-chain", str(agg.creds.cert_path), *home_args, "send", "p-plan", MARKER,
    )  # fmt: skip
    return await events(aggregator), await events(home)


async def test_a_p_plan_and_its_acknowledgement_travel_sealed(
    server: Server, proxy: RecordingProxy
) -> None:
    agg_seen, home_seen = await exchange(server, proxy.port, 1)
    assert agg_seen == [{"event": "opened", "type": "p-plan", "sender": "box-a", "payload": MARKER}]
    assert home_seen[0]["event"] == "connected"
    assert home_seen[1]["event"] == "sent" and home_seen[1]["type"] == "p-plan"
    answer = home_seen[2]
    assert answer["event"] == "opened" and answer["type"] == "ack"
    assert (answer["sender"], answer["payload"]) == ("agg-1", "ack: " + MARKER)
    assert len(answer["in_reply_to"]) == 32
    # seed 004 TST-SEC#08: the wire between agents and server holds none of the payload, in
    # plain text or base64, and it did carry the session (TLS application-data records)
    captured = proxy.captured()
    assert b"\x17\x03\x03" in captured and len(captured) > 2 * home_seen[1]["bytes"]
    for known in (MARKER.encode(), b"7f3a9c", b"box-a", b"p-plan"):
        assert known not in captured
    for shift in range(3):  # the marker in base64, whatever its alignment in a longer text
        assert base64.b64encode(b"\0" * shift + MARKER.encode())[4:-4] not in captured


async def test_a_replayed_envelope_is_refused(server: Server) -> None:
    agg_seen, home_seen = await exchange(server, server.port, 2, "--tamper", "replay")
    assert agg_seen[0]["event"] == "opened" and agg_seen[0]["payload"] == MARKER
    assert agg_seen[1]["event"] == "refused" and agg_seen[1]["kind"] == "replay"
    assert home_seen[-1]["payload"] == "ack: " + MARKER
    log = server.parties["agg"].creds.dir / "security.jsonl"
    assert [e.kind for e in read_events(log)] == ["replay"]
    assert verify_chain(read_events(log)) == []


async def test_a_tampered_envelope_is_refused(server: Server) -> None:
    agg_seen, _ = await exchange(server, server.port, 2, "--tamper", "flip")
    assert agg_seen[0]["event"] == "refused" and agg_seen[0]["kind"] == "bad-signature"
    assert agg_seen[1]["event"] == "opened" and agg_seen[1]["payload"] == MARKER


async def test_a_home_sending_an_order_is_refused(server: Server) -> None:
    agg_seen, _ = await exchange(server, server.port, 2, "--tamper", "order")
    assert agg_seen[0]["event"] == "refused" and agg_seen[0]["kind"] == "denied"
    assert "flex-order" in agg_seen[0]["detail"]
    assert agg_seen[1]["event"] == "opened"
