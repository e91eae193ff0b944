"""Device kinds the planner knows: for each a spec (pydantic, `kind` names it) and a builder that
adds the device to the shared model. Adding a kind is a module here and a line in each table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field

from homeflex.edge.planner.devices.appliance import ApplianceSpec, build_appliance
from homeflex.edge.planner.devices.battery import BatterySpec, build_battery
from homeflex.edge.planner.devices.ev import EvSpec, build_ev
from homeflex.edge.planner.devices.heat_pump import HeatPumpSpec, build_heat_pump
from homeflex.edge.planner.devices.pv import PvSpec, build_pv
from homeflex.edge.planner.model import Extract, PlanModel

DeviceSpec = Annotated[
    ApplianceSpec | BatterySpec | EvSpec | HeatPumpSpec | PvSpec, Field(discriminator="kind")
]

BUILDERS: dict[str, Callable[[Any, PlanModel], Extract]] = {
    "appliance": build_appliance,
    "battery": build_battery,
    "ev": build_ev,
    "heat_pump": build_heat_pump,
    "pv": build_pv,
}


def build(spec: Any, model: PlanModel) -> Extract:
    return BUILDERS[spec.kind](spec, model)
