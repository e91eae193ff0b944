"""The control loop: each cycle freezes a snapshot of the readings, takes the plan's setpoints for
the PTU of now, lets controllers in priority order narrow what each device may do (safety limits
last) and returns the commands. The planner solves in a worker thread and never blocks a cycle."""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType

from homeflex.clock import PTU_SECONDS, Clock, ptu_start
from homeflex.edge.devices.capabilities import Quantity, Reading
from homeflex.edge.planner.devices.battery import BatterySpec
from homeflex.edge.planner.devices.ev import VOLTS, EvSpec
from homeflex.edge.planner.devices.heat_pump import HeatPumpSpec
from homeflex.edge.planner.fallback import fallback_plan
from homeflex.edge.planner.inputs import FlexOrder, PlanInputs, PreviousPlan, Request
from homeflex.edge.planner.planner import Plan, solve

log = logging.getLogger(__name__)

Snapshot = Mapping[tuple[str, Quantity], Reading]
SG_BLOCKED, SG_NORMAL, SG_RECOMMENDED, SG_FORCED = 1, 2, 3, 4


@dataclass(frozen=True)
class Command:
    """Set `quantity` of `device` to `value`: battery SETPOINT_W (+ charge), EV SETPOINT_A (0
    pauses), heat pump SG_READY_MODE, PV POWER_LIMIT_PCT, appliance START_DELAY_S."""

    device: str
    quantity: Quantity
    value: float


class Setpoints:
    """What each device is wanted to do this cycle, and the range the controllers leave it. A
    range only ever narrows; when a narrowing contradicts an earlier one the earlier wins (it is
    clamped to the nearest value the earlier range allows)."""

    def __init__(self) -> None:
        self.wanted: dict[str, tuple[Quantity, float]] = {}
        self.range: dict[str, tuple[float, float]] = {}

    def want(self, device: str, quantity: Quantity, value: float) -> None:
        self.wanted[device] = (quantity, value)

    def narrow(self, device: str, lo: float = -math.inf, hi: float = math.inf) -> None:
        old_lo, old_hi = self.range.get(device, (-math.inf, math.inf))
        new_lo, new_hi = max(old_lo, lo), min(old_hi, hi)
        if new_lo > new_hi:  # contradiction: keep to the earlier range, as close as it allows
            new_lo = new_hi = old_lo if hi < old_lo else old_hi
        self.range[device] = (new_lo, new_hi)

    def value(self, device: str) -> float | None:
        if device not in self.wanted:
            return None
        lo, hi = self.range.get(device, (-math.inf, math.inf))
        return min(max(self.wanted[device][1], lo), hi)

    def commands(self) -> list[Command]:
        out = []
        for device, (quantity, _) in self.wanted.items():
            value = self.value(device)
            assert value is not None
            out.append(Command(device, quantity, value))
        return out


@dataclass
class Cycle:
    """What the controllers of one cycle see and change."""

    now: float
    snapshot: Snapshot
    plan: Plan
    inputs: PlanInputs
    meter: str
    setpoints: Setpoints = field(default_factory=Setpoints)
    deferred: dict[str, float] = field(default_factory=dict)  # appliance → start already sent

    @property
    def ptu(self) -> int:
        return int((self.now - self.plan.start) // PTU_SECONDS)

    def reading(self, device: str, quantity: Quantity) -> float | None:
        r = self.snapshot.get((device, quantity))
        return None if r is None else r.value


# --- controllers, in priority order ------------------------------------------------------------


def follow_plan(c: Cycle) -> None:
    """The plan's (or the fallback's) setpoints for the PTU of now."""
    t = c.ptu
    for spec in c.inputs.devices:
        schedule = c.plan.device(spec.id)
        power = schedule.power_w[t]
        if spec.kind == "battery":
            c.setpoints.want(spec.id, Quantity.SETPOINT_W, power)
        elif isinstance(spec, EvSpec):
            amps = power / (VOLTS * spec.phases)
            if 0 < amps < spec.min_current_a:  # a part-PTU top-up: the car stops when full
                amps = spec.min_current_a
            c.setpoints.want(spec.id, Quantity.SETPOINT_A, amps)
        elif spec.kind == "heat_pump":
            mode = SG_RECOMMENDED if power > 0 else SG_BLOCKED  # comfort_band unblocks it
            c.setpoints.want(spec.id, Quantity.SG_READY_MODE, mode)
        elif spec.kind == "pv":
            available = -power + schedule.series["curtailed_w"][t]
            pct = 100.0 if available <= 0 else 100.0 * -power / available
            c.setpoints.want(spec.id, Quantity.POWER_LIMIT_PCT, pct)
        elif spec.kind == "appliance":
            start = c.plan.start + schedule.series["start_ptu"][0] * PTU_SECONDS
            if c.deferred.get(spec.id) != start and c.now < start + PTU_SECONDS:
                c.setpoints.want(spec.id, Quantity.START_DELAY_S, max(0.0, start - c.now))
                c.deferred[spec.id] = start  # sent once per planned start, not every cycle


def device_limits(c: Cycle) -> None:
    """What the hardware can do at all."""
    for spec in c.inputs.devices:
        if isinstance(spec, BatterySpec):
            c.setpoints.narrow(spec.id, -spec.max_discharge_w, spec.max_charge_w)
        elif isinstance(spec, EvSpec):
            c.setpoints.narrow(spec.id, 0.0, spec.max_current_a)
        elif spec.kind == "heat_pump":
            c.setpoints.narrow(spec.id, SG_BLOCKED, SG_FORCED)
        elif spec.kind == "pv":
            c.setpoints.narrow(spec.id, 0.0, 100.0)


def battery_reserve(c: Cycle) -> None:
    """No discharge at or below the reserve, no charge at or above the maximum (measured SoC)."""
    for spec in c.inputs.devices:
        if isinstance(spec, BatterySpec):
            soc = c.reading(spec.id, Quantity.SOC_PCT)
            if soc is not None and soc <= spec.soc_min_pct:
                c.setpoints.narrow(spec.id, lo=0.0)
            if soc is not None and soc >= spec.soc_max_pct:
                c.setpoints.narrow(spec.id, hi=0.0)


def comfort_band(c: Cycle) -> None:
    """Comfort before cost: forced on below the band, blocked above it (measured room)."""
    t = c.ptu
    for spec in c.inputs.devices:
        if isinstance(spec, HeatPumpSpec):
            room = c.reading(spec.id, Quantity.ROOM_TEMP_C)
            if room is not None and room < spec.t_min_c[t]:
                c.setpoints.narrow(spec.id, SG_FORCED, SG_FORCED)
            elif room is not None and room > spec.t_max_c[t]:
                c.setpoints.narrow(spec.id, SG_BLOCKED, SG_BLOCKED)


def connection_limit(c: Cycle) -> None:
    """When the measured import, corrected for the new EV and battery setpoints, would exceed the
    connection, take the excess first from EV charging, then from the battery (down to
    discharging, as far as the reserve allows)."""
    measured = c.reading(c.meter, Quantity.POWER_W)
    if measured is None:
        return
    expected = measured
    flexible: list[tuple[EvSpec | BatterySpec, float]] = []
    for spec in c.inputs.devices:
        value = c.setpoints.value(spec.id)
        if value is None or not isinstance(spec, EvSpec | BatterySpec):
            continue
        watts = spec.power_w(value) if isinstance(spec, EvSpec) else value
        # what the device draws now is in the meter's figure already; unmeasured counts as 0
        expected += watts - (c.reading(spec.id, Quantity.POWER_W) or 0.0)
        flexible.append((spec, watts))
    excess = expected - c.inputs.grid.import_limit_w
    for kind in (EvSpec, BatterySpec):
        for spec, watts in flexible:
            if excess <= 0 or not isinstance(spec, kind):
                continue
            if isinstance(spec, EvSpec):
                amps = (watts - excess) / (VOLTS * spec.phases)
                amps = amps if amps >= spec.min_current_a else 0.0  # below it, the car stops
                c.setpoints.narrow(spec.id, hi=amps)
            else:
                c.setpoints.narrow(spec.id, hi=watts - excess)
            after = c.setpoints.value(spec.id) or 0.0
            excess -= watts - (spec.power_w(after) if isinstance(spec, EvSpec) else after)


CONTROLLERS: list[Callable[[Cycle], None]] = [
    follow_plan,
    device_limits,
    battery_reserve,
    comfort_band,
    connection_limit,
]


class ControlLoop:
    """Cycle by cycle on the given clock. `make_inputs(now, snapshot)` builds the planner's
    inputs (prices, forecasts, device states), starting at the PTU of `now`; the loop adds the
    orders and requests it holds and the plan in force. `planner` is `solve` unless a test says
    otherwise.

    Receding horizon: a new plan every PTU, and at once when something changes (`replan`): new
    prices or forecasts (the caller says so), an order or request taken in, a car plugged in or
    out, or the meter off the plan by more than `deviation_w` for `deviation_cycles` cycles."""

    def __init__(
        self,
        clock: Clock,
        meter: str,
        make_inputs: Callable[[float, Snapshot], PlanInputs],
        planner: Callable[[PlanInputs], Plan] = solve,
        executor: Executor | None = None,
        reading_max_age_s: float = 60.0,
        device_max_age_s: Mapping[str, float] | None = None,
        deviation_w: float = 1500.0,
        deviation_cycles: int = 3,
    ) -> None:
        self.clock = clock
        self.meter = meter
        self._make_inputs = make_inputs
        self._planner = planner
        self._executor = executor or ThreadPoolExecutor(1, thread_name_prefix="planner")
        self._max_age = reading_max_age_s
        # a device polled less often than that: a few of its intervals (a reading is not stale
        # just because the next poll is not due yet)
        self._device_max_age = dict(device_max_age_s or {})
        self._latest: dict[tuple[str, Quantity], Reading] = {}
        self._solving: tuple[Future[Plan], PlanInputs, int] | None = None  # … its number
        self.solves = 0  # solves started so far
        self.plan: tuple[Plan, PlanInputs] | None = None  # the planner's latest
        self.plan_solve = 0  # … from the solve of this number (0: none yet)
        self.current: tuple[Plan, PlanInputs] | None = None  # followed in the last cycle
        self._fallback: tuple[Plan, PlanInputs] | None = None
        self._fallback_ptu = 0.0
        self._deferred: dict[str, float] = {}
        self._ptu: float | None = None
        self.last_error = ""
        self.orders: dict[str, FlexOrder] = {}
        self.requests: dict[str, Request] = {}
        self._wanted: str | None = None  # why a new plan is wanted while one is being solved
        self.replans: deque[tuple[float, str]] = deque(maxlen=100)  # (when, why), newest last
        self._deviation_w = deviation_w
        self._deviation_cycles = deviation_cycles
        self._off_plan = 0  # consecutive cycles with the meter off the plan
        self._deviation_ptu: float | None = None  # one deviation re-plan per PTU is enough
        self._connected: dict[str, float] = {}  # EV id → last EV_CONNECTED seen

    def replan(self, reason: str) -> None:
        """Something the plan depends on changed: solve again now, or as soon as the solve
        under way ends (its inputs are already old)."""
        if not self.request_plan(reason):
            self._wanted = reason

    def accept_order(self, order: FlexOrder) -> None:
        """An order the home accepted: a constraint of every plan until it expires."""
        self.orders[order.id] = order
        self.replan(f"order {order.id}")

    def add_request(self, request: Request) -> None:
        """A neighbourhood request (UC1-S4): planned for, or refused with the reason."""
        self.requests[request.id] = request
        self.replan(f"request {request.id}")

    def request_plan(self, reason: str = "new PTU") -> bool:
        """Start a solve in the worker unless one is running; True when one was started."""
        if self._solving is not None and not self._solving[0].done():
            return False
        self._collect()
        now = self.clock.now()
        try:
            inputs = self._inputs(now, self.snapshot())
        except Exception as exc:  # the caller's inputs; tried again next cycle
            self._failed(f"cannot build the planner's inputs: {exc}")
            self._wanted = reason
            return False
        self.solves += 1
        self._solving = (self._executor.submit(self._planner, inputs), inputs, self.solves)
        self._wanted = None
        self.replans.append((now, reason))
        log.info("planning from %s: %s", ptu_start(now), reason)
        return True

    def _inputs(self, now: float, snapshot: Snapshot) -> PlanInputs:
        """The caller's inputs, with the orders still binding, the requests not yet over and the
        plan in force (so that the new one changes it only where that pays)."""
        inputs = self._make_inputs(now, snapshot)
        for key, order in list(self.orders.items()):
            if not order.binds(inputs.start):
                del self.orders[key]
        for key, request in list(self.requests.items()):
            if request.end <= inputs.start:
                del self.requests[key]
        update: dict[str, object] = {
            "orders": [*inputs.orders, *self.orders.values()],
            "requests": [*inputs.requests, *self.requests.values()],
        }
        if self.plan is not None and inputs.previous is None:
            plan = self.plan[0]
            start = datetime.fromtimestamp(plan.start, UTC)
            update["previous"] = PreviousPlan(start=start, net_w=plan.net_w)
        return inputs.model_copy(update=update)

    @property
    def pending(self) -> Future[Plan] | None:
        """The solve the worker is running (or has finished and the loop not yet taken)."""
        return None if self._solving is None else self._solving[0]

    def snapshot(self) -> Snapshot:
        """The latest reading of each (device, quantity), frozen; older than the limit: absent."""
        now = self.clock.now()
        return MappingProxyType(
            {
                k: r
                for k, r in self._latest.items()
                if r.ts >= now - max(self._max_age, self._device_max_age.get(k[0], 0.0))
            }
        )

    def cycle(self, readings: Iterable[Reading]) -> list[Command]:
        now = self.clock.now()
        for r in readings:
            key = (r.device, r.quantity)
            if key not in self._latest or self._latest[key].ts <= r.ts:
                self._latest[key] = r
        snapshot = self.snapshot()
        self._collect()
        if self._ptu != ptu_start(now):  # receding horizon: re-plan every PTU
            self._ptu = ptu_start(now)
            self.replan("new PTU")
        else:
            for reason in self._events(now, snapshot):
                self.replan(reason)
        if self._wanted is not None:
            self.request_plan(self._wanted)
        self.current = self._current(now, snapshot)
        if self.current is None:  # no plan and no inputs for rules: devices keep their settings
            return []
        plan, inputs = self.current
        c = Cycle(now, snapshot, plan, inputs, self.meter, deferred=self._deferred)
        for controller in CONTROLLERS:
            try:
                controller(c)
            except Exception:  # one broken controller must not silence the safety limits
                log.exception("controller %s failed at %.0f", controller.__name__, now)
        return c.setpoints.commands()

    async def run(
        self,
        poll: Callable[[], Awaitable[list[Reading]]],
        send: Callable[[list[Command]], Awaitable[None]],
        period_s: float = 5.0,
    ) -> None:
        """Cycle every `period_s` for ever; a failing poll, cycle or send is logged and the next
        cycle comes as usual."""
        while True:
            began = self.clock.now()
            try:
                await send(self.cycle(await poll()))
            except Exception:
                log.exception("control cycle at %.0f failed", began)
            await self.clock.sleep_until(began + period_s)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _events(self, now: float, snapshot: Snapshot) -> list[str]:
        """What in this cycle's readings makes the plan in force out of date."""
        events = []
        for (device, quantity), reading in snapshot.items():
            if quantity is Quantity.EV_CONNECTED:
                before = self._connected.get(device)
                self._connected[device] = reading.value
                if before is not None and before != reading.value:
                    events.append(f"{device} {'plugged in' if reading.value else 'unplugged'}")
        meter = snapshot.get((self.meter, Quantity.POWER_W))
        if self.plan is not None and _covers(self.plan[0], now) and meter is not None:
            plan = self.plan[0]
            planned = plan.net_w[int((now - plan.start) // PTU_SECONDS)]
            off = abs(meter.value - planned) > self._deviation_w
            self._off_plan = self._off_plan + 1 if off else 0
            if self._off_plan >= self._deviation_cycles and self._deviation_ptu != ptu_start(now):
                self._deviation_ptu = ptu_start(now)
                events.append(
                    f"meter at {meter.value:.0f} W, the plan {planned:.0f} W, for "
                    f"{self._off_plan} cycles"
                )
        return events

    def _collect(self) -> None:
        """Take a finished solve's plan, or note why there is none and keep the last one."""
        if self._solving is None or not self._solving[0].done():
            return
        future, inputs, number = self._solving
        self._solving = None
        try:
            self.plan = (future.result(), inputs)
            self.plan_solve = number
            self.last_error = ""
        except Exception as exc:  # NoPlan, or a bug in a builder: the loop runs on regardless
            self._failed(f"planner failed: {exc}")

    def _current(self, now: float, snapshot: Snapshot) -> tuple[Plan, PlanInputs] | None:
        """The planner's plan while it covers now; else the fallback's, made afresh each PTU
        (the last one while new inputs cannot be built and it still covers now)."""
        if self.plan is not None and _covers(self.plan[0], now):
            return self.plan
        if self._fallback is None or self._fallback_ptu != ptu_start(now):
            try:
                inputs = self._inputs(now, snapshot)
                self._fallback = (fallback_plan(inputs), inputs)
                self._fallback_ptu = ptu_start(now)
            except Exception as exc:
                self._failed(f"no fallback plan either: {exc}")
                if self._fallback is None or not _covers(self._fallback[0], now):
                    return None
        return self._fallback

    def _failed(self, error: str) -> None:
        if error != self.last_error:  # once per new error, not every cycle
            log.error("%s", error)
        self.last_error = error


def _covers(plan: Plan, now: float) -> bool:
    return plan.start <= now < plan.start + plan.ptus * PTU_SECONDS
