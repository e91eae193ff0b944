"""The aggregator's local market inside one DSO order: the homes' blocks of the ordered tier
share the order out, PTU by PTU, cheapest first (a block that may not be split is taken whole
or not at all, as the DSO may take the tier), and each home's share is priced by the
aggregator's payment rule, computed by cloud/market/payments.py on the split as a clearing:

- `pay-as-bid`: each home receives its own price for what it gives (seed 004's rule);
- `uniform`: every home given a share in a PTU receives the highest price given a share there
  (pay-as-cleared);
- `vcg`: each home receives its cost plus its marginal contribution to the order's welfare,
  with the DSO's order price as the buyer's value: the price of the home that would have taken
  its place, or the order's price where nobody could.

A FlexOrder carries one price, so a home's share of an order is priced at what the rule pays
it over all the order's PTUs divided by the kWh it gives (exact when it delivers everything;
settlement pays that price per kWh delivered). No rule pays a home less per kWh than it asked
nor more than the DSO pays the aggregator for the order; the aggregator keeps the difference.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

from homeflex.cloud.market import payments
from homeflex.cloud.market.objects import Award, Bid, Block, ClearingResult, Side

PaymentRule = Literal["pay-as-bid", "uniform", "vcg"]
PAYMENT_RULES: tuple[str, ...] = get_args(PaymentRule)
PTU_H = 0.25
BUYER = "dso-order"  # the order as the buyer's bid; homes are `h<n>`, so never the same
EPS_KW = 1e-9

# a home's block of the ordered tier in one PTU: (its price €/kWh, the home, kW)
Member = tuple[float, str, float]


@dataclass(frozen=True)
class Share:
    """One home's part of a DSO order: kW per PTU, at one price (€/kWh)."""

    profile_kw: dict[int, float]
    price: float


class OrderSplit:
    """The split as a clearing method (cloud/market/registry.py's protocol), so the payment
    rules can clear it again without a home (VCG). Per period, the buyer's one bid (the order:
    its kW at its price) takes the sellers' one-block bids in the order given, stable by price:
    each in full or for what is left if `divisible`, else in full if it fits or not at all.
    Not registered: it clears one order's tier, not a market."""

    name = "aggregator-split"

    def __init__(self, divisible: bool, period_h: float = PTU_H) -> None:
        self.divisible = divisible
        self.period_h = period_h

    def clear(self, bids: list[Bid], participants: set[str] | None = None) -> ClearingResult:
        chosen = [b for b in bids if participants is None or b.participant in participants]
        h = self.period_h
        awards: list[Award] = []
        prices: dict[int, float | None] = {}
        for t in sorted({b.period for b in chosen}):
            buyers = [b for b in chosen if b.period == t and b.side == Side.BUY]
            sellers = [b for b in chosen if b.period == t and b.side == Side.SELL]
            wanted = sum(b.quantity for b in buyers)
            left = wanted
            highest: float | None = None
            for b in sorted(sellers, key=lambda b: b.blocks[0].price):
                q, price = b.blocks[0].quantity, b.blocks[0].price
                fits = q <= left + EPS_KW
                take = min(left, q) if self.divisible else q * fits
                take = take if take > EPS_KW else 0.0
                left -= take
                if take:
                    highest = price if highest is None else max(highest, price)
                awards.append(
                    Award(bid=b.id, participant=b.participant, period=t, side=Side.SELL,
                          quantity=take, value=-price * take * h, blocks=[take])
                )  # fmt: skip
            given = wanted - max(left, 0.0)
            for b in buyers:
                price = b.blocks[0].price
                awards.append(
                    Award(bid=b.id, participant=b.participant, period=t, side=Side.BUY,
                          quantity=given, value=price * given * h, blocks=[given])
                )  # fmt: skip
            cap = max((b.blocks[0].price for b in buyers), default=None)
            prices[t] = None if highest is None or cap is None else min(highest, cap)
        return ClearingResult(
            method=self.name,
            awards=awards,
            prices=prices,
            welfare=sum(a.value for a in awards),
            metadata={"period_h": h},
        )


def split(
    profile_kw: Mapping[int, float],
    price: float,
    members: Mapping[int, list[Member]],
    *,
    divisible: bool,
    rule: PaymentRule = "pay-as-bid",
    period_h: float = PTU_H,
) -> dict[str, Share]:
    """Each home's share of an order for `profile_kw` (kW per PTU) at `price` €/kWh, from the
    tier's `members` per PTU, priced by `rule` (module docstring). Homes that give nothing are
    left out."""
    if rule not in PAYMENT_RULES:
        raise ValueError(f"no payment rule {rule!r} here; choose one of {', '.join(PAYMENT_RULES)}")
    homes = sorted({home for ms in members.values() for _, home, _ in ms})
    # market ids are `h<n>`: a home's name need not fit the market's id pattern
    alias = {home: f"h{n}" for n, home in enumerate(homes)}
    bids = []
    for t, kw in sorted(profile_kw.items()):
        for n, (p, home, q) in enumerate(sorted(members.get(t, []))):  # cheapest first
            bids.append(Bid(id=f"b{t}.{n}", participant=alias[home], period=t, side=Side.SELL,
                            blocks=[Block(quantity=q, price=p)]))  # fmt: skip
        bids.append(Bid(id=f"order.{t}", participant=BUYER, period=t, side=Side.BUY,
                        blocks=[Block(quantity=kw, price=price)]))  # fmt: skip
    method = OrderSplit(divisible, period_h)
    result = method.clear(bids)
    paid = payments.pay(rule, result, payments.Welfare(method, bids)).payments
    omega = result.omega()
    given: dict[str, dict[int, float]] = {}  # market id → PTU → kW (a home's blocks summed)
    for aw in result.awards:
        if aw.side == Side.SELL and aw.quantity > 0:
            mine = given.setdefault(aw.participant, {})
            mine[aw.period] = mine.get(aw.period, 0.0) + aw.quantity
    out = {}
    for home in homes:
        a = alias[home]
        profile = given.get(a, {})
        kwh = sum(profile.values()) * period_h
        if not profile:
            continue
        asked = -omega[a] / kwh  # its own prices, weighted by what it gives
        out[home] = Share(profile, min(price, max(asked, paid[a] / kwh)))
    return out
