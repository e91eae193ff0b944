"""Typed market objects: bids and their blocks, flexibility requests and offers, awards, clearing
results and refusals. Units throughout: power in kW (mean over the period), prices in € per kWh,
money in €, periods as integers (PTU or hour index) of `period_h` hours.

Sign convention (seed 002 §2.4): a payment is money *received*; a buyer's bid value ω is its
utility (positive), a seller's its cost (negative).

Bad input never stops a round: `parse_bids` takes each raw bid on its own and returns the
valid ones with a `Refusal` (bid id, field, message) for each of the others.
"""

from __future__ import annotations

import hashlib
import math
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

PRICE_BOUND = 10.0  # €/kWh either way: 10,000 €/MWh, beyond any European market's cap
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


class Block(Strict):
    """One price-quantity step of a bid: up to `quantity` kW at `price` €/kWh (a maximum for a
    buyer, a minimum for a seller)."""

    quantity: float = Field(ge=0, allow_inf_nan=False)
    price: float = Field(ge=-PRICE_BOUND, le=PRICE_BOUND, allow_inf_nan=False)


class Bid(Strict):
    """A participant's bid for one period: blocks in order. For a plain curve a buyer's prices
    do not rise and a seller's do not fall from one block to the next (`monotone`); a
    granularity bid (seed 002 LFM) orders its blocks by fill priority instead and may be
    hump-shaped, so `monotone` is False there."""

    id: str = Field(pattern=ID_PATTERN)
    participant: str = Field(pattern=ID_PATTERN)
    period: int = Field(ge=0)
    side: Side
    blocks: list[Block] = Field(min_length=1, max_length=64)
    monotone: bool = True

    def check_curve(self) -> None:
        """ValueError naming the block when a monotone curve is not."""
        if not self.monotone:
            return
        for n in range(1, len(self.blocks)):
            a, b = self.blocks[n - 1].price, self.blocks[n].price
            if (self.side == Side.BUY and b > a) or (self.side == Side.SELL and b < a):
                raise ValueError(
                    f"blocks.{n}.price: {b} after {a}; a {self.side} curve must be "
                    f"{'non-increasing' if self.side == Side.BUY else 'non-decreasing'}"
                )

    @property
    def quantity(self) -> float:
        return sum(b.quantity for b in self.blocks)


class Direction(StrEnum):
    UP = "up"  # more production or less consumption (lower net load)
    DOWN = "down"  # more consumption or less production


class FlexRequest(Strict):
    """A buyer's (the DSO's) request: change net load by `profile_kw` per period (positive
    numbers, in `direction`), paying at most `max_price` €/kWh (seed 004 §6)."""

    id: str = Field(pattern=ID_PATTERN)
    buyer: str = Field(pattern=ID_PATTERN)
    direction: Direction = Direction.UP
    profile_kw: dict[int, float]
    max_price: float = Field(ge=0, le=PRICE_BOUND, allow_inf_nan=False)

    @field_validator("profile_kw")
    @classmethod
    def _profile(cls, profile: dict[int, float]) -> dict[int, float]:
        for period, kw in profile.items():
            if period < 0 or not math.isfinite(kw) or kw < 0:
                raise ValueError(f"period {period}: {kw} kW; periods >= 0, kW finite and >= 0")
        return profile


class FlexOffer(Strict):
    """A seller's offer against a request: up to `profile_kw` per period at `price` €/kWh."""

    id: str = Field(pattern=ID_PATTERN)
    participant: str = Field(pattern=ID_PATTERN)
    request: str = Field(pattern=ID_PATTERN)
    profile_kw: dict[int, float]
    price: float = Field(ge=0, le=PRICE_BOUND, allow_inf_nan=False)
    divisible: bool = True

    @field_validator("profile_kw")
    @classmethod
    def _profile(cls, profile: dict[int, float]) -> dict[int, float]:
        return FlexRequest._profile(profile)


class FlexOrder(Strict):
    """The buyer's order after accepting an offer (USEF's FlexOrder): deliver `profile_kw` per
    period in `direction` at `price` €/kWh. The seller acknowledges it and re-plans within it;
    settlement measures delivery against it. `id` is derived from the request and the offer,
    so the same order sent again is recognisably the same."""

    id: str = Field(pattern=ID_PATTERN)
    buyer: str = Field(pattern=ID_PATTERN)
    participant: str = Field(pattern=ID_PATTERN)
    request: str = Field(pattern=ID_PATTERN)
    offer: str = Field(pattern=ID_PATTERN)
    direction: Direction
    profile_kw: dict[int, float]
    price: float = Field(ge=0, le=PRICE_BOUND, allow_inf_nan=False)
    period_h: float = Field(gt=0, allow_inf_nan=False)

    @field_validator("profile_kw")
    @classmethod
    def _profile(cls, profile: dict[int, float]) -> dict[int, float]:
        return FlexRequest._profile(profile)

    @staticmethod
    def id_for(request: str, offer: str) -> str:
        return "o" + hashlib.sha256(f"{request}\0{offer}".encode()).hexdigest()[:24]


class Award(Strict):
    """What one bid got: `quantity` kW cleared in `period` and its value ω (€): the buyer's
    utility (+) or the seller's cost (−) of the cleared blocks over `period_h`."""

    bid: str
    participant: str
    period: int
    side: Side
    quantity: float
    value: float
    blocks: list[float] = Field(
        default=[], description="cleared kW per block in the bid's order, where cleared by block"
    )


class Refusal(Strict):
    bid: str
    field: str
    message: str


class ClearingResult(Strict):
    method: str
    awards: list[Award]
    prices: dict[int, float | None] = Field(
        description="the uniform price per period (€/kWh); None where the method defines none"
    )
    welfare: float = Field(description="Σ ω over the awards (€)")
    refused: list[Refusal] = []
    metadata: dict[str, Any] = {}

    def omega(self) -> dict[str, float]:
        """ω per participant (€)."""
        out: dict[str, float] = {}
        for a in self.awards:
            out[a.participant] = out.get(a.participant, 0.0) + a.value
        return out

    def quantity(self, participant: str, period: int | None = None) -> float:
        return sum(
            a.quantity
            for a in self.awards
            if a.participant == participant and (period is None or a.period == period)
        )


def parse_bids(
    raw: list[Any], participants: set[str] | None = None
) -> tuple[list[Bid], list[Refusal]]:
    """Each raw bid on its own: the valid ones, and a refusal naming the bid and the field for
    each of the others (unreadable, bad values, a non-monotone curve, a participant not in
    `participants` when given, a duplicate id)."""
    bids: list[Bid] = []
    refused: list[Refusal] = []
    seen: set[str] = set()
    for n, item in enumerate(raw):
        name = str(item.get("id", f"#{n}")) if isinstance(item, dict) else f"#{n}"
        try:
            bid = Bid.model_validate(item)
            bid.check_curve()
        except ValidationError as exc:
            for err in exc.errors():
                field = ".".join(str(p) for p in err["loc"]) or "bid"
                refused.append(Refusal(bid=name, field=field, message=err["msg"]))
            continue
        except ValueError as exc:
            field, _, message = str(exc).partition(": ")
            refused.append(Refusal(bid=name, field=field, message=message))
            continue
        if participants is not None and bid.participant not in participants:
            refused.append(
                Refusal(bid=bid.id, field="participant", message=f"{bid.participant!r} is unknown")
            )
            continue
        if bid.id in seen:
            refused.append(Refusal(bid=bid.id, field="id", message="a bid with this id came first"))
            continue
        seen.add(bid.id)
        bids.append(bid)
    return bids, refused
