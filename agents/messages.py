"""What the agents say to each other: one typed model per message type, and the one registry that
maps a type (the envelope's `type`, the role table's column in agents/permissions.py) to its
model.

A payload is canonical JSON (sorted keys, no spaces) of the model. `decode` refuses anything that
is not exactly one valid model of the envelope's type, naming the type and the field, so a
behaviour only ever sees checked values: series of the right length, finite kW and prices
within bounds, known PTUs. Quantities are kW (the mean over a PTU) and prices € per kWh, as in
cloud/market; PTUs are indexes into the day the message names (0..95 for 15-minute PTUs).

Privacy is in the shapes (seed 004 C.1.3): a D-prognosis, the aggregator's offers and its
metered energies to the DSO carry sums per congestion point, never a home; orders and
settlements name only the party they are sent to.
"""

from __future__ import annotations

import json
from datetime import date
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

ID = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
KW_BOUND = 1e6  # kW either way: a congestion point's sum stays far below a GW
PRICE_BOUND = 10.0  # €/kWh either way, as cloud/market's objects
Kw = Annotated[float, Field(ge=-KW_BOUND, le=KW_BOUND, allow_inf_nan=False)]
Kwh = Kw  # a PTU's energy: a quarter of its mean kW, within the same bound
Price = Annotated[float, Field(ge=-PRICE_BOUND, le=PRICE_BOUND, allow_inf_nan=False)]
Ptu = Annotated[int, Field(ge=0, le=95)]
MAX_BYTES = 256 * 1024  # a payload larger than any valid message of ours


class MessageError(ValueError):
    """A payload that is not a valid message of its type; says which type and which field."""

    def __init__(self, type: str, field: str, detail: str) -> None:
        super().__init__(f"{type}: {field}: {detail}")
        self.type = type
        self.field = field
        self.detail = detail


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def encode(self) -> bytes:
        data = self.model_dump(mode="json")
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


class Series(Payload):
    """A payload with one value per PTU of its `day`, from `first_ptu` on."""

    day: date
    first_ptu: Ptu = 0

    def _check_series(self, **series: list[float] | None) -> None:
        for name, values in series.items():
            if values is not None and self.first_ptu + len(values) > 96:
                raise ValueError(
                    f"{name}: {len(values)} values from PTU {self.first_ptu} run past the "
                    "day's 96 PTUs"
                )
            if values is not None and not values:
                raise ValueError(f"{name}: no values")


class Direction(StrEnum):
    UP = "up"  # less consumption or more production: lower net load
    DOWN = "down"  # more consumption or less production


class Prices(Series):
    """Aggregator → home (day-ahead or intraday): the prices the home plans against, and when
    its P-plan and offer are due."""

    round: ID
    import_eur_kwh: list[Price]
    export_eur_kwh: list[Price]
    answer_by: float = Field(description="unix time; answers after it miss the round")

    @model_validator(mode="after")
    def _lengths(self) -> Prices:
        self._check_series(import_eur_kwh=self.import_eur_kwh, export_eur_kwh=self.export_eur_kwh)
        if len(self.import_eur_kwh) != len(self.export_eur_kwh):
            raise ValueError("import_eur_kwh and export_eur_kwh must cover the same PTUs")
        return self


class PPlan(Series):
    """Home → aggregator: the home's expected net import per PTU (kW, negative = export).
    `revision` grows with each re-plan; the aggregator keeps the highest it received."""

    round: ID
    net_kw: list[Kw]
    revision: int = Field(ge=0)

    @model_validator(mode="after")
    def _lengths(self) -> PPlan:
        self._check_series(net_kw=self.net_kw)
        return self


class OfferBlock(Payload):
    """Up to `kw` in `direction` in PTU `ptu`, for `price` €/kWh; `divisible`: any part of it
    may be taken (a heat pump turning down), else all or nothing (an appliance's run)."""

    ptu: Ptu
    direction: Direction
    kw: float = Field(gt=0, le=KW_BOUND, allow_inf_nan=False)
    price: float = Field(ge=0, le=PRICE_BOUND, allow_inf_nan=False)
    divisible: bool = True


class FlexOffer(Payload):
    """Home → aggregator (its flexibility for the round) or aggregator → DSO (against a
    request, summed over its homes)."""

    round: ID
    id: ID
    day: date
    request: ID | None = None
    blocks: list[OfferBlock] = Field(max_length=2 * 96 * 8)

    def tiers(self, direction: Direction = Direction.UP) -> dict[str, tuple[float, bool]]:
        """The offer's tiers, by id: each (price, divisible) among its blocks in `direction`,
        in ascending order, numbered `<offer id>.<n>`. An order names the tier it takes."""
        keys = sorted({(b.price, b.divisible) for b in self.blocks if b.direction == direction})
        return {f"{self.id}.{n}": key for n, key in enumerate(keys)}


class FlexRequest(Payload):
    """DSO → aggregator: change the congestion point's net load by `profile_kw` per PTU in
    `direction`, paying at most `max_price` €/kWh; offers are due by `answer_by`."""

    round: ID
    id: ID
    day: date
    congestion_point: ID
    direction: Direction = Direction.UP
    profile_kw: dict[Ptu, Annotated[float, Field(gt=0, le=KW_BOUND, allow_inf_nan=False)]]
    max_price: float = Field(ge=0, le=PRICE_BOUND, allow_inf_nan=False)
    answer_by: float


class FlexOrder(Payload):
    """Buyer → seller: deliver `profile_kw` per PTU in `direction` at `price` €/kWh, against
    `offer`: the offer's id, or one of its tiers' (`FlexOffer.tiers`). The seller acknowledges
    and re-plans within it."""

    round: ID
    id: ID
    day: date
    offer: ID
    direction: Direction
    profile_kw: dict[Ptu, Annotated[float, Field(ge=0, le=KW_BOUND, allow_inf_nan=False)]]
    price: float = Field(ge=0, le=PRICE_BOUND, allow_inf_nan=False)


class DPrognosis(Series):
    """Aggregator → DSO: the summed net load of its homes at one congestion point (kW per
    PTU); never a home's own series."""

    round: ID
    congestion_point: ID
    net_kw: list[Kw]
    homes: int = Field(ge=0, description="how many homes the sum covers")

    @model_validator(mode="after")
    def _lengths(self) -> DPrognosis:
        self._check_series(net_kw=self.net_kw)
        return self


class ForecastRequest(Payload):
    """To the forecaster: which series for which day."""

    day: date
    series: list[Literal["pv", "load"]] = Field(min_length=1, max_length=2)
    site: ID | None = Field(None, description="a site the forecaster knows; default the sender's")


class Forecast(Series):
    """From the forecaster: per-PTU mean kW of each series asked for."""

    pv_kw: list[Kw] | None = None
    load_kw: list[Kw] | None = None

    @model_validator(mode="after")
    def _lengths(self) -> Forecast:
        self._check_series(pv_kw=self.pv_kw, load_kw=self.load_kw)
        return self


class Settlement(Payload):
    """Buyer → seller, after the day: what an order delivered and what it earns."""

    order: ID
    day: date
    delivered_kwh: float = Field(ge=0, allow_inf_nan=False)
    shortfall_kwh: float = Field(ge=0, allow_inf_nan=False)
    payment_eur: float = Field(allow_inf_nan=False)
    penalty_eur: float = Field(ge=0, allow_inf_nan=False)


class Metered(Series):
    """Aggregator → DSO, after the day: the metered net import of its homes at one congestion
    point, summed (kWh per PTU from `first_ptu` on, negative = export), for the PTUs of the
    DSO's orders of the day; never a home's own series. `homes` counts the homes summed: those
    whose P-plans made the D-prognosis the orders were bought on."""

    congestion_point: ID
    net_kwh: list[Kwh]
    homes: int = Field(ge=1, description="how many homes the sum covers")

    @model_validator(mode="after")
    def _lengths(self) -> Metered:
        self._check_series(net_kwh=self.net_kwh)
        return self

    def kwh(self) -> dict[int, float]:
        """PTU of the day → kWh."""
        return {self.first_ptu + n: v for n, v in enumerate(self.net_kwh)}


class Ack(Payload):
    """The answer to a message (the envelope's in_reply_to names it): taken, or refused with
    why. Handling is idempotent, so the same message acknowledged twice is answered alike."""

    status: Literal["ok", "refused"]
    detail: str = Field("", max_length=500)


class SecurityEvent(Payload):
    """A refusal an agent saw, reported to the security service."""

    kind: str = Field(max_length=64)
    source: str = Field(max_length=200)
    detail: str = Field(max_length=1000)


MESSAGES: dict[str, type[Payload]] = {
    "prices": Prices,
    "p-plan": PPlan,
    "flex-offer": FlexOffer,
    "flex-request": FlexRequest,
    "flex-order": FlexOrder,
    "d-prognosis": DPrognosis,
    "forecast-request": ForecastRequest,
    "forecast": Forecast,
    "settlement": Settlement,
    "metered": Metered,
    "ack": Ack,
    "security-event": SecurityEvent,
}
TYPE_OF: dict[type[Payload], str] = {cls: name for name, cls in MESSAGES.items()}


def encode(message: Payload) -> tuple[str, bytes]:
    """(type, payload bytes) for an envelope."""
    return TYPE_OF[type(message)], message.encode()


def decode(type: str, payload: bytes) -> Payload:
    """The message of `type` in `payload`, or MessageError naming the field."""
    cls = MESSAGES.get(type)
    if cls is None:
        raise MessageError(type, "type", f"no such message type; known: {', '.join(MESSAGES)}")
    if len(payload) > MAX_BYTES:
        raise MessageError(type, "payload", f"{len(payload)} bytes, more than {MAX_BYTES}")
    try:
        raw: Any = json.loads(payload, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MessageError(type, "payload", f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise MessageError(type, "payload", "not a JSON object")
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "payload"
        raise MessageError(type, field, err["msg"]) from None


def _no_constant(name: str) -> float:
    # JSON has no NaN or Infinity; Python's parser accepts them unless told not to
    raise ValueError(f"{name} is not a JSON number")
