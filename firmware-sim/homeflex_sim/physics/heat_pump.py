"""A heat pump heating a house: a two-node thermal model (room, emitter water), COP from the
temperature lift, SG-Ready modes 1..4 or a power setpoint that overrides them."""

from __future__ import annotations

from homeflex_sim.physics.weather import Weather

CARNOT_SHARE = 0.45  # real COP as a share of the Carnot COP
COP_RANGE = (1.5, 6.0)


class HeatPump:
    """A SimLoad (fixed-speed compressor under SG-Ready, variable power under a setpoint)."""

    def __init__(
        self,
        *,
        name: str,
        rated_power_w: float,
        room_setpoint_c: float,
        hysteresis_c: float,
        raised_setpoint_k: float,
        flow_max_c: float,
        house_ua_w_k: float,
        house_capacity_kj_k: float,
        emitter_ua_w_k: float,
        water_capacity_kj_k: float,
        room_temp_c: float,
        weather: Weather,
    ) -> None:
        self.name = name
        self.rated_power_w = rated_power_w
        self.room_setpoint_c = room_setpoint_c
        self.hysteresis_c = hysteresis_c
        self.raised_setpoint_k = raised_setpoint_k
        self.flow_max_c = flow_max_c
        self.house_ua_w_k = house_ua_w_k
        self.house_capacity_j_k = house_capacity_kj_k * 1000.0
        self.emitter_ua_w_k = emitter_ua_w_k
        self.water_capacity_j_k = water_capacity_kj_k * 1000.0
        self.weather = weather
        self.room_temp_c = room_temp_c
        self.flow_temp_c = room_temp_c
        self.outdoor_temp_c = weather.outdoor_temp_c(0.0)
        self.sg_ready_mode = 2.0
        self.setpoint_w = 0.0
        self.compressor_on = 0.0
        self.cop = 0.0
        self.heat_w = 0.0
        self.power_w = 0.0
        self.import_wh = 0.0

    def set_sg_ready_mode(self, value: float) -> None:
        if value not in (1, 2, 3, 4):
            raise ValueError(f"SG-Ready mode {value:g} is not one of 1, 2, 3, 4")
        self.sg_ready_mode = value

    def set_setpoint_w(self, value: float) -> None:
        if not 0.0 <= value <= self.rated_power_w:
            raise ValueError(f"power setpoint {value:g} W is outside 0..{self.rated_power_w:g}")
        self.setpoint_w = value

    def step(self, t: float, dt: float) -> None:
        self.outdoor_temp_c = self.weather.outdoor_temp_c(t)
        power = self._electric_power()
        if self.flow_temp_c >= self.flow_max_c:
            power = 0.0  # the safety cut-out beats every mode and setpoint
        self.compressor_on = 1.0 if power > 0 else 0.0
        lift = max(5.0, self.flow_temp_c - self.outdoor_temp_c)
        carnot = (self.flow_temp_c + 273.15) / lift
        self.cop = min(COP_RANGE[1], max(COP_RANGE[0], CARNOT_SHARE * carnot))
        self.heat_w = power * self.cop
        to_room_w = self.emitter_ua_w_k * (self.flow_temp_c - self.room_temp_c)
        loss_w = self.house_ua_w_k * (self.room_temp_c - self.outdoor_temp_c)
        self.flow_temp_c += (self.heat_w - to_room_w) * dt / self.water_capacity_j_k
        self.room_temp_c += (to_room_w - loss_w) * dt / self.house_capacity_j_k
        self.power_w = power
        self.import_wh += power * dt / 3600.0

    def _electric_power(self) -> float:
        if self.setpoint_w > 0:
            return self.setpoint_w
        mode = self.sg_ready_mode
        if mode == 1:
            return 0.0
        if mode == 4:
            return self.rated_power_w
        target = self.room_setpoint_c + (self.raised_setpoint_k if mode == 3 else 0.0)
        if self.room_temp_c < target - self.hysteresis_c:
            return self.rated_power_w
        if self.room_temp_c > target + self.hysteresis_c:
            return 0.0
        return self.rated_power_w if self.compressor_on else 0.0
