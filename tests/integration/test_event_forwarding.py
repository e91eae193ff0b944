"""A box's security events reach the cloud receiver (`homeflex cloud events`, a process of its
own, mutual TLS) exactly once, also across a receiver outage; a certificate of another CA is
refused; an event edited in or deleted from the box's log after it was written is flagged by
the receiver; only operators read what a box sent."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from homeflex.cloud.events.receiver import EventStore
from homeflex.edge.event_forwarder import acknowledged, forward_events, send_pending
from homeflex.pki.bundle import Credentials, issue_credentials
from homeflex.pki.identity import Identity, Role
from homeflex.pki.trust import client_context
from homeflex.security import Event, SecurityLog, read_events
from tests.pki_fixtures import CredsFactory, make_fleet

RECEIVER = Identity("events", Role.SERVICE, dns=("localhost",), ips=("127.0.0.1",))
BOX = Identity("box-0001", Role.HOME)


class Receiver:
    def __init__(self, creds: Credentials, db: Path) -> None:
        self.creds, self.db, self.port = creds, db, 0
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "homeflex.cli", "cloud", "events", "--creds",
             str(self.creds.dir), "--listen", f"127.0.0.1:{self.port}", "--db", str(self.db)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        match = re.search(r"https://127\.0\.0\.1:(\d+)", self.proc.stdout.readline())
        if match is None:
            self.proc.kill()
            pytest.fail(f"the receiver did not start: {self.proc.communicate()[1][-2000:]}")
        self.port = int(match.group(1))

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.communicate(timeout=10)
            self.proc = None

    def held(self, sender: str) -> list[tuple[int, str, str]]:
        store = EventStore(self.db)
        try:
            return [(e.seq, e.detail, e.hash) for e in store.events(sender)]
        finally:
            store.close()

    def findings(self, sender: str) -> list[str]:
        store = EventStore(self.db)
        try:
            return store.findings(sender)
        finally:
            store.close()


@pytest.fixture
def receiver(creds: CredsFactory, tmp_path: Path) -> Iterator[Receiver]:
    r = Receiver(creds(RECEIVER), tmp_path / "events.db")
    r.start()
    yield r
    r.stop()


async def test_events_arrive_once_across_an_outage(
    receiver: Receiver, creds: CredsFactory, tmp_path: Path
) -> None:
    box = creds(BOX)
    log, state = SecurityLog(tmp_path / "box.log"), tmp_path / "forwarded.json"
    for n in range(3):
        log.record("auth-failed", "192.0.2.7", f"wrong password #{n}")
    assert await send_pending(log, receiver.url, box.dir, state) == 3
    mine = [(e.seq, e.detail, e.hash) for e in read_events(log.path)]
    assert receiver.held("box-0001") == mine
    receiver.stop()
    log.record("replay", "agg-1@x", "message seen before")
    log.record("denied", "box-9@x", "home sent flex-order")
    with pytest.raises(aiohttp.ClientConnectorError):  # the receiver is down
        await send_pending(log, receiver.url, box.dir, state)
    assert acknowledged(state) == 3
    receiver.start()  # the same port and database
    forwarder = asyncio.create_task(forward_events(log, receiver.url, box.dir, state, 0.1))
    for _ in range(100):
        if acknowledged(state) == 5:
            break
        await asyncio.sleep(0.05)
    forwarder.cancel()
    assert receiver.held("box-0001") == [(e.seq, e.detail, e.hash) for e in read_events(log.path)]
    assert await send_pending(log, receiver.url, box.dir, state) == 5  # again: nothing new
    assert len(receiver.held("box-0001")) == 5 and receiver.findings("box-0001") == []


async def test_a_box_of_another_ca_is_refused(
    receiver: Receiver, creds: CredsFactory, tmp_path: Path
) -> None:
    """Same names, another CA; it trusts our root (so it accepts the receiver), and the
    receiver refuses its certificate in the handshake: the service never sees a request."""
    impostor = issue_credentials(make_fleet(tmp_path / "other"), BOX, tmp_path / "impostor")
    for name in ("ca.pem", "crl.pem"):
        (impostor.dir / name).write_bytes((receiver.creds.dir / name).read_bytes())
    log = SecurityLog(tmp_path / "box.log")
    log.record("auth-failed", "192.0.2.7", "wrong password")
    with pytest.raises(aiohttp.ClientError):
        await send_pending(log, receiver.url, impostor.dir, tmp_path / "state.json")
    assert receiver.held("box-0001") == []
    assert read_events(receiver.db.with_suffix(".security.log")) == []  # not past TLS
    # the same request from the box our CA issued goes through
    assert await send_pending(log, receiver.url, creds(BOX).dir, tmp_path / "state.json") == 1
    assert [seq for seq, _, _ in receiver.held("box-0001")] == [1]


async def test_an_edited_event_is_flagged(
    receiver: Receiver, creds: CredsFactory, tmp_path: Path
) -> None:
    box = creds(BOX)
    log, state = SecurityLog(tmp_path / "box.log"), tmp_path / "forwarded.json"
    log.record("auth-failed", "192.0.2.7", "wrong password")
    log.record("update-refused", "/tmp/x.tar", "bad signature")
    lines = log.path.read_text().splitlines()
    edited = json.loads(lines[1])
    edited["detail"] = "nothing happened"  # someone on the box covers their tracks
    log.path.write_text("\n".join([lines[0], json.dumps(edited)]) + "\n")
    await send_pending(log, receiver.url, box.dir, state)
    assert receiver.findings("box-0001") == [
        "event 2: its content was changed after it was written"
    ]


async def test_a_deleted_event_is_flagged(
    receiver: Receiver, creds: CredsFactory, tmp_path: Path
) -> None:
    box = creds(BOX)
    log, state = SecurityLog(tmp_path / "box.log"), tmp_path / "forwarded.json"
    for n in range(3):
        log.record("auth-failed", "192.0.2.7", f"wrong password #{n}")
    lines = log.path.read_text().splitlines()
    log.path.write_text("\n".join([lines[0], lines[2]]) + "\n")  # event 2 removed on the box
    assert await send_pending(log, receiver.url, box.dir, state) == 3
    assert [seq for seq, _, _ in receiver.held("box-0001")] == [1, 3]
    assert receiver.findings("box-0001") == ["event 3: events 2..2 missing"]


async def test_operators_read_what_a_box_sent_and_nobody_else(
    receiver: Receiver, creds: CredsFactory, tmp_path: Path
) -> None:
    box = creds(BOX)
    log = SecurityLog(tmp_path / "box.log")
    log.record("auth-failed", "192.0.2.7", "wrong password")
    await send_pending(log, receiver.url, box.dir, tmp_path / "state.json")
    operator = creds(Identity("operator-ann", Role.OPERATOR))
    url = f"{receiver.url}/security-events?box=box-0001"
    async with aiohttp.ClientSession() as session:
        async with session.get(url, ssl=client_context(operator)) as answer:
            assert answer.status == 200
            body = await answer.json()
        async with session.get(url, ssl=client_context(box)) as refused:
            assert refused.status == 403
            assert (await refused.json())["error"] == "a home may not read the events"
    assert [Event(**e) for e in body["events"]] == read_events(log.path)
    assert body["findings"] == []
    own = read_events(receiver.db.with_suffix(".security.log"))
    assert [(e.kind, e.source) for e in own] == [("events-refused", "box-0001")]


async def test_malformed_batches_are_refused_and_the_receiver_keeps_going(
    receiver: Receiver, creds: CredsFactory, tmp_path: Path
) -> None:
    box = creds(BOX)
    event = {"seq": 1, "ts": 1.0, "kind": "k", "source": "s", "detail": "d", "fields": {},
             "prev": "0" * 64, "hash": "0" * 64}  # fmt: skip
    bad = {
        b"[" * 100_000 + b"]" * 100_000: "malformed batch: JSON nested too deeply",
        json.dumps([{**event, "seq": 2**64}]).encode(): (
            f"malformed batch: event {2**64}: seq must be an integer from 1 to {2**63 - 1}"
        ),
        json.dumps([{**event, "ts": float("nan")}]).encode(): (
            "malformed batch: event 1: ts must be a finite number"
        ),
        b'{"seq": 1}': "malformed batch: expected a JSON list of events",
        b"[" + b" " * (1024 * 1024) + b"]": "batch over 1048576 bytes",
    }
    url = f"{receiver.url}/security-events"
    async with aiohttp.ClientSession() as session:
        for body, reason in bad.items():
            async with session.post(url, data=body, ssl=client_context(box)) as answer:
                assert answer.status in (400, 413)
                assert (await answer.json())["error"] == reason
    own = read_events(receiver.db.with_suffix(".security.log"))
    assert [(e.kind, e.source, e.detail) for e in own] == [
        ("events-refused", "box-0001", reason) for reason in bad.values()
    ]
    assert receiver.held("box-0001") == []
    log = SecurityLog(tmp_path / "box.log")
    log.record("auth-failed", "192.0.2.7", "wrong password")
    assert await send_pending(log, receiver.url, box.dir, tmp_path / "state.json") == 1
