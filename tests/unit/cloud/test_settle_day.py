"""Settle a day on the platform's tick, for the ten-home neighbourhood of test_aggregator_brain
(the DSO orders 0.5 kW from each of homes 0-3 in the eight evening peak PTUs), from a real
history (SqliteHistory, pseudonymous ids, the ingest's data directory): the aggregator settles
each home from its meter once the day is `after_s` past, the DSO gets one Metered (the homes'
sum, no home in it) and settles the aggregator from it; nothing is settled twice; a home
without meter data yet is settled on a later tick; the platform builds it from its config."""

from __future__ import annotations

import itertools
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from spade.message import Message

from homeflex.agents.delivery import Deliveries
from homeflex.agents.messages import Ack, FlexOrder, Metered, Settlement
from homeflex.agents.messenger import Messenger
from homeflex.agents.node import Brain, Node
from homeflex.agents.permissions import Permissions
from homeflex.agents.rounds import RoundStore
from homeflex.cloud.agent_status import aggregator_status, dso_status
from homeflex.cloud.aggregator.brain import AggregatorBrain, Settling
from homeflex.cloud.aggregator.meters import HistoryDirMeters, HistoryMeters
from homeflex.cloud.dso.brain import CongestionPoint, DsoBrain
from homeflex.cloud.history.keys import HistoryKeys
from homeflex.cloud.history.layout import HistoryDir
from homeflex.cloud.history.sqlite import SqliteHistory
from homeflex.cloud.market.settlement import Entry, Ledger
from homeflex.cloud.platform import PlatformConfig, build, build_check
from homeflex.pki.identity import Identity, Role
from homeflex.security import SecurityLog, read_events
from homeflex.telemetry import Batch, PtuItem, new_batch_id
from tests.fakeclock import FakeClock
from tests.pki_fixtures import CredsFactory
from tests.unit.cloud.test_aggregator_brain import (
    DAY,
    HOMES,
    LIMIT_KW,
    PEAK,
    T0,
    Neighbourhood,
    flat_prices,
    home_offer,
    home_plan,
)

DAY_START_MS = int(datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC).timestamp() * 1000)
DAY_END = DAY_START_MS / 1000 + 86_400
AFTER_S = 1800.0
RETRY_S = 60.0
HOME_PENALTY = 0.30  # € per kWh short, the aggregator's to its homes
DSO_PENALTY = 0.40  # the DSO's to the aggregator
GIVEN_KW = {"home-0": 0.5, "home-1": 0.25, "home-2": 0.0, "home-3": 0.5}  # of 0.5 kW ordered


class History:
    """The ingest's data directory, filled as the ingest fills it: per box, under its
    pseudonym, PTU items of the meter (and of the PV inverter, which the settlement ignores)."""

    def __init__(self, root: Path) -> None:
        self.dir = HistoryDir(root)
        self.keys = HistoryKeys.load(self.dir.keys)
        self.store = SqliteHistory(self.dir.db, self.keys.integrity)
        self.seq = itertools.count(1)

    def day(self, home: str, kw: dict[int, float], export_kw: float = 0.0) -> None:
        """`home`'s meter over the day: import kW per PTU, `export_kw` exported at the same
        time; and the next day's first PTU, which makes the day's last one final."""
        items = []
        for t in [*kw, 96]:
            imp, exp = kw.get(t, 2.0) + export_kw, export_kw  # Wh in a quarter hour: kW × 250
            start = DAY_START_MS + t * 900_000
            items.append(PtuItem(next(self.seq), "meter", start, imp * 250, exp * 250, False, None))
            items.append(PtuItem(next(self.seq), "pv", start, 0.0, 400.0, False, None))
        batch = Batch(home, new_batch_id(), DAY_END, DAY_END, ptus=items)
        self.store.add(self.keys.pid(home), batch, DAY_END + 1)


def dso_settled(n: Neighbourhood) -> list[Entry]:
    """The DSO's settlement entries (its ledger also keeps the orders it placed)."""
    assert n.dso.ledger is not None
    return [e for e in n.dso.ledger.entries() if e.kind == "settlement"]


def meter_kw(home: str) -> dict[int, float]:
    """A home's metered net kW: its plan (3.2 kW in the peak, else 2.0) less what it gave."""
    return {t: (3.2 - GIVEN_KW.get(home, 0.0)) if t in PEAK else 2.0 for t in range(96)}


def ordered_day(tmp_path: Path, settling: Settling) -> tuple[Neighbourhood, dict[str, FlexOrder]]:
    """The day planned, validated and ordered; the brains as the platform builds them."""
    n = Neighbourhood(RoundStore(tmp_path / "rounds.db"))
    n.agg = AggregatorBrain("agr-1", frozenset(HOMES), "dso-1", "trafo-1", n.agg.store,
                            flat_prices, answer_window_s=60, settling=settling)  # fmt: skip
    point = CongestionPoint("trafo-1", LIMIT_KW, frozenset({"agr-1"}))
    n.dso = DsoBrain("dso-1", [point], max_price=0.20, ledger=Ledger(tmp_path / "dso.db"),
                     penalty_eur_kwh=DSO_PENALTY)  # fmt: skip
    n.route(n.agg.open_round(DAY, T0), T0)
    rid = n.agg.round_id(DAY)
    for k, home in enumerate(HOMES):
        n.agg.on_message(home, home_plan(k, rid), T0 + 1)
        n.agg.on_message(home, home_offer(k, rid), T0 + 1)
    n.route(n.agg.on_tick(T0 + 2), T0 + 2)  # 32 kW at the peak: the DSO orders 2 kW
    orders = {o.to: o.message for o in n.to_homes if isinstance(o.message, FlexOrder)}
    assert sorted(orders) == HOMES[:4]
    n.to_homes.clear()
    return n, orders


def test_a_day_is_settled_from_the_history_homes_first_then_the_dso(tmp_path: Path) -> None:
    history = History(tmp_path / "history")
    for home in HOMES:
        if home != "home-3":  # its gateway has sent nothing yet
            history.day(home, meter_kw(home), export_kw=0.4 if home == "home-7" else 0.0)
    agr_ledger = Ledger(tmp_path / "agr.db")
    meters = HistoryMeters.open(history.dir.root)
    settling = Settling(meters, agr_ledger, HOME_PENALTY, after_s=AFTER_S, retry_s=RETRY_S)
    n, orders = ordered_day(tmp_path, settling)

    # not before the day's end and `after_s`
    assert n.agg.on_tick(DAY_END + AFTER_S - 1) == []
    assert agr_ledger.entries() == []

    now = DAY_END + AFTER_S
    out = n.agg.on_tick(now)
    paid = {o.to: o for o in out}
    assert sorted(paid) == ["home-0", "home-1", "home-2"]  # home-3: no meter data yet
    kwh = 0.5 * 0.25 * len(PEAK)  # what each home order asks: 1 kWh
    prices = {"home-0": 0.05, "home-1": 0.07, "home-2": 0.09, "home-3": 0.11}  # pay-as-bid
    for home in paid:
        o, order = paid[home], orders[home]
        msg = o.message
        delivered = GIVEN_KW[home] * 0.25 * len(PEAK)
        assert isinstance(msg, Settlement) and msg.order == order.id
        assert o.key == f"settlement:{order.id}" and o.ttl_s >= 86_400  # delivered for days
        assert order.price == pytest.approx(prices[home])
        assert msg.delivered_kwh == pytest.approx(delivered)
        assert msg.shortfall_kwh == pytest.approx(kwh - delivered)
        assert msg.payment_eur == pytest.approx(delivered * prices[home])
        assert msg.penalty_eur == pytest.approx((kwh - delivered) * HOME_PENALTY)
    # the ledger holds the same euros: home-0 0.05 €, home-1 0.035 € less 0.15 €, home-2 -0.30 €
    recorded = {e.data()["participant"]: e.data() for e in agr_ledger.entries()}
    assert set(recorded) == {"home-0", "home-1", "home-2"}
    net = {h: sum(p["payment_eur"] - p["penalty_eur"] for p in r["periods"])
           for h, r in recorded.items()}  # fmt: skip
    assert net == pytest.approx({"home-0": 0.05, "home-1": 0.035 - 0.15, "home-2": -0.30})
    assert [e.kind for e in agr_ledger.entries()] == ["settlement"] * 3  # no Metered yet

    # the next try settles nothing twice; before `retry_s` nothing is tried at all
    assert n.agg.on_tick(now + 1) == []
    assert n.agg.on_tick(now + RETRY_S) == []
    assert len(agr_ledger.entries()) == 3

    # home-3's gateway catches up: it is settled, and the DSO gets the day's sum
    history.day("home-3", meter_kw("home-3"))
    out = n.agg.on_tick(now + 2 * RETRY_S)
    (to_home3,) = [o for o in out if o.to == "home-3"]
    assert isinstance(to_home3.message, Settlement)
    assert to_home3.message.payment_eur == pytest.approx(kwh * 0.11)
    assert to_home3.message.penalty_eur == 0.0
    (to_dso,) = [o for o in out if o.to == "dso-1"]
    metered = to_dso.message
    assert isinstance(metered, Metered)
    assert to_dso.key == "metered:trafo-1:2026-01-15"
    assert (metered.day, metered.congestion_point, metered.homes) == (DAY, "trafo-1", 10)
    assert metered.first_ptu == PEAK[0] and len(metered.net_kwh) == len(PEAK)
    summed = [sum(meter_kw(h)[t] for h in HOMES) * 0.25 for t in PEAK]  # home-7's export nets
    assert metered.net_kwh == pytest.approx(summed)
    assert metered.net_kwh[0] == pytest.approx((10 * 3.2 - 1.25) * 0.25)
    assert "home" not in json.dumps(metered.model_dump(mode="json")).replace('"homes"', "")

    # the DSO settles the aggregator from the sum: its four tier orders stacked cheapest
    # first on the 32 kW D-prognosis; 1.25 kW of the 2 kW given in each peak PTU
    n.route([to_dso], now + 2 * RETRY_S)
    assert [m for m in n.to_dso if isinstance(m, Metered)] == [metered]  # all it received
    dso_entries = dso_settled(n)
    assert len(dso_entries) == 4
    assert {e.data()["participant"] for e in dso_entries} == {"agr-1"}
    assert not [e for e in dso_entries if "home-" in e.body]
    dso_paid = [m for m in n.to_agg if isinstance(m, Settlement)]
    assert len(dso_paid) == 4 and n.agg.dso_settlements == {s.order: s for s in dso_paid}
    by_price = sorted(dso_paid, key=lambda s: s.payment_eur, reverse=True)
    per_ptu = [0.5, 0.5, 0.25]  # the 0.05 € and 0.07 € tiers whole, 0.09 € half, 0.11 € none
    delivered = sum(s.delivered_kwh for s in dso_paid)
    assert delivered == pytest.approx(sum(per_ptu) * 0.25 * len(PEAK))  # 2.5 kWh, as the homes
    assert sum(s.payment_eur for s in dso_paid) == pytest.approx(
        (0.05 * 0.5 + 0.07 * 0.5 + 0.09 * 0.25) * 0.25 * len(PEAK)
    )
    assert sum(s.penalty_eur for s in dso_paid) == pytest.approx(
        DSO_PENALTY * 0.75 * 0.25 * len(PEAK)
    )
    assert by_price[-1].delivered_kwh == 0.0 and by_price[-1].penalty_eur == pytest.approx(0.4)

    # done: nothing more from the aggregator; the same Metered again changes nothing
    assert n.agg.on_tick(now + 3 * RETRY_S) == []
    assert DAY in settling.done
    assert [e.kind for e in agr_ledger.entries()] == ["settlement"] * 4 + ["metered"]
    ack, more = n.dso.on_message("agr-1", metered, now + 200)
    assert (ack.status, ack.detail, more) == ("ok", "taken before", [])
    assert len(dso_settled(n)) == 4

    # the status files show the euros; the DSO's names no home
    agr = aggregator_status(n.agg)
    assert {s["participant"]: s["net_eur"] for s in agr["settlements"]} == pytest.approx(
        {**net, "home-3": 0.11}
    )
    assert agr["metered"][0]["net_kwh"] == pytest.approx(summed)
    assert sum(s["payment_eur"] for s in agr["dso_settlements"].values()) == pytest.approx(0.165)
    dso = dso_status(n.dso)
    assert sum(s["delivered_kwh"] for s in dso["settlements"]) == pytest.approx(2.5)
    assert sum(s["penalty_eur"] for s in dso["settlements"]) == pytest.approx(0.6)
    assert "home-" not in json.dumps(dso)


def test_the_dso_refuses_a_metered_sum_it_cannot_settle_saying_why(tmp_path: Path) -> None:
    history = History(tmp_path / "history")
    for home in HOMES:
        history.day(home, meter_kw(home))
    settling = Settling(HistoryMeters.open(history.dir.root), Ledger(tmp_path / "agr.db"),
                        HOME_PENALTY, after_s=AFTER_S)  # fmt: skip
    n, _ = ordered_day(tmp_path, settling)
    (metered,) = [o.message for o in n.agg.on_tick(DAY_END + AFTER_S) if o.to == "dso-1"]
    assert isinstance(metered, Metered)

    def refused(sender: str, m: Metered) -> str:
        ack, out = n.dso.on_message(sender, m, DAY_END + AFTER_S)
        assert ack.status == "refused" and out == []
        return ack.detail

    elsewhere = metered.model_copy(update={"congestion_point": "trafo-9"})
    assert refused("agr-1", elsewhere) == "agr-1 is not registered at congestion point 'trafo-9'"
    assert refused("agr-2", metered) == "agr-2 is not registered at congestion point 'trafo-1'"
    short = metered.model_copy(update={"first_ptu": 78, "net_kwh": metered.net_kwh[2:]})
    assert "no metered energy for PTU 76, 77 of 2026-01-15" in refused("agr-1", short)
    other_day = metered.model_copy(update={"day": DAY + timedelta(days=1)})
    assert refused("agr-1", other_day) == "no order placed with agr-1 for 2026-01-16 at trafo-1"
    assert dso_settled(n) == []

    ack, out = n.dso.on_message("agr-1", metered, DAY_END + AFTER_S)
    assert ack.status == "ok" and len(out) == 4
    changed = metered.model_copy(update={"net_kwh": [0.0] * len(metered.net_kwh)})
    assert "taken before with other values" in refused("agr-1", changed)
    assert len(dso_settled(n)) == 4


def test_a_ptu_counts_once_the_box_has_moved_on_and_only_the_meter(tmp_path: Path) -> None:
    history = History(tmp_path / "history")
    kw = {t: 1.0 + t / 100 for t in range(84)}
    del kw[50]  # a PTU the box never sent
    items = [PtuItem(next(history.seq), "meter", DAY_START_MS + t * 900_000, v * 250, 0.0,
                     t == 10, None) for t, v in kw.items()]  # fmt: skip
    items.append(PtuItem(next(history.seq), "pv", DAY_START_MS + 90 * 900_000, 0, 999, False, None))
    batch = Batch("home-1", new_batch_id(), DAY_END, DAY_END, ptus=items)
    history.store.add(history.keys.pid("home-1"), batch, DAY_END)
    got = HistoryMeters.open(history.dir.root).day_kwh(["home-1", "home-2"], DAY)
    assert list(got) == ["home-1"]  # home-2 has sent nothing
    # PTU 83 may still grow (nothing later yet); 50 is missing; 10 was estimated: it counts
    assert sorted(got["home-1"]) == [t for t in range(83) if t != 50]
    assert got["home-1"] == pytest.approx({t: kw[t] / 4 for t in got["home-1"]})


def test_a_history_not_made_yet_is_waited_for_and_the_tick_goes_on(tmp_path: Path) -> None:
    root = tmp_path / "history"
    root.mkdir()
    settling = Settling(HistoryDirMeters(root), Ledger(tmp_path / "agr.db"), HOME_PENALTY,
                        after_s=AFTER_S, retry_s=RETRY_S)  # fmt: skip
    n, _ = ordered_day(tmp_path, settling)
    with pytest.raises(FileNotFoundError, match=r"history.db: no such file; `history:` must be"):
        HistoryMeters.open(root)
    n.agg.to_open.append(DAY + timedelta(days=1))
    out = n.agg.on_tick(DAY_END + AFTER_S)  # the next round opens; settling waits
    assert {o.to for o in out} == set(HOMES) and settling.ledger.entries() == []
    history = History(root)
    for home in HOMES:
        history.day(home, meter_kw(home))
    out = n.agg.on_tick(DAY_END + AFTER_S + RETRY_S)  # (the next day's round closes, too)
    settled = [o for o in out if isinstance(o.message, Settlement | Metered)]
    assert sorted(o.to for o in settled) == ["dso-1", *HOMES[:4]]


def test_the_metered_sum_and_the_settlements_travel_in_real_envelopes(
    tmp_path: Path, creds: CredsFactory
) -> None:
    """The same day between Nodes (signed, encrypted envelopes; each side's role table and
    replay cache; no XMPP): the DSO may take `metered` from its aggregator, and its settlements
    come back and are acknowledged, so nothing stays pending on either side."""
    history = History(tmp_path / "history")
    for home in HOMES:
        history.day(home, meter_kw(home))
    settling = Settling(HistoryMeters.open(history.dir.root), Ledger(tmp_path / "agr.db"),
                        HOME_PENALTY, after_s=AFTER_S)  # fmt: skip
    n, _ = ordered_day(tmp_path, settling)
    clock = FakeClock(time.time())  # the envelopes' (the certificates are from today)
    now = DAY_END + AFTER_S  # the brains'
    ids = {
        name: Identity(name, role, xmpp=f"{name}@xmpp.test")
        for name, role in [("agr-1", Role.AGGREGATOR), ("dso-1", Role.DSO)]
        + [(h, Role.HOME) for h in HOMES]
    }
    chains = {name: creds(who) for name, who in ids.items()}

    def node(name: str, brain: Brain, **perms: object) -> Node:
        m = Messenger(chains[name], Permissions(ids[name], **perms),  # type: ignore[arg-type]
                      SecurityLog(tmp_path / f"{name}.log"), tmp_path / f"{name}-replay.db",
                      clock=clock)  # fmt: skip
        for other, c in chains.items():
            if other != name:
                m.know(c.chain())
        return Node(m, Deliveries(tmp_path / f"{name}-deliveries.db"), brain)

    agr = node("agr-1", n.agg, homes=frozenset(HOMES))
    dso = node("dso-1", n.dso)

    def carry(msgs: list[Message], sender: Node, to: Node) -> list[Message]:
        out = []
        for m in msgs:
            if str(m.to) == ids[to.name].xmpp:
                m.sender = ids[sender.name].xmpp
                out += to.receive(m, now)
        return out

    sent = agr.tick(now)
    assert sorted(str(m.to) for m in sent) == sorted(
        f"{h}@xmpp.test" for h in [*HOMES[:4], "dso-1"]
    )
    back = carry(sent, agr, dso)  # the DSO's ack and its four settlements
    assert len(back) == 5 and len(dso_settled(n)) == 4
    (taken,) = n.dso.metered.values()
    assert taken.homes == 10 and taken.net_kwh == pytest.approx([(32 - 1.25) * 0.25] * len(PEAK))
    acks = carry(back, dso, agr)
    assert len(n.agg.dso_settlements) == 4
    assert carry(acks, agr, dso) == []
    later = now + 60
    assert [d.key for d in dso.deliveries.due(later)] == []  # every settlement acknowledged
    assert [d.key for d in agr.deliveries.due(later) if d.recipient == "dso-1"] == []
    assert read_events(tmp_path / "dso-1.log") == [] == read_events(tmp_path / "agr-1.log")


def test_the_platform_builds_settling_aggregators_and_a_dso_with_a_ledger(
    tmp_path: Path, creds: CredsFactory
) -> None:
    agr = creds(Identity("agr-1", Role.AGGREGATOR, xmpp="agr-1@xmpp.test"))
    dso = creds(Identity("dso-1", Role.DSO, xmpp="dso-1@xmpp.test"))
    home = creds(Identity("home-1", Role.HOME, xmpp="home-1@xmpp.test"))
    for c in (agr, dso):
        (c.dir / "xmpp-password").write_text("not-a-real-one\n")
    aggregator = {
        "credentials": agr.dir, "password_file": agr.dir / "xmpp-password",
        "congestion_point": "trafo-1",
        "dso": {"name": "dso-1", "certificate": dso.dir / "cert.pem"},
        "homes": {"home-1": home.dir / "cert.pem"},
        "prices": {"import_eur_kwh": 0.3, "export_eur_kwh": 0.05},
        "history": tmp_path / "history", "meter_device": "grid-meter", "settle_after_s": 3600,
        "penalty_eur_kwh": 0.2,
    }  # fmt: skip
    dso_cfg = {
        "credentials": dso.dir, "password_file": dso.dir / "xmpp-password", "max_price": 0.25,
        "penalty_eur_kwh": 0.35,
        "points": [{"name": "trafo-1", "limit_kw": 280,
                    "aggregators": {"agr-1": agr.dir / "cert.pem"}}],
    }  # fmt: skip
    cfg = PlatformConfig.model_validate({"xmpp": {"domain": "xmpp.test"},
                                         "state_dir": tmp_path / "state",
                                         "aggregators": [aggregator], "dso": dso_cfg})  # fmt: skip
    with pytest.raises(FileNotFoundError, match=r"history: no such directory; `history:` is"):
        build_check(cfg)
    (tmp_path / "history").mkdir()
    build_check(cfg)
    brains = {agent.node.name: brain for agent, brain, _ in build(cfg)}
    a, d = brains["agr-1"], brains["dso-1"]
    assert isinstance(a, AggregatorBrain) and isinstance(d, DsoBrain)
    s = a.settling
    assert s is not None and isinstance(s.meters, HistoryDirMeters)
    assert (s.meters.data_dir, s.meters.device) == (tmp_path / "history", "grid-meter")
    assert (s.after_s, s.penalty_eur_kwh) == (3600, 0.2)
    assert s.ledger.path == tmp_path / "state" / "agr-1" / "ledger.db"
    assert d.ledger is not None and d.ledger.path == tmp_path / "state" / "dso-1" / "ledger.db"
    assert d.penalty_eur_kwh == 0.35
    # without `history` the aggregator does not settle
    plain = cfg.model_copy(update={"aggregators": [cfg.aggregators[0].model_copy(
        update={"history": None})], "dso": None})  # fmt: skip
    (only,) = [b for _, b, _ in build(plain)]
    assert isinstance(only, AggregatorBrain) and only.settling is None


def test_an_order_the_home_refused_is_neither_paid_nor_fined(tmp_path: Path) -> None:
    history = History(tmp_path / "history")
    for home in HOMES:
        history.day(home, meter_kw(home))
    agr_ledger = Ledger(tmp_path / "agr.db")
    settling = Settling(HistoryMeters.open(history.dir.root), agr_ledger, HOME_PENALTY)
    n, orders = ordered_day(tmp_path, settling)
    refused = Ack(status="refused", detail="cannot deliver: the car is not home")
    n.agg.on_delivered(f"order:{orders['home-2'].id}", refused, T0 + 3)
    out = n.agg.on_tick(DAY_END + settling.after_s)
    assert sorted(o.to for o in out if isinstance(o.message, Settlement)) == [
        "home-0",
        "home-1",
        "home-3",
    ]
    assert {e.data()["participant"] for e in agr_ledger.entries() if e.kind == "settlement"} == {
        "home-0",
        "home-1",
        "home-3",
    }


def test_a_restarted_aggregator_settles_the_orders_it_took_before(tmp_path: Path) -> None:
    history = History(tmp_path / "history")
    for home in HOMES:
        history.day(home, meter_kw(home))
    settling = Settling(HistoryMeters.open(history.dir.root), Ledger(tmp_path / "agr.db"), 0.3)
    n, orders = ordered_day(tmp_path, settling)
    # a home revises its P-plan after the order: the order is still measured against the plan
    # it was bought on
    revised = home_plan(0, n.agg.round_id(DAY)).model_copy(update={"revision": 1})
    revised = revised.model_copy(update={"net_kw": [5.0] * len(revised.net_kw)})
    n.agg.on_message("home-0", revised, T0 + 5)
    before = {f.request.id: (f.orders, f.baselines) for f in n.agg.flex.values()}

    again = AggregatorBrain("agr-1", frozenset(HOMES), "dso-1", "trafo-1", n.agg.store,
                            flat_prices, answer_window_s=60, settling=settling)  # fmt: skip
    assert {f.request.id: (f.orders, f.baselines) for f in again.flex.values()} == before
    # the DSO's order sent again after the restart changes nothing
    (sold,) = [f.sold for f in again.flex.values()]
    for order in sold.values():
        ack, out = again.on_message("dso-1", order, T0 + 6)
        assert (ack.status, ack.detail, out) == ("ok", "taken before", [])
    out = again.on_tick(DAY_END + settling.after_s)
    paid = {o.to: o.message for o in out if isinstance(o.message, Settlement)}
    assert sorted(paid) == HOMES[:4]
    assert {h: m.order for h, m in paid.items()} == {h: orders[h].id for h in HOMES[:4]}
    given = {h: GIVEN_KW[h] * 0.25 * len(PEAK) for h in HOMES[:4]}
    assert {h: m.delivered_kwh for h, m in paid.items()} == pytest.approx(given)


def test_a_restarted_dso_settles_the_orders_it_placed_before(tmp_path: Path) -> None:
    history = History(tmp_path / "history")
    for home in HOMES:
        history.day(home, meter_kw(home))
    settling = Settling(HistoryMeters.open(history.dir.root), Ledger(tmp_path / "agr.db"), 0.3)
    n, _ = ordered_day(tmp_path, settling)
    placed = dict(n.dso.placed)
    assert len(placed) == 4
    (to_dso,) = [o for o in n.agg.on_tick(DAY_END + AFTER_S) if o.to == "dso-1"]

    point = CongestionPoint("trafo-1", LIMIT_KW, frozenset({"agr-1"}))
    again = DsoBrain("dso-1", [point], max_price=0.20, ledger=Ledger(tmp_path / "dso.db"),
                     penalty_eur_kwh=DSO_PENALTY)  # fmt: skip
    assert again.placed == placed  # orders and baselines, from the ledger
    ack, out = again.on_message("agr-1", to_dso.message, DAY_END + AFTER_S + 1)
    assert ack.status == "ok", ack.detail
    paid = [o.message for o in out if isinstance(o.message, Settlement)]
    assert sorted(m.order for m in paid) == sorted(placed)
    assert sum(m.delivered_kwh for m in paid) == pytest.approx(2.5)
