"""An EV charger and the car that visits it on a daily schedule; charging stops when the car is
full or leaves."""

from __future__ import annotations

from dataclasses import dataclass

VOLTAGE_V = 230.0
MIN_CURRENT_A = 6.0  # IEC 61851: below 6 A a car cannot charge; 0 pauses
CAR_EFFICIENCY = 0.92  # share of AC energy that reaches the car's battery


@dataclass(frozen=True)
class Visit:
    """The car is plugged in daily from `arrive_s` to `leave_s` (local seconds of the day; a visit
    over midnight has leave_s < arrive_s) and arrives with `soc_pct`."""

    arrive_s: int
    leave_s: int
    soc_pct: float
    capacity_wh: float

    def covers(self, second_of_day: float) -> bool:
        if self.arrive_s <= self.leave_s:
            return self.arrive_s <= second_of_day < self.leave_s
        return second_of_day >= self.arrive_s or second_of_day < self.leave_s


class EvCharger:
    """A SimLoad on three phases, or on one where the home's `phases` names it; `import_wh` counts
    the energy delivered."""

    def __init__(
        self,
        *,
        name: str,
        visits: list[Visit],
        max_current_a: float,
        setpoint_a: float,
        utc_offset_h: float,
        phases: int = 3,
    ) -> None:
        self.name = name
        self.phases = phases
        self.visits = visits
        self.max_current_a = max_current_a
        self.utc_offset_h = utc_offset_h
        self.setpoint_a = 0.0
        self.set_setpoint_a(setpoint_a)
        self.ev_connected = 0.0
        self.car_capacity_wh = 0.0
        self.car_wh = 0.0
        self.power_w = 0.0
        self.current_a = 0.0
        self.import_wh = 0.0
        self._visit: Visit | None = None

    @property
    def car_soc_pct(self) -> float:
        return 100.0 * self.car_wh / self.car_capacity_wh if self.car_capacity_wh else 0.0

    def set_setpoint_a(self, value: float) -> None:
        if value != 0 and not MIN_CURRENT_A <= value <= self.max_current_a:
            raise ValueError(
                f"current {value:g} A is neither 0 nor within "
                f"{MIN_CURRENT_A:g}..{self.max_current_a:g}"
            )
        self.setpoint_a = value

    def step(self, t: float, dt: float) -> None:
        second = (t + self.utc_offset_h * 3600.0) % 86400.0
        visit = next((v for v in self.visits if v.covers(second)), None)
        if visit is not self._visit:
            self._visit = visit
            self.car_capacity_wh = visit.capacity_wh if visit else 0.0
            self.car_wh = visit.capacity_wh * visit.soc_pct / 100.0 if visit else 0.0
        self.ev_connected = 1.0 if visit else 0.0
        hours = dt / 3600.0
        p = self.setpoint_a * VOLTAGE_V * self.phases if visit else 0.0
        room_wh = self.car_capacity_wh - self.car_wh
        p = min(p, room_wh / (CAR_EFFICIENCY * hours)) if room_wh > 1e-6 else 0.0
        self.car_wh += p * hours * CAR_EFFICIENCY
        self.power_w = p
        self.current_a = p / (VOLTAGE_V * self.phases)
        self.import_wh += p * hours
