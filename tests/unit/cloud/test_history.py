"""Telemetry batches and the history: signed batches accepted, every kind of bad batch refused
with its own security event (and the next good one still lands), idempotent on (box, seq),
pseudonymous ids, and a manual edit or deletion in the database detected."""

from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import json
import os
import signal
import sqlite3
import struct
import time
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from homeflex.agents.chains import ChainVerifier
from homeflex.cloud.history.handler import Accepted, BatchHandler, Refusal
from homeflex.cloud.history.ingest import Ingest, IntegrityWatch
from homeflex.cloud.history.keys import HistoryKeys, Identities
from homeflex.cloud.history.layout import HistoryDir
from homeflex.cloud.history.report import fleet_report
from homeflex.cloud.history.sqlite import SqliteHistory
from homeflex.cloud.history.workers import WorkerError, WorkerProcess
from homeflex.pki.bundle import Credentials
from homeflex.pki.identity import Identity, Role
from homeflex.pki.trust import TrustStore
from homeflex.security import SecurityLog, read_events
from homeflex.telemetry import (
    MAGIC,
    SIGN_LABEL,
    Batch,
    BatchRefused,
    PtuItem,
    ReadingItem,
    decode_body,
    encode_body,
    new_batch_id,
    seal,
    telemetry_topic,
)
from tests.pki_fixtures import CredsFactory

T_MS = 1_700_000_100_000


@dataclasses.dataclass
class Box:
    name: str
    creds: Credentials

    def batch(self, first_seq: int, n: int = 3, **kw: object) -> Batch:
        readings = [
            ReadingItem(first_seq + i, "meter", "import_wh", T_MS + 1000 * i, 100.0 + i)
            for i in range(n)
        ]
        fields: dict[str, object] = {
            "box": self.name,
            "id": new_batch_id(),
            "sent": time.time(),
            "clock": T_MS / 1000 + n,
            "readings": readings,
            "ptus": [],
            "poll_s": {"meter": 1.0},
        }
        fields.update(kw)
        return Batch(**fields)  # type: ignore[arg-type]

    def seal(self, batch: Batch, topic: str | None = None) -> tuple[str, bytes]:
        topic = topic or telemetry_topic(self.name)
        return topic, seal(batch, topic, self.creds.key(), self.creds.chain())


@pytest.fixture
def box(creds: CredsFactory) -> Box:
    return Box("hist-box-1", creds(Identity("hist-box-1", Role.HOME)))


@pytest.fixture
def other_box(creds: CredsFactory) -> Box:
    return Box("hist-box-2", creds(Identity("hist-box-2", Role.HOME)))


@dataclasses.dataclass
class Service:
    ingest: Ingest
    store: SqliteHistory
    keys: HistoryKeys
    security: SecurityLog
    path: Path

    def kinds(self) -> list[str]:
        return [e.kind for e in read_events(self.security.path)]


@pytest.fixture
def service(tmp_path: Path, creds: CredsFactory) -> Iterator[Service]:
    ingest_creds = creds(Identity("hist-ingest", Role.SERVICE))
    keys = HistoryKeys.load(tmp_path / "keys")
    store = SqliteHistory(tmp_path / "history.db", keys.integrity)
    security = SecurityLog(tmp_path / "security.log")
    identities = Identities(tmp_path / "keys" / "identities.db")
    verifier = ChainVerifier(TrustStore.of(ingest_creds))
    ingest = Ingest([BatchHandler(store, keys, identities, verifier)], security)
    yield Service(ingest, store, keys, security, tmp_path / "history.db")
    store.close()


def test_a_signed_batch_is_stored_under_a_pseudonym_and_acknowledged(
    service: Service, box: Box
) -> None:
    batch = box.batch(1, ptus=[PtuItem(4, "meter", T_MS, 250.0, 1.5, False, 1000.0)])
    ack = service.ingest.handle(*box.seal(batch))
    assert ack is not None and ack.batch == batch.id and ack.new == 4
    pid = service.keys.pid(box.name)
    assert service.store.boxes() == [pid] and box.name not in pid
    assert [(r.ts_ms, r.value) for r in service.store.readings(pid, 0, 2 * T_MS)] == [
        (T_MS, 100.0),
        (T_MS + 1000, 101.0),
        (T_MS + 2000, 102.0),
    ]
    (ptu,) = service.store.ptus(pid, 0, 2 * T_MS)
    assert (ptu.import_wh, ptu.export_wh, ptu.mean_power_w) == (250.0, 1.5, 1000.0)
    # the history file holds no box name; the map (its own file) does
    assert box.name.encode() not in service.path.read_bytes()
    assert Identities(service.path.parent / "keys" / "identities.db").box(pid) == box.name


def test_redelivered_items_are_stored_once_and_a_newer_ptu_replaces_the_older(
    service: Service, box: Box
) -> None:
    service.ingest.handle(*box.seal(box.batch(1, 3)))
    ack = service.ingest.handle(*box.seal(box.batch(2, 3)))  # seq 2, 3 again and a new 4
    assert ack is not None and ack.new == 1
    pid = service.keys.pid(box.name)
    assert service.store.counts(pid)["readings"] == 4
    assert service.store.counts(pid)["duplicates"] == 2
    old = PtuItem(10, "meter", T_MS, 100.0, 0.0, True, None)
    new = PtuItem(11, "meter", T_MS, 120.0, 0.0, False, None)
    service.ingest.handle(*box.seal(box.batch(20, 1, ptus=[new])))
    service.ingest.handle(*box.seal(box.batch(21, 1, ptus=[old])))  # older, arriving late
    (ptu,) = service.store.ptus(pid, 0, 2 * T_MS)
    assert ptu.seq == 11  # the newer item is the one kept
    assert (ptu.import_wh, ptu.estimated) == (120.0, False)
    assert service.store.check_integrity() == []


def test_a_replayed_batch_is_refused_and_counted_once(service: Service, box: Box) -> None:
    frame = box.seal(box.batch(1))
    assert service.ingest.handle(*frame) is not None
    assert service.ingest.handle(*frame) is None
    pid = service.keys.pid(box.name)
    assert service.store.counts(pid) == {
        "readings": 3,
        "ptus": 0,
        "batches": 1,
        "duplicates": 0,
        "replays": 1,
    }
    assert service.kinds() == ["telemetry-replay"]


def test_another_boxs_topic_is_refused(service: Service, box: Box, other_box: Box) -> None:
    # box 2 signs a batch in its own name but publishes it on box 1's topic
    topic, frame = other_box.seal(other_box.batch(1), telemetry_topic(box.name))
    assert service.ingest.handle(topic, frame) is None
    # or claims box 1 in the body, on its own topic
    topic, frame = other_box.seal(other_box.batch(1, box=box.name))
    assert service.ingest.handle(topic, frame) is None
    assert service.kinds() == ["telemetry-wrong-box", "telemetry-wrong-box"]
    assert service.store.boxes() == []


def test_a_bad_signature_is_refused_and_the_next_good_batch_lands(
    service: Service, box: Box
) -> None:
    topic, frame = box.seal(box.batch(1))
    flipped = bytearray(frame)
    flipped[-5] ^= 0x01  # one bit of the compressed body
    assert service.ingest.handle(topic, bytes(flipped)) is None
    assert service.ingest.handle(*box.seal(box.batch(1))) is not None
    assert service.kinds() == ["telemetry-bad-signature"]
    assert service.store.counts(service.keys.pid(box.name))["readings"] == 3


@pytest.mark.parametrize(
    ("frame", "says"),
    [
        (b"", "does not start"),
        (b"HFT0" + bytes(20), "does not start"),
        (MAGIC + struct.pack(">I", 10**6) + b"{}", "head length"),
        (MAGIC + struct.pack(">I", 2) + b"{}" + b"x", "head"),
        (MAGIC + struct.pack(">I", 5) + b"nope!", "head"),
        (b"x" * (1024 * 1024 + 1), "bytes, more than"),
    ],
)
def test_malformed_frames_are_refused_with_what_is_wrong(
    service: Service, box: Box, frame: bytes, says: str
) -> None:
    assert service.ingest.handle(telemetry_topic(box.name), frame) is None
    (event,) = read_events(service.security.path)
    assert event.kind in ("telemetry-malformed", "telemetry-oversized")
    assert says in event.detail
    assert service.ingest.handle(*box.seal(box.batch(1))) is not None  # ingest goes on


def _signed_body(box: Box, body: bytes) -> tuple[str, bytes]:
    """A frame carrying `body` (whatever it is), correctly signed by `box`."""
    topic = telemetry_topic(box.name)
    _, good = box.seal(box.batch(1))
    head_len = struct.unpack(">I", good[4:8])[0]
    head = json.loads(good[8 : 8 + head_len])
    sig = box.creds.key().sign(
        SIGN_LABEL + topic.encode() + b"\x00" + body, ec.ECDSA(hashes.SHA256())
    )
    head["sig"] = base64.b64encode(sig).decode()
    new_head = json.dumps(head, separators=(",", ":"), sort_keys=True).encode()
    return topic, MAGIC + struct.pack(">I", len(new_head)) + new_head + body


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"not deflate", "body"),
        (zlib.compress(b"[1, 2]"), "not an object"),
        (zlib.compress(b'{"v": 2}'), "version 2"),
        (zlib.compress(b"\x00" * (17 * 1024 * 1024)), "at most"),
    ],
)
def test_a_signed_but_malformed_body_is_refused(
    service: Service, box: Box, body: bytes, says: str
) -> None:
    assert service.ingest.handle(*_signed_body(box, body)) is None
    (event,) = read_events(service.security.path)
    assert event.kind == "telemetry-malformed" and says in event.detail
    assert service.ingest.handle(*box.seal(box.batch(1))) is not None


def test_body_fields_are_checked_one_by_one(box: Box) -> None:
    good = box.batch(1)
    for change, says in [
        ({"readings": [ReadingItem(1, "Meter!", "import_wh", T_MS, 1.0)]}, "not a valid name"),
        ({"readings": [], "ptus": []}, "no item"),
        ({"readings": [ReadingItem(0, "meter", "import_wh", T_MS, 1.0)]}, "positive"),
        ({"id": "xyz"}, "32 hex"),
    ]:
        with pytest.raises(BatchRefused, match=says):
            decode_body(encode_body(dataclasses.replace(good, **change)))  # type: ignore[arg-type]
    assert decode_body(encode_body(good)) == good


def test_a_stale_batch_is_refused(service: Service, box: Box) -> None:
    assert service.ingest.handle(*box.seal(box.batch(1, sent=time.time() - 8 * 86_400))) is None
    assert service.kinds() == ["telemetry-stale"]


def test_a_certificate_of_another_role_is_refused(service: Service, creds: CredsFactory) -> None:
    agg = Box("hist-agg", creds(Identity("hist-agg", Role.AGGREGATOR)))
    assert service.ingest.handle(*agg.seal(agg.batch(1))) is None
    (event,) = read_events(service.security.path)
    assert "only a home" in event.detail
    assert service.store.boxes() == []


def test_a_manual_edit_or_deletion_is_detected_and_raised(service: Service, box: Box) -> None:
    service.ingest.handle(
        *box.seal(box.batch(1, 5, ptus=[PtuItem(6, "meter", T_MS, 9.0, 0.0, False, None)]))
    )
    watch = IntegrityWatch(service.store, service.security, "history.db")
    assert watch.check() == []
    raw = sqlite3.connect(service.path)
    with raw:
        raw.execute("UPDATE readings SET value = value - 50 WHERE seq = 3")
    found = watch.check()
    assert [(t.table, t.key) for t in found] == [("readings", "seq 3")]
    with raw:
        raw.execute("UPDATE readings SET value = value + 50 WHERE seq = 3")  # undone
        raw.execute("DELETE FROM readings WHERE seq = 4")
    assert [t.table for t in watch.check()] == ["boxes"]
    with raw:
        raw.execute("UPDATE ptu SET import_wh = 1.0")
    assert ("ptu", f"meter {T_MS}") in [(t.table, t.key) for t in watch.check()]
    raw.close()
    assert service.kinds().count("history-tampered") == 3


def test_retention_keeps_the_totals_true(service: Service, box: Box) -> None:
    service.ingest.handle(*box.seal(box.batch(1, 5)))
    removed = service.store.apply_retention(T_MS / 1000 + 2 + 30 * 86_400, 30, 730)
    assert removed == 2
    assert service.store.counts(service.keys.pid(box.name))["readings"] == 3
    assert service.store.check_integrity() == []


def test_the_report_counts_expected_received_and_gaps(service: Service, box: Box) -> None:
    # readings at 0..9 s and 20..29 s: a 10 s gap in a 30 s window polled each second
    items = [
        ReadingItem(i + 1, "meter", "power_w", T_MS + 1000 * s, 500.0)
        for i, s in enumerate([*range(10), *range(20, 30)])
    ]
    service.ingest.handle(*box.seal(box.batch(1, readings=items)))
    report = fleet_report(service.store, T_MS / 1000, T_MS / 1000 + 30)
    (b,) = report.per_box
    assert (b.expected, b.received, b.valid) == (30, 20, 20)
    assert b.effectiveness_pct == pytest.approx(100 * 20 / 30)
    (meter,) = b.devices
    assert [(g.start, g.end) for g in meter.gaps] == [(T_MS / 1000 + 9, T_MS / 1000 + 20)]
    # the batch's clock is T + 3 s (Box.batch): the reading at T is 3 s old when it is sent,
    # later ones are stamped after it (latency 0); transit on loopback adds milliseconds
    assert b.latency is not None and 3.0 <= b.latency.max_s < 4.0
    assert b.latency.median_s == 0.0


def test_the_commands_report_check_and_name_a_box(service: Service, box: Box) -> None:
    from click.testing import CliRunner

    from homeflex.cli import main

    service.ingest.handle(*box.seal(box.batch(1, 5)))
    data = str(service.path.parent)
    runner = CliRunner()
    start = datetime.fromtimestamp(T_MS / 1000, UTC).isoformat()
    end = datetime.fromtimestamp(T_MS / 1000 + 10, UTC).isoformat()
    out = runner.invoke(main, ["cloud", "history", "report", "--data", data, "--start", start,
                               "--end", end, "--json"])  # fmt: skip
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["boxes"] == 1 and report["per_box"][0]["received"] == 5
    assert report["per_box"][0]["expected"] == 10 and report["effectiveness_pct"] == 50.0
    out = runner.invoke(main, ["cloud", "history", "check", "--data", data])
    assert out.exit_code == 0 and "history intact" in out.output
    pid = service.keys.pid(box.name)
    out = runner.invoke(main, ["cloud", "history", "who", "--data", data, pid])
    assert out.output.strip() == box.name
    raw = sqlite3.connect(service.path)
    with raw:
        raw.execute("DELETE FROM readings WHERE seq = 2")
    raw.close()
    out = runner.invoke(main, ["cloud", "history", "check", "--data", data])
    assert out.exit_code == 1 and "TAMPERED boxes" in out.output


@pytest.fixture
def workers(service: Service, creds: CredsFactory) -> Iterator[list[WorkerProcess]]:
    """Two worker processes on the service's history, as `history ingest --workers 2` runs."""
    creds_dir = creds(Identity("hist-workers", Role.SERVICE)).dir
    data = HistoryDir(service.path.parent)
    pool = [WorkerProcess(data, creds_dir, f"test-worker-{n}") for n in (1, 2)]
    for w in pool:
        w.start()
    yield pool
    for w in pool:
        w.close()


def test_two_workers_given_the_same_batches_store_each_once(
    service: Service, box: Box, other_box: Box, workers: list[WorkerProcess]
) -> None:
    frames = [b.seal(b.batch(1 + 3 * k)) for k in range(20) for b in (box, other_box)]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        # both workers get every batch, in groups of 4, at the same time
        runs = [
            pool.submit(lambda w=w: [w.handle_many(frames[i : i + 4]) for i in range(0, 40, 4)])
            for w in workers
        ]
        outcomes = [[o for group in run.result() for o in group] for run in runs]
    for first, second in zip(*outcomes, strict=True):
        # one of the two stored it, the other found it stored: a replay, not a second copy
        assert {type(first), type(second)} == {Accepted, Refusal}
        refusal = first if isinstance(first, Refusal) else second
        assert isinstance(refusal, Refusal) and refusal.code == "replay"
    for b in (box, other_box):
        assert service.store.counts(service.keys.pid(b.name)) == {
            "readings": 60, "ptus": 0, "batches": 20, "duplicates": 0, "replays": 20,
        }  # fmt: skip
    assert service.store.check_integrity() == []


def test_a_dead_worker_costs_its_group_and_is_started_again(
    service: Service, box: Box, workers: list[WorkerProcess]
) -> None:
    worker = workers[0]
    pid = worker.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(WorkerError, match="died with 1 batches"):
        worker.handle_many([box.seal(box.batch(1))])
    assert worker.restarts == 1 and worker.pid() not in (None, pid)
    (outcome,) = worker.handle_many([box.seal(box.batch(1))])
    assert isinstance(outcome, Accepted) and outcome.ack.new == 3


def test_a_worker_that_cannot_start_says_so(service: Service, tmp_path: Path) -> None:
    worker = WorkerProcess(HistoryDir(service.path.parent), tmp_path / "no-creds", "test-bad")
    with pytest.raises(WorkerError, match=r"test-bad: did not start .*exit code 1"):
        worker.start()
