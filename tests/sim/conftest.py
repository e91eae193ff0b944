"""Helpers for the simulator's own tests: small homes built in code, stepped directly or served."""

from __future__ import annotations

import datetime as dt
from typing import Any

import yaml

from homeflex_sim.homefile import HomeSpec, parse_home

WINTER = dt.datetime(2025, 1, 15, tzinfo=dt.UTC).timestamp()
SUMMER = dt.datetime(2025, 6, 21, tzinfo=dt.UTC).timestamp()


def home_spec(*devices: dict[str, Any], **top: Any) -> HomeSpec:
    """A home with a meter (port 0) and the given extra devices."""
    data: dict[str, Any] = {
        "name": "test",
        "seed": 3,
        "devices": [
            {
                "id": "meter",
                "kind": "meter",
                "modbus": {"port": 0, "unit": 1, "template": "meter-3ph"},
            },
            *devices,
        ],
        **top,
    }
    return parse_home(yaml.safe_dump(data), "test.yaml")


def pv(**kw: Any) -> dict[str, Any]:
    return {
        "id": "pv",
        "kind": "pv",
        "kwp": 4.0,
        "modbus": {"port": 0, "unit": 1, "template": "pv-inverter"},
        **kw,
    }


def battery(**kw: Any) -> dict[str, Any]:
    return {
        "id": "battery",
        "kind": "battery",
        "capacity_wh": 10000,
        "modbus": {"port": 0, "unit": 1, "template": "home-battery"},
        **kw,
    }


def heat_pump(**kw: Any) -> dict[str, Any]:
    return {
        "id": "hp",
        "kind": "heat_pump",
        "modbus": {"port": 0, "unit": 1, "template": "heat-pump"},
        **kw,
    }


def ev(**kw: Any) -> dict[str, Any]:
    return {
        "id": "ev",
        "kind": "ev_charger",
        "visits": [{"arrive": "18:00", "leave": "07:00", "soc_pct": 50, "capacity_wh": 40000}],
        "modbus": {"port": 0, "unit": 1, "template": "ev-charger"},
        **kw,
    }
