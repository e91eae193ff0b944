"""Settle through both brains for the ten-home neighbourhood of test_aggregator_brain: the
aggregator settles its homes from their meters, the DSO settles the aggregator from the sum of
those meters; the aggregator takes the DSO's settlements once and from its DSO only; nothing the
DSO received or recorded names a home; the kWh the DSO pays for are those the homes gave."""

from __future__ import annotations

from pathlib import Path

import pytest

from homeflex.agents.messages import FlexOrder, Settlement
from homeflex.agents.rounds import RoundStore
from homeflex.cloud.market.settlement import Ledger
from tests.unit.cloud.test_aggregator_brain import (
    DAY,
    HOMES,
    PEAK,
    T0,
    Neighbourhood,
    home_offer,
    home_plan,
)

GIVEN_KW = {"home-0": 0.5, "home-1": 0.5, "home-2": 0.25}  # home-3 gives nothing


def test_the_dso_settles_the_aggregator_from_its_homes_summed_meters(tmp_path: Path) -> None:
    n = Neighbourhood(RoundStore(tmp_path / "rounds.db"))
    n.route(n.agg.open_round(DAY, T0), T0)
    rid = n.agg.round_id(DAY)
    for k, home in enumerate(HOMES):
        n.agg.on_message(home, home_plan(k, rid), T0 + 1)
        n.agg.on_message(home, home_offer(k, rid), T0 + 1)
    n.route(n.agg.on_tick(T0 + 2), T0 + 2)  # 32 kW at the peak: the DSO orders 2 kW
    home_orders = {o.to: o.message for o in n.to_homes if isinstance(o.message, FlexOrder)}
    assert sorted(home_orders) == HOMES[:4]

    metered = {h: {t: ((3.2 - GIVEN_KW.get(h, 0.0)) if t in PEAK else 2.0) * 0.25
                   for t in range(96)} for h in HOMES}  # fmt: skip
    homes_paid = n.agg.settle(DAY, metered, Ledger(tmp_path / "agr.db"), penalty_eur_kwh=0.3)
    home_kwh = sum(o.message.delivered_kwh for o in homes_paid)  # type: ignore[attr-defined]
    assert home_kwh == pytest.approx(1.25 * 0.25 * len(PEAK))  # 2.5 kWh

    # the DSO gets the aggregator's sum per PTU, never a home's meter
    summed = {"agr-1": {t: sum(m[t] for m in metered.values()) for t in range(96)}}
    dso_ledger = Ledger(tmp_path / "dso.db")
    with pytest.raises(ValueError, match="the DSO takes no home's meter"):
        n.dso.settle(DAY, {**summed, "home-0": metered["home-0"]}, dso_ledger, 0.3)
    out = n.dso.settle(DAY, summed, dso_ledger, penalty_eur_kwh=0.3)
    assert {o.to for o in out} == {"agr-1"} and len(out) == 4  # one per tier ordered
    settlements = [o.message for o in out if isinstance(o.message, Settlement)]
    # the orders stacked cheapest first: 2 kW ordered, 1.25 kW given
    assert sum(s.delivered_kwh for s in settlements) == pytest.approx(home_kwh)
    assert sum(s.payment_eur for s in settlements) == pytest.approx(
        (0.05 * 0.5 + 0.07 * 0.5 + 0.09 * 0.25) * 0.25 * len(PEAK)
    )
    assert sum(s.penalty_eur for s in settlements) == pytest.approx(0.3 * 0.75 * 0.25 * len(PEAK))

    # nothing the DSO received or recorded names a home
    seen = [m.encode().decode() for m in n.to_dso]
    seen += [e.body for e in dso_ledger.entries()]
    assert seen and not [text for text in seen if "home-" in text]
    assert {e.data()["participant"] for e in dso_ledger.entries()} == {"agr-1"}

    # the aggregator takes its DSO's settlements, each once, and no one else's
    n.route(list(out), T0 + 100)
    assert n.agg.dso_settlements == {s.order: s for s in settlements}
    ack, more = n.agg.on_message("dso-1", settlements[0], T0 + 101)
    assert (ack.status, ack.detail, more) == ("ok", "taken before", [])
    changed = settlements[0].model_copy(update={"payment_eur": 99.0})
    ack, _ = n.agg.on_message("dso-1", changed, T0 + 102)
    assert ack.status == "refused" and "settled before with other values" in ack.detail
    stranger = settlements[0].model_copy(update={"order": "other-order"})
    ack, _ = n.agg.on_message("home-1", stranger, T0 + 103)
    assert ack.status == "refused" and "not this aggregator's DSO" in ack.detail
    assert "other-order" not in n.agg.dso_settlements
    assert n.dso.settle(DAY, summed, dso_ledger, penalty_eur_kwh=0.3) == []  # never twice
