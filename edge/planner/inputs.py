"""What the planner is given: the horizon, prices, forecasts, the grid connection, the devices and
the neighbourhood's requests. Pydantic models, so the same shapes are the planner command's file
format (and its JSON Schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from homeflex.clock import PTU_SECONDS
from homeflex.edge.planner.devices import DeviceSpec
from homeflex.edge.planner.forecast import resample


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Series = Annotated[list[float], Field(min_length=1)]


class Grid(Strict):
    import_limit_w: float = Field(17_250, gt=0, description="connection: 25 A × 3 × 230 V")
    export_limit_w: float = Field(17_250, ge=0)


class Request(Strict):
    """UC1-S4: the neighbourhood asks to keep the home's net power (W, + import) below
    `max_net_w` or above `min_net_w` during [start, end). A request that cannot be met is
    refused with the reason, never silently broken."""

    kind: ClassVar[str] = "request"
    id: str
    start: datetime
    end: datetime
    max_net_w: float | None = None
    min_net_w: float | None = None

    @model_validator(mode="after")
    def _bounds(self) -> Request:
        if self.max_net_w is None and self.min_net_w is None:
            raise ValueError("give max_net_w (reduce, cap) or min_net_w (increase)")
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class FlexOrder(Request):
    """A flexibility order the aggregator placed and the home accepted (USEF FlexOrder): its
    bounds on net power bind every plan made before `expires` (default: its end). Missing one is
    costlier than missing a request: it was sold."""

    kind: ClassVar[str] = "order"
    price_eur: float = Field(0.0, description="what the aggregator pays for it")
    expires: datetime | None = None

    def binds(self, plan_start: datetime) -> bool:
        return plan_start < (self.expires or self.end)


class PreviousPlan(Strict):
    """The net power of the plan in force, so that a new plan changes it only where that pays."""

    start: datetime
    net_w: Series

    def at(self, instant: datetime) -> float | None:
        """Net power planned for the PTU starting at `instant`, if the plan covered it."""
        t = (instant - self.start).total_seconds() / PTU_SECONDS
        return self.net_w[int(t)] if t == int(t) and 0 <= t < len(self.net_w) else None


class PlanInputs(Strict):
    start: datetime = Field(description="first PTU of the plan (aligned to 15 minutes)")
    ptus: int = Field(96, ge=1, le=672)
    import_price: Series = Field(description="€/kWh per PTU")
    export_price: Series = Field(description="€/kWh per PTU")
    base_load_w: Series = Field(description="forecast of the load nobody steers, W per PTU")
    grid: Grid = Grid()
    devices: list[DeviceSpec] = []
    requests: list[Request] = []
    orders: list[FlexOrder] = []
    previous: PreviousPlan | None = None
    change_penalty_eur_per_kwh: float = Field(
        0.002,
        ge=0,
        description="per kWh of net power moved away from the previous plan: the P-plan changes "
        "only when that saves more",
    )
    series_step_s: Literal[900, 1800, 3600] = Field(
        900,
        description="step of import_price, export_price and base_load_w as given; 30- and "
        "60-minute series are resampled to 15-minute PTUs",
    )
    time_limit_s: float = Field(5.0, gt=0)
    relative_gap: float = Field(
        0.005, ge=0, le=0.5, description="stop when the plan is proven this close to the optimum"
    )
    absolute_gap_eur: float = Field(
        0.01, ge=0, description="… or this close in €, whichever comes first"
    )

    def net_bounds(self) -> list[Request]:
        """The bounds on the home's net power this plan must keep: the orders still binding, then
        the requests."""
        return [o for o in self.orders if o.binds(self.start)] + list(self.requests)

    @model_validator(mode="before")
    @classmethod
    def _resample(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("series_step_s", 900) != 900:
            step = int(data["series_step_s"])
            data = {**data, "series_step_s": 900}
            for name in ("import_price", "export_price", "base_load_w"):
                if isinstance(data.get(name), list):
                    data[name] = resample(data[name], step)
        return data

    @model_validator(mode="after")
    def _lengths(self) -> PlanInputs:
        if self.start.timestamp() % PTU_SECONDS:
            raise ValueError("start must be on a PTU boundary (a multiple of 15 minutes)")
        for name in ("import_price", "export_price", "base_load_w"):
            if len(getattr(self, name)) != self.ptus:
                raise ValueError(f"{name} has {len(getattr(self, name))} values, need {self.ptus}")
        ids = [d.id for d in self.devices]
        if len(ids) != len(set(ids)):
            raise ValueError("device ids must be unique")
        ids = [r.id for r in [*self.requests, *self.orders]]
        if len(ids) != len(set(ids)):
            raise ValueError("request and order ids must be unique")
        return self
