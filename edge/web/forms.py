"""The Preferences and Neighbourhood forms: field names, and their values read into the owner's
choices. Each field is named `<device>.<what>`; an unreadable value raises FormError naming the
field, so the page can say which one and keep the rest of what was typed."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, time
from typing import Any

from homeflex.edge.home import ApplianceConfig, BatteryConfig, EvConfig, HeatPumpConfig
from homeflex.edge.preferences import Neighbourhood, Preferences

MAX_BANDS = 6


class FormError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def _text(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    if not isinstance(value, str):
        raise FormError(name, "missing")
    return value.strip()


def _time(form: Mapping[str, Any], name: str) -> time:
    value = _text(form, name)
    try:
        return time.fromisoformat(value)
    except ValueError:
        raise FormError(name, f"{value!r} is not a time of day such as 07:30") from None


def _number(form: Mapping[str, Any], name: str, lo: float, hi: float) -> float:
    value = _text(form, name).replace(",", ".")
    try:
        x = float(value)
    except ValueError:
        raise FormError(name, f"{value!r} is not a number") from None
    if not lo <= x <= hi:
        raise FormError(name, f"{x:g} is outside {lo:g} to {hi:g}")
    return x


def device_choices(form: Mapping[str, Any], devices: list[Any]) -> dict[str, dict[str, Any]]:
    """Each planned device's fields read into its choices (edge/preferences.py)."""
    out: dict[str, dict[str, Any]] = {}
    for d in devices:
        p = d.id
        if isinstance(d, EvConfig):
            out[p] = {
                "ready_by": _time(form, f"{p}.ready_by"),
                "energy_needed_wh": 1000 * _number(form, f"{p}.energy_kwh", 0, 200),
            }
        elif isinstance(d, ApplianceConfig):
            out[p] = {"finish_by": _time(form, f"{p}.finish_by")}
        elif isinstance(d, BatteryConfig):
            out[p] = {"soc_min_pct": _number(form, f"{p}.soc_min_pct", 0, 100)}
        elif isinstance(d, HeatPumpConfig):
            bands = []
            for i in range(MAX_BANDS):
                if not _text_or_empty(form, f"{p}.band{i}.start"):
                    continue  # an empty row: no band
                low = _number(form, f"{p}.band{i}.min", 5, 30)
                high = _number(form, f"{p}.band{i}.max", 5, 30)
                if low > high:
                    raise FormError(f"{p}.band{i}.min", f"{low:g} °C is above {high:g}")
                bands.append({"start": _time(form, f"{p}.band{i}.start"), "t_min_c": low,
                              "t_max_c": high})  # fmt: skip
            if not bands:
                raise FormError(f"{p}.band0.start", "give at least one comfort band")
            out[p] = {"comfort": bands}
    return out


def _text_or_empty(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def neighbourhood(form: Mapping[str, Any], current: Neighbourhood, today: date) -> Neighbourhood:
    """The Neighbourhood form: always / not at all / not today, and the two consents."""
    choice = _text(form, "take_part")
    skip = [d for d in current.skip_days if d >= today]  # past days drop out
    if choice == "not-today":
        skip = sorted({*skip, today})
    elif choice == "always":
        skip = [d for d in skip if d != today]
    elif choice != "never":
        raise FormError("take_part", f"{choice!r} is not one of always, not-today, never")
    return Neighbourhood(
        take_part=choice != "never",
        skip_days=skip,
        share_plan=form.get("share_plan") == "yes",
        share_telemetry=form.get("share_telemetry") == "yes",
    )


def preferences(form: Mapping[str, Any], devices: list[Any], current: Preferences) -> Preferences:
    return current.model_copy(update={"devices": device_choices(form, devices)})
