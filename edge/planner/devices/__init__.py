"""Device kinds the planner knows: for each a spec (pydantic, `kind` names it) and a builder that
adds the device to the shared model. Adding a kind is a module here and a line in each table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from homeflex.edge.planner.devices.appliance import ApplianceSpec, build_appliance
from homeflex.edge.planner.model import Extract, PlanModel

# One kind is not a union yet; with more: `Annotated[A | B, Field(discriminator="kind")]`.
DeviceSpec = ApplianceSpec

BUILDERS: dict[str, Callable[[Any, PlanModel], Extract]] = {
    "appliance": build_appliance,
}


def build(spec: Any, model: PlanModel) -> Extract:
    return BUILDERS[spec.kind](spec, model)
