"""The homeowner's own choices, set on the web page and kept in `<data_dir>/preferences.json`:
what the planner must respect for each device (the EV's ready-by time and charge, the comfort
band, the appliances' finish-by times, the battery's reserve), whether the home takes part in
the neighbourhood, and which data may leave the house.

gateway.yaml holds the installer's values; a preference, once set, takes their place. A change is
checked with the device's own rules (the same checks as the config file) before it is kept: a
value the planner cannot take is refused with the field and the reason, and the last good
preferences stay in force and on disk.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import date, time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from homeflex.edge.home import (
    ApplianceConfig,
    BatteryConfig,
    ComfortBand,
    EvConfig,
    HeatPumpConfig,
    HomeConfig,
)

log = logging.getLogger(__name__)
FILE = "preferences.json"
MAX_SKIPPED_DAYS = 366


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EvChoice(Strict):
    ready_by: time = Field(description="local time the car must be charged by")
    energy_needed_wh: float = Field(ge=0, le=200_000, description="energy into the car, Wh")


class ApplianceChoice(Strict):
    finish_by: time = Field(description="local time the cycle must be done by")


class ComfortChoice(Strict):
    comfort: list[ComfortBand] = Field(min_length=1, max_length=12)


class BatteryChoice(Strict):
    soc_min_pct: float = Field(ge=0, le=100, description="reserve kept for a power cut, %")


DeviceChoice = EvChoice | ApplianceChoice | ComfortChoice | BatteryChoice
CHOICES: dict[type[BaseModel], type[DeviceChoice]] = {
    EvConfig: EvChoice,
    ApplianceConfig: ApplianceChoice,
    HeatPumpConfig: ComfortChoice,
    BatteryConfig: BatteryChoice,
}


class Neighbourhood(Strict):
    """Taking part in the aggregator's rounds, and consent to what leaves the house. Without
    consent to share the plan the home cannot take part: the aggregator values and settles
    flexibility against it."""

    take_part: bool = Field(True, description="offer flexibility to the aggregator")
    skip_days: list[date] = Field([], max_length=MAX_SKIPPED_DAYS, description="not these days")
    share_plan: bool = Field(True, description="send the home's next-day plan to the aggregator")
    share_telemetry: bool = Field(True, description="send meter readings to the cloud")

    def takes_part(self, day: date) -> str | None:
        """None when the home takes part on `day`; else why not, in the owner's words."""
        if not self.share_plan:
            return "the owner does not consent to sharing the home's plan"
        if not self.take_part:
            return "the owner does not take part in the neighbourhood"
        if day in self.skip_days:
            return f"the owner does not take part on {day.isoformat()}"
        return None


class Preferences(Strict):
    devices: dict[str, dict[str, Any]] = Field(
        {}, description="device id → the choices that replace gateway.yaml's values"
    )
    neighbourhood: Neighbourhood = Neighbourhood()


class PreferenceError(ValueError):
    """A choice the planner cannot take; the message names the device, the field and why."""


def editable(device: BaseModel) -> type[DeviceChoice] | None:
    """The owner's choices for a planned device, or None when it has none (PV)."""
    return next((c for cfg, c in CHOICES.items() if isinstance(device, cfg)), None)


def choice_of(device: BaseModel) -> DeviceChoice | None:
    """The device's current values of what the owner may choose."""
    kind = editable(device)
    if kind is None:
        return None
    return kind.model_validate({k: getattr(device, k) for k in kind.model_fields})


def apply(home: HomeConfig, prefs: Preferences) -> HomeConfig:
    """The home's config with the owner's choices in place; PreferenceError when one does not
    fit (unknown device, a field it does not have, a value the device's rules refuse)."""
    by_id = {d.id: d for d in home.devices}
    devices = list(home.devices)
    for dev_id, values in prefs.devices.items():
        device = by_id.get(dev_id)
        kind = editable(device) if device is not None else None
        if device is None or kind is None:
            raise PreferenceError(f"{dev_id}: not a device whose plan the owner can set")
        try:
            choice = kind.model_validate(values)
            merged = type(device).model_validate({**device.model_dump(), **choice.model_dump()})
        except ValidationError as exc:
            raise PreferenceError(f"{dev_id}: {_words(exc)}") from None
        devices[devices.index(device)] = merged
    return home.model_copy(update={"devices": devices})


def _words(exc: ValidationError) -> str:
    def words(e: Any) -> str:
        msg = str(e["msg"]).replace("Value error, ", "")
        return f"{'.'.join(map(str, e['loc']))}: {msg}" if e["loc"] else msg

    return "; ".join(words(e) for e in exc.errors())


class PreferenceFile:
    """`preferences.json` in the data directory, written atomically (0600: it says when the
    owner is away). A file that cannot be read is reported and left in place: nothing the owner
    chose is thrown away, and the installer's values hold until it is fixed."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / FILE
        self.error = ""

    def load(self) -> Preferences:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return Preferences()
        except OSError as exc:
            return self._unusable(f"cannot be read ({exc.strerror})")
        try:
            return Preferences.model_validate(json.loads(text))
        except json.JSONDecodeError as exc:
            return self._unusable(f"line {exc.lineno}: {exc.msg}")
        except ValidationError as exc:
            return self._unusable(_words(exc))

    def _unusable(self, why: str) -> Preferences:
        self.error = f"{self.path}: {why}; the installer's settings are used until it is fixed"
        log.error("preferences: %s", self.error)
        return Preferences()

    def save(self, prefs: Preferences) -> None:
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(prefs.model_dump_json(indent=1))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self.error = ""
