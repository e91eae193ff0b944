"""A shiftable appliance (washing machine, dishwasher): a fixed power profile that must run
uninterrupted, starting no earlier than `earliest_start` and finishing by `latest_finish`."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from homeflex.edge.planner.model import DeviceSchedule, Extract, PlanModel


class ApplianceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["appliance"] = "appliance"
    id: str
    profile_w: list[float] = Field(min_length=1, description="mean power in each PTU of the cycle")
    earliest_start: datetime
    latest_finish: datetime
    preferred_start: datetime | None = Field(
        None, description="when the user would start it; the baseline runs it then"
    )

    @model_validator(mode="after")
    def _window(self) -> ApplianceSpec:
        if self.latest_finish <= self.earliest_start:
            raise ValueError(f"{self.id}: latest_finish must be after earliest_start")
        if any(p < 0 for p in self.profile_w):
            raise ValueError(f"{self.id}: profile_w must not be negative")
        return self


def start_options(spec: ApplianceSpec, m: PlanModel) -> list[int]:
    """PTUs in which the cycle may start so that it ends inside the window and the horizon."""
    first = m.index(spec.earliest_start.timestamp() + 899)  # a start mid-PTU waits for the next
    last = m.index(spec.latest_finish.timestamp()) - len(spec.profile_w)
    last = min(last, m.ptus - len(spec.profile_w))
    return list(range(first, last + 1))


def build_appliance(spec: ApplianceSpec, m: PlanModel) -> Extract:
    options = start_options(spec, m)
    if not options:
        raise ValueError(
            f"{spec.id}: a {len(spec.profile_w)}-PTU cycle does not fit between "
            f"{spec.earliest_start:%H:%M} and {spec.latest_finish:%H:%M} within the plan"
        )
    starts = {s: m.boolean(f"{spec.id}.start[{s}]") for s in options}
    m.constrain(m.solver.Sum(list(starts.values())) == 1, f"{spec.id}.runs_once")
    for t in range(m.ptus):
        terms = [
            starts[s] * spec.profile_w[t - s]
            for s in options
            if 0 <= t - s < len(spec.profile_w) and spec.profile_w[t - s]
        ]
        if terms:
            m.add_power(t, m.solver.Sum(terms))

    def extract() -> DeviceSchedule:
        start = next(s for s, x in starts.items() if x.solution_value() > 0.5)
        power = [0.0] * m.ptus
        for k, p in enumerate(spec.profile_w):
            power[start + k] = p
        return DeviceSchedule(spec.id, power, {"start_ptu": [float(start)]})

    return extract
