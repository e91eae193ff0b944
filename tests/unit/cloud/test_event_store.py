"""The receiver's store of forwarded security events: a resend is stored once; an edited,
renumbered, missing or forged event is kept and named in a finding, never silently accepted."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from homeflex.cloud.events.receiver import EventStore, parse_event
from homeflex.security import Event, SecurityLog, read_events


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    s = EventStore(tmp_path / "events.db")
    yield s
    s.close()


def box_log(path: Path, n: int) -> list[Event]:
    log = SecurityLog(path)
    for i in range(n):
        log.record("auth-failed", "192.0.2.7", f"wrong password #{i + 1}")
    return read_events(path)


def test_an_intact_chain_in_batches_and_resends_is_stored_once(
    store: EventStore, tmp_path: Path
) -> None:
    events = box_log(tmp_path / "box.log", 5)
    assert store.store("box-0001", events[:3]) == (3, [])
    assert store.store("box-0001", events[1:]) == (5, [])  # 2 and 3 again, then 4 and 5
    assert store.events("box-0001") == events
    assert store.events("box-0002") == [] and store.findings("box-0001") == []


def test_a_missing_event_is_a_finding_and_filling_the_gap_is_checked(
    store: EventStore, tmp_path: Path
) -> None:
    e = box_log(tmp_path / "box.log", 4)
    assert store.store("box-0001", [e[0], e[1], e[3]]) == (4, ["event 4: events 3..3 missing"])
    assert store.store("box-0001", [e[2]]) == (4, [])  # the real event 3 links both ways
    forged = box_log(tmp_path / "other.log", 3)[2]  # a well-formed event 3 of another log
    assert store.store("box-0002", [e[0], e[1], e[3]])[1] == ["event 4: events 3..3 missing"]
    _, found = store.store("box-0002", [forged])
    assert found == [
        "event 3: does not follow the event before it",
        "event 4: does not follow the event before it",
    ]
    assert store.findings("box-0002") == ["event 4: events 3..3 missing", *found]


def test_a_first_event_after_1_is_a_gap(store: EventStore, tmp_path: Path) -> None:
    e = box_log(tmp_path / "box.log", 3)
    assert store.store("box-0001", e[2:]) == (3, ["event 3: events 1..2 missing"])


def test_edited_renumbered_and_changed_resends_are_findings(
    store: EventStore, tmp_path: Path
) -> None:
    e = box_log(tmp_path / "box.log", 4)
    edited = dataclasses.replace(e[1], detail="nothing happened")
    # events 3 and 4 swapped by renumbering (to make 4 look like it came first)
    swapped = [dataclasses.replace(e[3], seq=3), dataclasses.replace(e[2], seq=4)]
    top, found = store.store("box-0001", [e[0], edited, *swapped])
    assert top == 4
    assert found == [
        "event 2: its content was changed after it was written",
        "event 3: does not follow the event before it",
        "event 3: its content was changed after it was written",
        "event 4: does not follow the event before it",
        "event 4: its content was changed after it was written",
    ]
    assert store.store("box-0001", [e[1]])[1] == ["event 2: sent again with other content"]
    assert [x.detail for x in store.events("box-0001")][1] == "nothing happened"  # kept as sent


@pytest.mark.parametrize(
    "item,error",
    [
        ([], "an event is a JSON object"),
        ({"seq": 1}, "event fields"),
        ({"seq": 1, "ts": 1, "kind": "k", "source": "s", "detail": "d", "x": 1}, "event fields"),
        (
            {"seq": "1", "ts": 1, "kind": "k", "source": "s", "detail": "d"},
            "seq must be an integer from 1",
        ),
        (
            {"seq": 0, "ts": 1, "kind": "k", "source": "s", "detail": "d"},
            "seq must be an integer from 1",
        ),
        ({"seq": 1, "ts": "now", "kind": "k", "source": "s", "detail": "d"}, "ts must be"),
        ({"seq": 1, "ts": 1, "kind": 5, "source": "s", "detail": "d"}, "kind must be"),
        ({"seq": 1, "ts": 1, "kind": "k", "source": "s", "detail": "d", "fields": []}, "fields"),
    ],
)
def test_malformed_events_are_named(item: object, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_event(json.loads(json.dumps(item)))


def test_a_well_formed_event_parses_to_itself(tmp_path: Path) -> None:
    event = box_log(tmp_path / "box.log", 1)[0]
    assert parse_event(json.loads(json.dumps(dataclasses.asdict(event)))) == event
