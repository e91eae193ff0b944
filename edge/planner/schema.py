"""The planner command's file formats as JSON Schema, so that other tools can call the planner:
what it reads (`PlanInputs`) and what it prints (the plan with its KPIs). The exported copies in
docs/schema/ are checked against these by the tests."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from homeflex.edge.planner.inputs import PlanInputs
from homeflex.edge.planner.kpi import DayKpis
from homeflex.edge.planner.planner import Plan

SCHEMAS = {"inputs": "plan-inputs.schema.json", "plan": "plan.schema.json"}


def inputs_schema() -> dict[str, Any]:
    return PlanInputs.model_json_schema()


def plan_schema() -> dict[str, Any]:
    schema = TypeAdapter(Plan).json_schema(mode="serialization")
    schema["description"] = "What `homeflex edge plan` prints: the plan, its cost and its KPIs."
    schema["properties"]["start"] = {
        "type": "string",
        "format": "date-time",
        "description": "start of the first PTU (UTC)",
    }
    days = TypeAdapter(list[DayKpis]).json_schema(mode="serialization")
    schema["$defs"].update(days.pop("$defs"))
    schema["properties"]["kpis"] = {
        "type": "object",
        "description": "KPIs per day of the plan and of the baseline (no planner)",
        "properties": {"plan": days, "baseline": days},
        "required": ["plan", "baseline"],
    }
    return schema


def schema(name: str) -> dict[str, Any]:
    return {"inputs": inputs_schema, "plan": plan_schema}[name]()
