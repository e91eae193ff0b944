"""DSO procurement (seed 004 §6): the 300 kW peak against a 280 kW transformer met at least
cost, checked against an enumeration of every selection; partial answers with the shortfall."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from homeflex.cloud.market.dso import PERIOD_H, congestion_request, excess_kw, procure
from homeflex.cloud.market.objects import Direction, FlexOffer, FlexOrder, FlexRequest, Side

LIMIT_KW = 280.0
PEAK_KW = 300.0
PEAK_PTU = 80  # 20:00
HOMES_PER_AGR = 50
AGGREGATORS = ("agr-a", "agr-b", "agr-c")


def evening_shape() -> np.ndarray:
    """A residential day over 96 PTUs: night base, a morning bump, a small midday one and the
    evening peak at 20:00."""
    h = np.arange(96) * PERIOD_H
    shape: np.ndarray = (
        0.45
        + 0.35 * np.exp(-0.5 * ((h - 7.5) / 1.0) ** 2)
        + 0.15 * np.exp(-0.5 * ((h - 13.0) / 2.0) ** 2)
        + 1.45 * np.exp(-0.5 * ((h - 20.0) / 1.6) ** 2)
    )
    return shape


def homes_load(rng: np.random.Generator) -> np.ndarray:
    """150 homes' loads (kW, homes × PTUs), scaled so that their sum peaks at 300 kW at 20:00."""
    sizes = rng.uniform(0.6, 1.4, size=len(AGGREGATORS) * HOMES_PER_AGR)
    load: np.ndarray = np.outer(sizes, evening_shape())
    load *= PEAK_KW / load[:, PEAK_PTU].sum()
    return load


def aggregator_offers(
    request: FlexRequest, load: np.ndarray, rng: np.random.Generator
) -> list[FlexOffer]:
    """Each home can defer a share of its load in the requested PTUs at its own price; each
    aggregator sums its homes into three price tiers, priced at the tier's dearest home. The
    cheapest tier is divisible (heat pumps and batteries turn down in part), the others are
    not (appliance and EV blocks move whole)."""
    price_ranges = {"agr-a": (0.08, 0.20), "agr-b": (0.10, 0.26), "agr-c": (0.05, 0.30)}
    offers = []
    for n, agr in enumerate(AGGREGATORS):
        homes = load[n * HOMES_PER_AGR : (n + 1) * HOMES_PER_AGR]
        share = rng.uniform(0.04, 0.16, size=HOMES_PER_AGR)
        price = rng.uniform(*price_ranges[agr], size=HOMES_PER_AGR)
        order = np.argsort(price)
        for tier, members in enumerate(np.array_split(order, 3)):
            offers.append(
                FlexOffer(
                    id=f"{agr}-t{tier}",
                    participant=agr,
                    request=request.id,
                    profile_kw={
                        t: float((share[members] * homes[members, t]).sum())
                        for t in request.profile_kw
                    },
                    price=round(float(price[members].max()), 4),
                    divisible=tier == 0,
                )
            )
    return offers


def enumerate_best(request: FlexRequest, offers: list[FlexOffer]) -> tuple[float, float]:
    """(shortfall kWh, cost €) of the best selection, by trying every subset of indivisible
    offers and filling what remains from the divisible ones cheapest first, period by period
    (which is optimal once the indivisible ones are fixed); a selection costing more than the
    max price × kWh met does not count."""
    h, need = PERIOD_H, request.profile_kw
    usable = [o for o in offers if o.request == request.id and o.price <= request.max_price]
    whole = [o for o in usable if not o.divisible]
    parts = sorted((o for o in usable if o.divisible), key=lambda o: o.price)
    best = (sum(need.values()) * h, 0.0)
    for k in range(len(whole) + 1):
        for chosen in itertools.combinations(whole, k):
            cost = sum(o.price * sum(o.profile_kw.values()) * h for o in chosen)
            met = 0.0
            for t, kw in need.items():
                got = min(kw, sum(o.profile_kw.get(t, 0.0) for o in chosen))
                for o in parts:
                    more = min(kw - got, o.profile_kw.get(t, 0.0))
                    got += more
                    cost += o.price * more * h
                met += got * h
            if cost > request.max_price * met + 1e-9:
                continue
            short = sum(need.values()) * h - met
            if short < best[0] - 1e-9 or (short < best[0] + 1e-9 and cost < best[1]):
                best = (short, cost)
    return best


@pytest.fixture(scope="module")
def worked_example() -> tuple[list[float], FlexRequest, list[FlexOffer]]:
    rng = np.random.default_rng(4)
    load = homes_load(rng)
    prognosis = [float(x) for x in load.sum(axis=0)]
    request = congestion_request(
        prognosis, LIMIT_KW, request_id="uc3-d", buyer="dso", max_price=0.25
    )
    return prognosis, request, aggregator_offers(request, load, rng)


def test_the_prognosis_peaks_at_300_kw_at_20_00(
    worked_example: tuple[list[float], FlexRequest, list[FlexOffer]],
) -> None:
    prognosis, _, _ = worked_example
    assert len(prognosis) == 96
    assert int(np.argmax(prognosis)) == PEAK_PTU
    assert max(prognosis) == pytest.approx(PEAK_KW, abs=1e-9)
    assert min(prognosis) < 0.4 * PEAK_KW  # a night trough, not a flat load


def test_the_request_is_the_excess_over_the_transformer_limit(
    worked_example: tuple[list[float], FlexRequest, list[FlexOffer]],
) -> None:
    prognosis, request, _ = worked_example
    over = {t: kw - LIMIT_KW for t, kw in enumerate(prognosis) if kw > LIMIT_KW}
    assert request.profile_kw == pytest.approx(over)
    assert request.profile_kw[PEAK_PTU] == pytest.approx(PEAK_KW - LIMIT_KW)
    assert request.direction == Direction.UP
    assert len(request.profile_kw) >= 3  # an evening hump spans several PTUs above 280 kW
    # back-flow is the mirror: export beyond the rating asks for more load
    assert excess_kw([-250.0, -300.0, 10.0], LIMIT_KW, Direction.DOWN) == {1: 20.0}


def test_the_worked_example_is_met_at_least_cost(
    worked_example: tuple[list[float], FlexRequest, list[FlexOffer]],
) -> None:
    prognosis, request, offers = worked_example
    result = procure(request, offers)
    assert result.status == "optimal"
    assert result.met and result.shortfall_kw == {}
    # the enumeration of all 2^6 indivisible subsets finds no cheaper way to meet the request
    short, cost = enumerate_best(request, offers)
    assert short == pytest.approx(0.0, abs=1e-9)
    assert result.total_cost_eur == pytest.approx(cost, rel=1e-9, abs=1e-9)
    after = result.apply(prognosis)
    assert max(after) <= LIMIT_KW + 1e-6
    # pay-as-bid: each accepted offer costs its price × the kWh taken, never above the max price
    refused = {r.bid for r in result.refused}
    for oid, profile in result.accepted.items():
        offer = result.offers[oid]
        assert offer.price <= request.max_price
        assert result.cost_eur[oid] == pytest.approx(offer.price * sum(profile.values()) * 0.25)
        if not offer.divisible:
            assert profile == pytest.approx(offer.profile_kw)
    assert {o.id for o in offers if o.price > request.max_price} == refused
    assert refused  # the instance does put some tiers above the max price
    cleared = result.result()
    sold = [a for a in cleared.awards if a.side == Side.SELL]
    assert -sum(a.value for a in sold) == pytest.approx(result.total_cost_eur)
    bought = sum(a.quantity for a in cleared.awards if a.side == Side.BUY)
    assert bought == pytest.approx(sum(a.quantity for a in sold))
    # ω: the DSO values each kWh it asked for at its max price; the sellers' cost is minus theirs
    asked_kwh = sum(request.profile_kw.values()) * PERIOD_H
    assert cleared.welfare == pytest.approx(request.max_price * asked_kwh - result.total_cost_eur)
    # one order per accepted offer, for what was accepted of it, at its price
    orders = result.orders()
    assert [o.offer for o in orders] == sorted(result.accepted)
    for o in orders:
        assert o.profile_kw == pytest.approx(result.accepted[o.offer])
        assert o.price == result.offers[o.offer].price and o.request == request.id
        assert o.participant == result.offers[o.offer].participant and o.buyer == request.buyer
        assert o.id == FlexOrder.id_for(request.id, o.offer)  # the same order, if sent again
    assert len({o.id for o in orders}) == len(orders)
    ordered_kwh = sum(sum(o.profile_kw.values()) * o.period_h for o in orders)
    assert sum(o.price * sum(o.profile_kw.values()) * o.period_h for o in orders) == (
        pytest.approx(result.total_cost_eur)
    )
    assert ordered_kwh == pytest.approx(sum(a.quantity for a in sold) * PERIOD_H)


def test_without_one_aggregator_matches_the_enumeration_too(
    worked_example: tuple[list[float], FlexRequest, list[FlexOffer]],
) -> None:
    _, request, offers = worked_example
    rest = {"dso", "agr-a", "agr-c"}
    result = procure(request, offers, participants=rest)
    assert all(result.offers[o].participant in rest for o in result.accepted)
    short, cost = enumerate_best(request, [o for o in offers if o.participant in rest])
    assert sum(result.shortfall_kw.values()) * PERIOD_H == pytest.approx(short, abs=1e-7)
    assert result.total_cost_eur == pytest.approx(cost, rel=1e-9, abs=1e-9)
    # without agr-b the peak PTU is short by what the others' admissible offers leave open
    usable = [o for o in offers if o.participant in rest and o.price <= request.max_price]
    assert set(result.accepted) == {o.id for o in usable}
    left = request.profile_kw[PEAK_PTU] - sum(o.profile_kw[PEAK_PTU] for o in usable)
    assert left > 0
    assert result.shortfall_kw == pytest.approx({PEAK_PTU: left})


@pytest.mark.parametrize("seed", range(40))
def test_small_random_instances_match_the_enumeration(seed: int) -> None:
    rng = np.random.default_rng(seed)
    periods = list(range(3))
    request = FlexRequest(
        id="r",
        buyer="dso",
        profile_kw={t: float(rng.uniform(0, 30)) for t in periods},
        max_price=0.3,
    )
    offers = [
        FlexOffer(
            id=f"o{n}",
            participant=f"p{n % 4}",
            request="r",
            # some offers reach into a period the DSO did not ask for
            profile_kw={t: float(rng.uniform(0, 12)) for t in range(4) if rng.random() < 0.8},
            price=round(float(rng.uniform(0.02, 0.4)), 3),
            divisible=bool(rng.random() < 0.4),
        )
        for n in range(7)
    ]
    result = procure(request, offers)
    short, cost = enumerate_best(request, offers)
    got_short = sum(result.shortfall_kw.values()) * PERIOD_H
    assert got_short == pytest.approx(short, abs=1e-6)
    assert result.total_cost_eur == pytest.approx(cost, rel=1e-7, abs=1e-7)
    met_kwh = sum(result.met_kw().values()) * PERIOD_H
    assert result.total_cost_eur <= request.max_price * met_kwh + 1e-7


def test_indivisible_offers_are_taken_whole_not_in_part() -> None:
    # an LP would take all of a and four fifths of b (0.25 €); whole offers cost 0.275 €
    request = FlexRequest(id="r", buyer="dso", profile_kw={0: 10.0}, max_price=0.5)
    offers = [
        FlexOffer(
            id="a", participant="A", request="r", profile_kw={0: 6.0}, price=0.10, divisible=False
        ),
        FlexOffer(
            id="b", participant="B", request="r", profile_kw={0: 5.0}, price=0.10, divisible=False
        ),
        FlexOffer(
            id="c", participant="C", request="r", profile_kw={0: 10.0}, price=0.12, divisible=False
        ),
    ]
    result = procure(request, offers)
    assert result.accepted == {"a": {0: 6.0}, "b": {0: 5.0}}
    assert result.total_cost_eur == pytest.approx(11.0 * 0.25 * 0.10)
    assert result.apply([290.0]) == pytest.approx([279.0])


def test_the_dso_never_pays_more_than_its_max_price_per_kwh_it_asked_for() -> None:
    # 10 kW in the congested PTU and 10 kW in one the DSO did not ask for, whole or not at all
    request = FlexRequest(id="r", buyer="dso", profile_kw={0: 10.0}, max_price=0.5)

    def offer(price: float) -> FlexOffer:
        return FlexOffer(
            id="x",
            participant="A",
            request="r",
            profile_kw={0: 10.0, 1: 10.0},
            price=price,
            divisible=False,
        )

    # 20 kW × 0.25 h × 0.3 €/kWh = 1.50 € for 2.5 kWh met, 0.60 €/kWh: above the max price
    dear = procure(request, [offer(0.3)])
    assert dear.accepted == {} and dear.shortfall_kw == {0: 10.0}
    # at 0.2 €/kWh it is 1.00 € for 2.5 kWh, 0.40 €/kWh: taken
    cheap = procure(request, [offer(0.2)])
    assert cheap.met and cheap.total_cost_eur == pytest.approx(1.0)


def test_offers_too_small_give_the_best_partial_answer_and_the_shortfall(
    worked_example: tuple[list[float], FlexRequest, list[FlexOffer]],
) -> None:
    prognosis, request, offers = worked_example
    small = [o for o in offers if o.divisible and o.price <= request.max_price][:1]
    result = procure(request, small)
    (offer,) = small
    expected = {
        t: need - offer.profile_kw[t]
        for t, need in request.profile_kw.items()
        if need > offer.profile_kw[t]
    }
    assert expected  # the one tier is too small in some PTUs
    assert result.shortfall_kw == pytest.approx(expected)
    assert not result.met
    # all of it is taken where it helps, at its price
    taken = {t: min(kw, request.profile_kw[t]) for t, kw in offer.profile_kw.items()}
    assert result.accepted[offer.id] == pytest.approx(taken)
    assert result.total_cost_eur == pytest.approx(offer.price * sum(taken.values()) * PERIOD_H)
    after = result.apply(prognosis)
    for t, missing in expected.items():
        assert after[t] == pytest.approx(LIMIT_KW + missing)


def test_offers_too_expensive_are_refused_and_the_whole_request_is_short(
    worked_example: tuple[list[float], FlexRequest, list[FlexOffer]],
) -> None:
    _, request, offers = worked_example
    stingy = request.model_copy(update={"max_price": 0.01})
    result = procure(stingy, offers)
    assert result.accepted == {} and result.total_cost_eur == 0.0
    assert result.shortfall_kw == pytest.approx(request.profile_kw)
    assert sorted(r.bid for r in result.refused) == sorted(o.id for o in offers)
    assert {r.field for r in result.refused} == {"price"}


def test_offers_for_another_request_or_with_a_repeated_id_are_refused() -> None:
    request = FlexRequest(id="r", buyer="dso", profile_kw={0: 4.0}, max_price=0.5)
    offers = [
        FlexOffer(id="a", participant="A", request="r", profile_kw={0: 4.0}, price=0.1),
        FlexOffer(id="a", participant="B", request="r", profile_kw={0: 4.0}, price=0.05),
        FlexOffer(id="b", participant="B", request="other", profile_kw={0: 4.0}, price=0.05),
    ]
    result = procure(request, offers)
    assert [(r.bid, r.field) for r in result.refused] == [("a", "id"), ("b", "request")]
    assert result.accepted == {"a": {0: 4.0}}
    assert result.total_cost_eur == pytest.approx(4.0 * 0.25 * 0.1)
