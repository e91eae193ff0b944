"""PV panels: a forecast of the AC power they can deliver per PTU; the plan produces all of it, or,
when curtailable, may produce less (worth it only when exporting would cost money)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from homeflex.edge.planner.model import DeviceSchedule, Extract, LinExpr, PlanModel

NOISE_W = 1e-3  # W: a curtailable forecast below this is noise, planned as zero


class PvSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["pv"] = "pv"
    id: str
    forecast_w: list[float] = Field(
        min_length=1, description="available AC power per PTU of the plan, W"
    )
    curtailable: bool = Field(True, description="the inverter accepts a power limit")

    @model_validator(mode="after")
    def _forecast(self) -> PvSpec:
        negative = [t for t, p in enumerate(self.forecast_w) if p < 0]
        if negative:
            t = negative[0]
            raise ValueError(
                f"{self.id}: forecast_w[{t}] = {self.forecast_w[t]} W is negative; "
                "a PV forecast is the power available, 0 or more"
            )
        return self


def build_pv(spec: PvSpec, m: PlanModel) -> Extract:
    if len(spec.forecast_w) != m.ptus:
        raise ValueError(
            f"{spec.id}: forecast_w has {len(spec.forecast_w)} values, the plan {m.ptus} PTUs"
        )
    produced: list[LinExpr | float] = []
    for t, forecast in enumerate(spec.forecast_w):
        if not spec.curtailable:
            p: LinExpr | float = forecast
        elif forecast < NOISE_W:
            # rounding noise of a forecast; as a variable's bound (1.75e-9 W) it made SCIP's
            # presolve declare the model infeasible
            p = 0.0
        else:
            p = m.num(0, forecast, f"{spec.id}.produced_w[{t}]")
        m.add_power(t, -p)
        produced.append(p)

    def extract() -> DeviceSchedule:
        out = [m.value(p) for p in produced]
        curtailed = [max(0.0, a - p) for a, p in zip(spec.forecast_w, out, strict=True)]
        return DeviceSchedule(spec.id, [-p for p in out], {"curtailed_w": curtailed})

    return extract
