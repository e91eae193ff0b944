"""Settlement: delivered kWh, payment and penalty from metered PTU energies against the P-plan or
the connection capacity; the ledger's hash chain shows an edited, removed or reordered entry."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path

import pytest

from homeflex.cloud.market.objects import Direction, FlexOrder
from homeflex.cloud.market.settlement import GENESIS, Ledger, settle, settle_order, verify_entries


def test_delivery_against_the_p_plan_pays_what_was_delivered_and_penalises_the_rest() -> None:
    # an order to shed 10 kW in four PTUs; the P-plan and the meter (kWh per 15 min)
    plan = {80: 40.0, 81: 42.0, 82: 41.0, 83: 38.0}
    metered = {80: 7.5, 81: 8.0, 82: 8.5, 83: 6.0}  # 30, 32, 34, 24 kW
    record = settle(
        order="uc3-d-agr-a",
        participant="agr-a",
        awarded_kw=dict.fromkeys(plan, 10.0),
        baseline_kw=plan,
        metered_kwh=metered,
        price=0.20,
        penalty_rate=0.50,
    )
    # delivered: 10, 10, 7 kW and 14 kW capped at the 10 kW awarded
    assert [p.delivered_kw for p in record.periods] == pytest.approx([10.0, 10.0, 7.0, 10.0])
    assert [p.shortfall_kw for p in record.periods] == pytest.approx([0.0, 0.0, 3.0, 0.0])
    assert record.delivered_kwh == pytest.approx(37.0 * 0.25)  # 9.25 kWh
    assert record.shortfall_kwh == pytest.approx(0.75)
    assert record.payment_eur == pytest.approx(9.25 * 0.20)  # 1.85 €
    assert record.penalty_eur == pytest.approx(0.75 * 0.50)  # 0.375 €
    assert record.net_eur == pytest.approx(1.85 - 0.375)


def test_an_order_is_settled_by_its_own_profile_price_and_direction() -> None:
    order = FlexOrder(
        id=FlexOrder.id_for("req-1", "agr-a.1"), buyer="dso", participant="agr-a",
        request="req-1", offer="agr-a.1", direction=Direction.DOWN,
        profile_kw={10: 4.0, 11: 4.0}, price=0.15, period_h=0.25,
    )  # fmt: skip
    # asked to take 4 kW more than planned: took 5 kW more (capped at 4), then only 1 kW more
    record = settle_order(order, {10: 20.0, 11: 20.0}, {10: 6.25, 11: 5.25}, penalty_rate=0.4)
    assert record.order == order.id and record.participant == "agr-a"
    assert [p.delivered_kw for p in record.periods] == pytest.approx([4.0, 1.0])
    assert record.payment_eur == pytest.approx(0.15 * 5.0 * 0.25)
    assert record.penalty_eur == pytest.approx(0.4 * 3.0 * 0.25)


def test_a_move_the_wrong_way_is_a_full_shortfall_and_no_more() -> None:
    record = settle(
        order="o1",
        participant="h1",
        awarded_kw={0: 2.0},
        baseline_kw={0: 3.0},
        metered_kwh={0: 1.25},  # 5 kW: 2 kW above the plan instead of 2 kW below
        price=0.2,
        penalty_rate=0.4,
    )
    (p,) = record.periods
    assert (p.delivered_kw, p.shortfall_kw) == (0.0, 2.0)
    assert record.payment_eur == 0.0
    assert record.penalty_eur == pytest.approx(2.0 * 0.25 * 0.4)


def test_flexibility_down_is_measured_as_more_load_than_planned() -> None:
    # absorb 4 kW of PV surplus: planned export 6 kW (−6), metered export 3 kW (−0.75 kWh)
    record = settle(
        order="o2",
        participant="h2",
        awarded_kw={44: 4.0},
        baseline_kw={44: -6.0},
        metered_kwh={44: -0.75},
        price=0.05,
        penalty_rate=0.1,
        direction=Direction.DOWN,
    )
    assert record.periods[0].delivered_kw == pytest.approx(3.0)
    assert record.payment_eur == pytest.approx(3.0 * 0.25 * 0.05)
    assert record.penalty_eur == pytest.approx(1.0 * 0.25 * 0.1)


def test_the_capacity_limit_product_is_measured_against_the_connection_capacity() -> None:
    # seed 002 Fig. 3-4: 60 kW sold capacity, wanted load 25 kW, so a CL-cap of 35 kW; hourly
    record = settle(
        order="cl-cap",
        participant="fsp1",
        awarded_kw={17: 35.0, 18: 35.0},
        baseline_kw=60.0,
        metered_kwh={17: 22.0, 18: 31.0},  # 22 kW (within the cap), 31 kW (6 kW over 25)
        price=0.3,
        penalty_rate=1.0,
        period_h=1.0,
    )
    assert [p.delivered_kw for p in record.periods] == pytest.approx([35.0, 29.0])
    assert record.shortfall_kwh == pytest.approx(6.0)
    assert record.payment_eur == pytest.approx(64.0 * 0.3)
    assert record.penalty_eur == pytest.approx(6.0)


def test_a_missing_meter_reading_is_not_settled() -> None:
    with pytest.raises(ValueError, match="no meter reading for period 81"):
        settle(
            order="o3",
            participant="h3",
            awarded_kw={80: 1.0, 81: 1.0},
            baseline_kw={80: 3.0, 81: 3.0},
            metered_kwh={80: 0.5},
            price=0.2,
            penalty_rate=0.4,
        )


def _ledger(path: Path) -> Ledger:
    ticks = iter(range(1_700_000_000, 1_700_000_100))
    ledger = Ledger(path, clock=lambda: float(next(ticks)))
    for n in range(1, 5):
        record = settle(
            order=f"o{n}",
            participant=f"agr-{n}",
            awarded_kw={80: float(n)},
            baseline_kw={80: 10.0},
            metered_kwh={80: 2.0},
            price=0.2,
            penalty_rate=0.5,
        )
        ledger.record(record)
    return ledger


def _tamper(path: Path, *sql: str) -> None:
    """What someone with an SQLite tool can do: drop the guards, then edit."""
    db = sqlite3.connect(path)
    db.execute("DROP TRIGGER ledger_no_update")
    db.execute("DROP TRIGGER ledger_no_delete")
    for statement in sql:
        db.execute(statement)
    db.commit()
    db.close()


def test_the_ledger_chains_each_entry_to_the_one_before(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path / "ledger.db")
    entries = ledger.entries()
    assert [e.seq for e in entries] == [1, 2, 3, 4]
    assert entries[0].prev == GENESIS
    assert all(b.prev == a.hash for a, b in itertools.pairwise(entries))
    assert ledger.verify() == []
    assert entries[2].data()["order"] == "o3"
    assert ledger.head() == (4, entries[-1].hash)
    # reopening continues the chain
    ledger.close()
    again = Ledger(tmp_path / "ledger.db")
    fifth = again.append("meter", {"pid": "x", "kwh": 1.5})
    assert (fifth.seq, fifth.prev) == (5, entries[-1].hash)
    assert again.verify() == []


def test_the_ledger_refuses_update_and_delete(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path / "ledger.db")
    for sql in ("UPDATE ledger SET body = '{}' WHERE seq = 2", "DELETE FROM ledger WHERE seq = 4"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            ledger.db.execute(sql)
    assert ledger.verify() == []


def test_an_edited_entry_is_found(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = _ledger(path)
    body = ledger.entries()[1].body
    raised = body.replace('"payment_eur":0.1', '"payment_eur":9.1')
    assert raised != body
    _tamper(path, f"UPDATE ledger SET body = '{raised}' WHERE seq = 2")
    assert ledger.verify() == ["entry 2: its content was changed after it was written"]


def test_a_removed_entry_is_found(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = _ledger(path)
    _tamper(path, "DELETE FROM ledger WHERE seq = 3")
    assert ledger.verify() == [
        "entry 4: expected entry 3 here",
        "entry 4: does not follow the entry before it",
    ]


def test_reordered_entries_are_found(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = _ledger(path)
    # swap entries 2 and 3 whole: each keeps its own hash, but no longer its place
    _tamper(
        path,
        "UPDATE ledger SET seq = -2 WHERE seq = 2",
        "UPDATE ledger SET seq = 2 WHERE seq = 3",
        "UPDATE ledger SET seq = 3 WHERE seq = -2",
    )
    problems = ledger.verify()
    assert "entry 2: does not follow the entry before it" in problems
    assert "entry 2: its content was changed after it was written" in problems
    assert "entry 3: does not follow the entry before it" in problems
    assert "entry 4: does not follow the entry before it" in problems


def test_a_cut_off_tail_shows_only_against_a_published_head(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = _ledger(path)
    _, head = ledger.head()
    _tamper(path, "DELETE FROM ledger WHERE seq = 4")
    assert ledger.verify() == []  # a shorter chain is still a chain
    assert ledger.verify(head=head) == [
        f"the published head {head[:12]}… is not in the ledger: cut or rewritten"
    ]
    # the first entry chains to the genesis hash, so cutting the front does show
    assert verify_entries(ledger.entries()[1:]) == ["entry 2: does not follow the entry before it"]
    first = ledger.entries()[0]
    assert verify_entries(ledger.entries()[1:], prev=first.hash) == []
