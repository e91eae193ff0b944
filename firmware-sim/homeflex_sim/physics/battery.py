"""A home battery: follows a power setpoint (+charge/−discharge) within its power and SoC limits."""

from __future__ import annotations


class Battery:
    """A SimLoad; `import_wh`/`export_wh` count AC energy charged/discharged."""

    def __init__(
        self,
        *,
        name: str,
        capacity_wh: float,
        soc_pct: float,
        max_charge_w: float,
        max_discharge_w: float,
        charge_efficiency: float,
        discharge_efficiency: float,
        soc_min_pct: float,
        soc_max_pct: float,
    ) -> None:
        self.name = name
        self.capacity_wh = capacity_wh
        self.stored_wh = capacity_wh * soc_pct / 100.0  # energy in the cells
        self.max_charge_w = max_charge_w
        self.max_discharge_w = max_discharge_w
        self.charge_efficiency = charge_efficiency
        self.discharge_efficiency = discharge_efficiency
        self.soc_min_pct = soc_min_pct
        self.soc_max_pct = soc_max_pct
        self.setpoint_w = 0.0
        self.power_w = 0.0
        self.import_wh = 0.0
        self.export_wh = 0.0

    @property
    def soc_pct(self) -> float:
        return 100.0 * self.stored_wh / self.capacity_wh

    def set_setpoint_w(self, value: float) -> None:
        if not -self.max_discharge_w <= value <= self.max_charge_w:
            raise ValueError(
                f"setpoint {value:g} W is outside -{self.max_discharge_w:g}..{self.max_charge_w:g}"
            )
        self.setpoint_w = value

    def step(self, t: float, dt: float) -> None:
        hours = dt / 3600.0
        p = self.setpoint_w
        if p > 0:
            room_wh = max(0.0, self.capacity_wh * self.soc_max_pct / 100.0 - self.stored_wh)
            p = min(p, room_wh / (self.charge_efficiency * hours))
            self.stored_wh += p * hours * self.charge_efficiency
            self.import_wh += p * hours
        elif p < 0:
            left_wh = max(0.0, self.stored_wh - self.capacity_wh * self.soc_min_pct / 100.0)
            p = -min(-p, left_wh * self.discharge_efficiency / hours)
            self.stored_wh += p * hours / self.discharge_efficiency
            self.export_wh -= p * hours
        self.power_w = p
