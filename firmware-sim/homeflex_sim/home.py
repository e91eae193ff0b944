"""A simulated home: its loads, meter and Modbus register devices, advanced in fixed steps.

Each step advances every load over [t, t + dt), lets the meter count the energy, then refreshes
the registers of every device in the same call, so a client never reads a half-updated device.
"""

from __future__ import annotations

from typing import Any

from homeflex_sim.faults import Fault
from homeflex_sim.homefile import (
    BatterySpec,
    DeviceSpec,
    EvChargerSpec,
    HeatPumpSpec,
    HomeSpec,
    MeterSpec,
    PvSpec,
)
from homeflex_sim.loads import SimLoad
from homeflex_sim.physics.base_load import BaseLoad
from homeflex_sim.physics.battery import Battery
from homeflex_sim.physics.ev import EvCharger, Visit
from homeflex_sim.physics.heat_pump import HeatPump
from homeflex_sim.physics.meter import Meter
from homeflex_sim.physics.pv import PvInverter
from homeflex_sim.physics.weather import Weather
from homeflex_sim.register_device import RegisterDevice
from homeflex_sim.templates import load_template

INTERVAL_S = 900  # the meter's load-profile interval: one PTU


def _seconds_of_day(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 3600 + int(minutes) * 60


class Home:
    """The physics of one home at simulated time `t` (the end of the last step)."""

    def __init__(self, spec: HomeSpec, t0: float, zigbee: Any = None) -> None:
        """`zigbee`: a ZigbeeNetwork (or None); its loads join the meter's sum."""
        self.spec = spec
        self.t = t0
        self.dt = float(spec.step_s)
        self.zigbee = zigbee
        site = spec.site
        self.weather = Weather(
            mean_c=spec.weather.outdoor_mean_c,
            amplitude_c=spec.weather.outdoor_amplitude_c,
            cloudiness=spec.weather.cloudiness,
            utc_offset_h=site.utc_offset_h,
            seed=spec.seed,
        )
        self.base = BaseLoad(
            name="base",
            annual_kwh=spec.base_load.annual_kwh,
            utc_offset_h=site.utc_offset_h,
            seed=spec.seed,
        )
        self.physics: dict[str, Any] = {}
        meter_spec: MeterSpec | None = None
        for dev in spec.devices:
            if isinstance(dev, MeterSpec):
                meter_spec = dev
            else:
                self.physics[dev.id] = self._build(dev)
        self.loads: list[SimLoad] = [self.base, *self.physics.values()]
        if zigbee is not None:
            self.loads.extend(zigbee.loads)
        names = [load.name for load in self.loads]
        if len(set(names)) != len(names):
            raise ValueError(f"load names must be unique, got {sorted(names)}")
        unknown = sorted(set(spec.phases) - set(names))
        if unknown:
            raise ValueError(
                f"phases: {', '.join(unknown)} is not a load of this home "
                f"(loads: {', '.join(names)})"
            )
        assert meter_spec is not None  # HomeSpec checks there is exactly one
        self.meter = Meter(name=meter_spec.id, loads=self.loads, phase_of=dict(spec.phases))
        self.physics[meter_spec.id] = self.meter
        self.devices: dict[str, RegisterDevice] = {}
        for dev in spec.devices:
            template = load_template(dev.modbus.template)
            if template.kind != dev.kind:
                raise ValueError(
                    f"device {dev.id}: template {template.name} is for a {template.kind}, "
                    f"not a {dev.kind}"
                )
            device = RegisterDevice(dev.id, template, self.physics[dev.id], dev.modbus.unit)
            for fault in dev.faults:
                device.set_fault(Fault(fault.fault, fault.code))
            self.devices[dev.id] = device
        self.refresh()

    def _build(self, dev: DeviceSpec) -> Any:
        site = self.spec.site
        if isinstance(dev, PvSpec):
            return PvInverter(
                name=dev.id,
                kwp=dev.kwp,
                rated_w=dev.rated_w or dev.kwp * 1000.0,
                tilt=dev.tilt,
                azimuth=dev.azimuth,
                latitude=site.latitude,
                longitude=site.longitude,
                weather=self.weather,
            )
        if isinstance(dev, BatterySpec):
            return Battery(
                name=dev.id,
                capacity_wh=dev.capacity_wh,
                soc_pct=dev.soc_pct,
                max_charge_w=dev.max_charge_w,
                max_discharge_w=dev.max_discharge_w,
                charge_efficiency=dev.charge_efficiency,
                discharge_efficiency=dev.discharge_efficiency,
                soc_min_pct=dev.soc_min_pct,
                soc_max_pct=dev.soc_max_pct,
            )
        if isinstance(dev, HeatPumpSpec):
            return HeatPump(
                name=dev.id,
                rated_power_w=dev.rated_power_w,
                room_setpoint_c=dev.room_setpoint_c,
                hysteresis_c=dev.hysteresis_c,
                raised_setpoint_k=dev.raised_setpoint_k,
                flow_max_c=dev.flow_max_c,
                house_ua_w_k=dev.house_ua_w_k,
                house_capacity_kj_k=dev.house_capacity_kj_k,
                emitter_ua_w_k=dev.emitter_ua_w_k,
                water_capacity_kj_k=dev.water_capacity_kj_k,
                room_temp_c=dev.room_temp_c,
                weather=self.weather,
            )
        if isinstance(dev, EvChargerSpec):
            visits = [
                Visit(
                    arrive_s=_seconds_of_day(v.arrive),
                    leave_s=_seconds_of_day(v.leave),
                    soc_pct=v.soc_pct,
                    capacity_wh=v.capacity_wh,
                )
                for v in dev.visits
            ]
            return EvCharger(
                name=dev.id,
                visits=visits,
                max_current_a=dev.max_current_a,
                setpoint_a=dev.setpoint_a,
                utc_offset_h=site.utc_offset_h,
                phases=1 if dev.id in self.spec.phases else 3,
            )
        raise AssertionError(f"no physics for {dev.kind}")

    def step(self) -> None:
        """Advance everything by one step and refresh all registers to the new time."""
        t, dt = self.t, self.dt
        for load in self.loads:
            load.step(t, dt)
        self.meter.integrate(dt)
        self.t = t + dt
        if self.t % INTERVAL_S == 0:
            self.meter.close_interval(self.t)
        if self.zigbee is not None:
            self.zigbee.after_step(self.t)
        self.refresh()

    def refresh(self) -> None:
        for device in self.devices.values():
            device.refresh(self.t)

    def state(self) -> dict[str, Any]:
        """A snapshot of the physics: every device's register values plus the loads' power."""
        devices: dict[str, Any] = {}
        for dev_id, device in self.devices.items():
            values: dict[str, Any] = {
                r.name: device.value(r.name) for r in device.template.registers
            }
            values["fault"] = device.fault.kind if device.fault else None
            devices[dev_id] = values
        return {
            "sim_time": self.t,
            "loads_w": {load.name: load.power_w for load in self.loads},
            "devices": devices,
        }
