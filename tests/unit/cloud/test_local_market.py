"""The aggregator's local market inside a DSO order, on hand examples: the split cheapest first
and the € each home receives under pay-as-bid, uniform and VCG; then through the aggregator's
brain, from the DSO's order to the homes' orders and their settlement."""

from __future__ import annotations

import random
from datetime import date
from pathlib import Path

import pytest

from homeflex.agents.messages import FlexOffer, FlexOrder, FlexRequest, OfferBlock, PPlan
from homeflex.agents.rounds import RoundStore
from homeflex.cloud.aggregator.brain import AggregatorBrain, DayPrices
from homeflex.cloud.aggregator.local_market import BUYER, OrderSplit, PaymentRule, split
from homeflex.cloud.market.lfm import LfmClearing
from homeflex.cloud.market.objects import Bid, Block, Side
from homeflex.cloud.market.settlement import Ledger

H = 0.25  # h per PTU
# three homes in one divisible tier, 0.5 kW each in PTUs 76 and 77, asking 5, 7 and 9 ct/kWh;
# the DSO orders 0.8 kW in PTU 76 and 1.2 kW in PTU 77 at 12 ct/kWh
MEMBERS = {t: [(0.05, "home-a", 0.5), (0.07, "home-b", 0.5), (0.09, "home-c", 0.5)]
           for t in (76, 77)}  # fmt: skip
ORDER_KW = {76: 0.8, 77: 1.2}


def flat(profiles: dict[str, dict[int, float]]) -> dict[tuple[str, int], float]:
    return {(h, t): kw for h, p in profiles.items() for t, kw in p.items()}


def eur(rule: PaymentRule) -> dict[str, float]:
    shares = split(ORDER_KW, 0.12, MEMBERS, divisible=True, rule=rule)
    return {h: s.price * sum(s.profile_kw.values()) * H for h, s in shares.items()}


def test_the_order_is_split_cheapest_first_whatever_the_rule() -> None:
    for rule in ("pay-as-bid", "uniform", "vcg"):
        shares = split(ORDER_KW, 0.12, MEMBERS, divisible=True, rule=rule)
        assert flat({h: s.profile_kw for h, s in shares.items()}) == pytest.approx({
            ("home-a", 76): 0.5, ("home-a", 77): 0.5,
            ("home-b", 76): 0.3, ("home-b", 77): 0.5,
            ("home-c", 77): 0.2,
        })  # fmt: skip


def test_pay_as_bid_pays_each_home_its_own_price() -> None:
    shares = split(ORDER_KW, 0.12, MEMBERS, divisible=True, rule="pay-as-bid")
    assert {h: s.price for h, s in shares.items()} == pytest.approx(
        {"home-a": 0.05, "home-b": 0.07, "home-c": 0.09}
    )
    # 0.25 kWh × 5 ct, 0.2 kWh × 7 ct, 0.05 kWh × 9 ct
    assert eur("pay-as-bid") == pytest.approx({"home-a": 0.0125, "home-b": 0.014,
                                               "home-c": 0.0045})  # fmt: skip


def test_uniform_pays_the_highest_price_taken_in_each_ptu() -> None:
    # PTU 76 clears at home-b's 7 ct, PTU 77 at home-c's 9 ct
    assert eur("uniform") == pytest.approx({
        "home-a": 0.5 * H * 0.07 + 0.5 * H * 0.09,  # 0.02 €: 8 ct/kWh
        "home-b": 0.3 * H * 0.07 + 0.5 * H * 0.09,  # 0.0165 €
        "home-c": 0.2 * H * 0.09,  # 0.0045 €
    })  # fmt: skip
    shares = split(ORDER_KW, 0.12, MEMBERS, divisible=True, rule="uniform")
    assert shares["home-a"].price == pytest.approx(0.08)


def test_vcg_pays_who_would_have_taken_a_homes_place_or_the_order_price() -> None:
    # without home-a: in PTU 76 home-b gives 0.2 kW more (7 ct) and home-c 0.3 kW (9 ct); in
    # PTU 77 home-c 0.3 kW more and 0.2 kW stays unmet, worth the order's 12 ct to the DSO
    assert eur("vcg") == pytest.approx({
        "home-a": (0.2 * 0.07 + 0.3 * 0.09) * H + (0.3 * 0.09 + 0.2 * 0.12) * H,  # 0.023 €
        "home-b": 0.3 * 0.09 * H + (0.3 * 0.09 + 0.2 * 0.12) * H,  # 0.0195 €
        "home-c": 0.2 * 0.12 * H,  # 0.006 €: nobody could replace it
    })  # fmt: skip


def test_an_indivisible_tier_takes_blocks_whole_when_they_fit() -> None:
    members = {80: [(0.04, "home-a", 0.6), (0.06, "home-b", 0.5), (0.08, "home-c", 0.4)]}
    prices = {
        rule: {h: s.price for h, s in
               split({80: 1.0}, 0.10, members, divisible=False, rule=rule).items()}
        for rule in ("pay-as-bid", "uniform", "vcg")
    }  # fmt: skip
    # 0.6 kW of home-a, home-b's 0.5 kW does not fit in the 0.4 left, home-c's does
    assert prices["pay-as-bid"] == pytest.approx({"home-a": 0.04, "home-c": 0.08})
    assert prices["uniform"] == pytest.approx({"home-a": 0.08, "home-c": 0.08})
    # VCG: without home-a, home-b and home-c give 0.9 kW; without home-c, home-a alone
    assert prices["vcg"] == pytest.approx({"home-a": 0.010 / (0.6 * H), "home-c": 0.10})


def test_no_rule_pays_above_the_order_price_and_an_unknown_rule_is_refused() -> None:
    for rule in ("pay-as-bid", "uniform", "vcg"):
        shares = split(ORDER_KW, 0.09, MEMBERS, divisible=True, rule=rule)
        assert max(s.price for s in shares.values()) <= 0.09 + 1e-12
    with pytest.raises(ValueError, match="no payment rule 'shapley'"):
        split(ORDER_KW, 0.12, MEMBERS, divisible=True, rule="shapley")  # type: ignore[arg-type]


# --- through the aggregator's brain ------------------------------------------------------------

DAY = date(2026, 1, 15)
T0 = 1_768_000_000.0
ASKS = {"home-a": 0.051, "home-b": 0.055, "home-c": 0.059}  # one 6 ct tier


def ordered(tmp_path: Path, rule: PaymentRule) -> tuple[AggregatorBrain, dict[str, FlexOrder]]:
    """Three homes answer a round with 3 kW planned in PTU 80 and 0.5 kW less offered; the
    DSO asks for 1.2 kW, gets one 6 ct tier and orders it at its price."""
    store = RoundStore(tmp_path / f"{rule}.db")
    agg = AggregatorBrain("agr-1", frozenset(ASKS), "dso-1", "trafo-1", store,
                          lambda d: DayPrices([0.3] * 96, [0.05] * 96), payment=rule)  # fmt: skip
    agg.open_round(DAY, T0)
    rid = agg.round_id(DAY)
    for home, ask in ASKS.items():
        plan = PPlan(round=rid, day=DAY, revision=0, net_kw=[3.0] * 96)
        block = OfferBlock(ptu=80, direction="up", kw=0.5, price=ask)
        offer = FlexOffer(round=rid, id=f"{home}.o", day=DAY, blocks=[block])
        for m in (plan, offer):
            assert agg.on_message(home, m, T0 + 1)[0].status == "ok"
    agg.on_tick(T0 + 2)  # all answered: the round closes
    request = FlexRequest(round=rid, id="trafo-1.r", day=DAY, congestion_point="trafo-1",
                          profile_kw={80: 1.2}, max_price=0.2, answer_by=T0 + 60)  # fmt: skip
    ack, out = agg.on_message("dso-1", request, T0 + 3)
    (tier_id,) = out[0].message.tiers()  # type: ignore[attr-defined]
    order = FlexOrder(round=rid, id="o1", day=DAY, offer=tier_id, direction="up",
                      profile_kw={80: 1.2}, price=0.06)  # fmt: skip
    ack, out = agg.on_message("dso-1", order, T0 + 4)
    assert ack.status == "ok"
    return agg, {o.to: o.message for o in out if isinstance(o.message, FlexOrder)}


@pytest.mark.parametrize(
    ("rule", "prices"),
    [
        ("pay-as-bid", {"home-a": 0.051, "home-b": 0.055, "home-c": 0.059}),
        ("uniform", {"home-a": 0.059, "home-b": 0.059, "home-c": 0.059}),
        # without home-a (or home-b): home-c gives 0.3 kW more, 0.2 kW unmet at the order's 6 ct
        ("vcg", {"home-a": (0.3 * 0.059 + 0.2 * 0.06) / 0.5,
                 "home-b": (0.3 * 0.059 + 0.2 * 0.06) / 0.5, "home-c": 0.06}),
    ],
)  # fmt: skip
def test_the_brain_prices_the_homes_orders_by_its_rule_and_settles_them(
    tmp_path: Path, rule: PaymentRule, prices: dict[str, float]
) -> None:
    agg, orders = ordered(tmp_path, rule)
    assert flat({h: o.profile_kw for h, o in orders.items()}) == pytest.approx(
        {("home-a", 80): 0.5, ("home-b", 80): 0.5, ("home-c", 80): 0.2}
    )
    assert {h: o.price for h, o in orders.items()} == pytest.approx(prices)
    # every home delivers its order: it is paid its price for its kWh
    metered = {h: {80: (3.0 - o.profile_kw[80]) * H} for h, o in orders.items()}
    out = agg.settle(DAY, metered, Ledger(tmp_path / f"{rule}-ledger.db"), penalty_eur_kwh=0.3)
    paid = {o.to: o.message.payment_eur for o in out}  # type: ignore[attr-defined]
    assert paid == pytest.approx({h: prices[h] * orders[h].profile_kw[80] * H for h in orders})


def test_with_one_buyer_the_seed_002_lfm_clears_a_divisible_tier_as_the_split_does() -> None:
    """Why the aggregator's local market is the split and not a seed 002 LFM method: inside one
    DSO order there is one buyer at one price, and the impact-based LFM (an LP maximising the
    welfare) then takes the sellers cheapest first, exactly as the split does."""
    rng = random.Random(7)
    lfm = LfmClearing("lfm-impact-ptu", ordered=False, period_h=H)
    for _ in range(30):
        bids = []
        for t in range(4):
            prices = rng.sample(range(1, 40), 6)  # distinct: no ties to break differently
            for n, cents in enumerate(prices):
                bids.append(Bid(id=f"b{t}.{n}", participant=f"h{n}", period=t, side=Side.SELL,
                                blocks=[Block(quantity=rng.uniform(0.1, 2.0),
                                              price=cents / 100)]))  # fmt: skip
            order = Block(quantity=rng.uniform(0.5, 8.0), price=0.40)
            bids.append(Bid(id=f"order.{t}", participant=BUYER, period=t, side=Side.BUY,
                            blocks=[order]))  # fmt: skip
        ours, theirs = OrderSplit(divisible=True, period_h=H).clear(bids), lfm.clear(bids)
        got = {a.bid: a.quantity for a in ours.awards}
        assert {a.bid: a.quantity for a in theirs.awards} == pytest.approx(got, abs=1e-6)
        assert theirs.welfare == pytest.approx(ours.welfare, abs=1e-6)
