"""The control loop cycle by cycle on a fake clock (OpenEMS style): readings in, commands out.
The planner is the real one on a two-hour horizon, wrapped where a test needs it to fail or hang."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from homeflex.clock import PTU_SECONDS, ptu_start
from homeflex.edge.control import Command, ControlLoop, Snapshot
from homeflex.edge.devices.capabilities import Quantity, Reading
from homeflex.edge.planner.devices.battery import BatterySpec
from homeflex.edge.planner.devices.ev import EvSpec
from homeflex.edge.planner.devices.heat_pump import HeatPumpSpec
from homeflex.edge.planner.fallback import fallback_plan
from homeflex.edge.planner.inputs import FlexOrder, PlanInputs, Request
from homeflex.edge.planner.planner import NoPlan, Plan, solve
from tests.fakeclock import FakeClock

T0 = datetime(2026, 1, 15, 6, tzinfo=UTC).timestamp()
N = 8  # two-hour plans keep each solve in milliseconds
EV_A = 16 * 3 * 230.0 / 690.0  # the car's 16 A, as amps (690 W per A on three phases)


def at(t: int) -> datetime:
    return datetime.fromtimestamp(T0 + t * PTU_SECONDS, UTC)


def home(prices: list[float], car_wh: float = 5000) -> Callable[[float, Snapshot], PlanInputs]:
    """The home's inputs at `now`: prices repeat every N PTUs from T0; the battery's SoC and the
    room temperature come from the snapshot."""

    def make(now: float, snap: Snapshot) -> PlanInputs:
        start = ptu_start(now)
        k = int((start - T0) // PTU_SECONDS)
        soc = snap.get(("bat", Quantity.SOC_PCT))
        room = snap.get(("hp", Quantity.ROOM_TEMP_C))
        begin = datetime.fromtimestamp(start, UTC)
        return PlanInputs(
            start=begin,
            ptus=N,
            import_price=[prices[(k + t) % N] for t in range(N)],
            export_price=[0.0] * N,
            base_load_w=[400.0] * N,
            devices=[
                BatterySpec(
                    id="bat",
                    capacity_wh=10_000,
                    soc_start_pct=soc.value if soc else 50.0,
                    soc_min_pct=10,
                    max_charge_w=3000,
                    max_discharge_w=3000,
                ),
                EvSpec(
                    id="car",
                    arrive=begin - timedelta(hours=1),
                    depart=begin + timedelta(hours=2),
                    energy_needed_wh=car_wh,
                ),
                HeatPumpSpec(
                    id="hp",
                    rated_power_w=2000,
                    min_power_w=600,
                    resistance_k_per_kw=5,
                    capacitance_kwh_per_k=5,
                    outdoor_temp_c=[0.0] * N,
                    room_temp_c=room.value if room else 21.0,
                    t_min_c=[20.0] * N,
                    t_max_c=[22.0] * N,
                ),
            ],
        )

    return make


CHEAP_FIRST = [0.10] * 4 + [0.40] * 4


def readings(clock: FakeClock, **values: float) -> list[Reading]:
    """Readings at the clock's now; keys are device__quantity."""
    out = []
    for key, value in values.items():
        device, quantity = key.split("__")
        out.append(Reading(device, Quantity(quantity), clock.now(), value))
    return out


def normal(clock: FakeClock) -> list[Reading]:
    return readings(
        clock, meter__power_w=1000.0, bat__soc_pct=50.0, hp__room_temp_c=21.0, car__power_w=0.0
    )


def by_device(commands: list[Command]) -> dict[str, Command]:
    return {c.device: c for c in commands}


def planned(plan: Plan, t: int) -> dict[str, float]:
    """What a plan asks of each device in PTU t, in command units."""
    hp = plan.device("hp").power_w[t]
    return {
        "bat": plan.device("bat").power_w[t],
        "car": plan.device("car").power_w[t] / 690.0,
        "hp": 3.0 if hp > 0 else 1.0,
    }


def values(commands: list[Command]) -> dict[str, float]:
    return {c.device: c.value for c in commands}


def settle(loop: ControlLoop) -> None:
    """Wait for the worker's solve to finish (the loop takes it on its next cycle)."""
    assert loop.pending is not None
    loop.pending.exception(timeout=30)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


def test_follows_the_plan_cycle_by_cycle(clock: FakeClock) -> None:
    loop = ControlLoop(clock, "meter", home(CHEAP_FIRST))
    # first cycle: a solve starts in the worker, meanwhile the fallback's rules drive
    first = by_device(loop.cycle(normal(clock)))
    assert loop.pending is not None and loop.plan is None
    assert first["car"] == Command("car", Quantity.SETPOINT_A, EV_A)  # full current, by rule
    assert first["bat"].quantity is Quantity.SETPOINT_W
    assert first["hp"].quantity is Quantity.SG_READY_MODE
    settle(loop)

    clock.t += 5
    cmds = loop.cycle(normal(clock))
    assert loop.plan is not None
    plan = loop.plan[0]
    assert plan.status == "optimal"
    assert values(cmds) == pytest.approx(planned(plan, 0))
    assert sum(plan.device("car").power_w[:4]) * 0.25 * 0.9 == pytest.approx(5000)

    # next PTU: the receding horizon asks for a new plan; until it lands the last one holds
    clock.t = T0 + PTU_SECONDS + 1
    cmds = loop.cycle(normal(clock))
    assert loop.plan[0] is plan
    assert values(cmds) == pytest.approx(planned(plan, 1))
    settle(loop)
    loop.close()


def test_planner_failure_keeps_the_last_plan_then_falls_back(clock: FakeClock) -> None:
    calls = []

    def failing_after_first(inputs: PlanInputs) -> Plan:
        calls.append(inputs.start)
        if len(calls) > 1:
            raise NoPlan("solver status 99 after 5.00 s")
        return solve(inputs)

    make = home(CHEAP_FIRST)
    loop = ControlLoop(clock, "meter", make, planner=failing_after_first)
    loop.cycle(normal(clock))
    settle(loop)
    clock.t += 5
    loop.cycle(normal(clock))
    assert loop.plan is not None
    plan = loop.plan[0]

    for t in range(1, N):  # every PTU asks again, every solve fails: the plan still drives
        clock.t = T0 + t * PTU_SECONDS
        loop.cycle(normal(clock))
        settle(loop)
        clock.t += 5
        cmds = loop.cycle(normal(clock))
        assert "NoPlan" not in loop.last_error and "solver status 99" in loop.last_error
        assert values(cmds) == pytest.approx(planned(plan, t))
    assert len(calls) == N

    # the plan is exhausted: the fallback's rules, made from this PTU's inputs
    clock.t = T0 + N * PTU_SECONDS + 5
    cmds = loop.cycle(normal(clock))
    rules = fallback_plan(make(clock.t, loop.snapshot()))
    assert values(cmds) == pytest.approx(planned(rules, 0))
    assert by_device(cmds)["car"].value == pytest.approx(EV_A)
    settle(loop)
    loop.close()


def test_a_slow_solve_never_delays_a_cycle(clock: FakeClock) -> None:
    release = threading.Event()

    def blocked(inputs: PlanInputs) -> Plan:
        assert release.wait(timeout=30), "the test never released the planner"
        return solve(inputs)

    loop = ControlLoop(clock, "meter", home(CHEAP_FIRST), planner=blocked)
    for _ in range(50):  # 50 cycles while the solve hangs: each answers at once, by rule
        cmds = loop.cycle(normal(clock))
        assert loop.pending is not None and not loop.pending.done()
        assert loop.request_plan() is False  # one solve at a time
        assert by_device(cmds)["car"].value == pytest.approx(EV_A)
        clock.t += 1
    assert loop.plan is None
    release.set()
    settle(loop)
    cmds = loop.cycle(normal(clock))
    assert loop.plan is not None
    assert values(cmds) == pytest.approx(planned(loop.plan[0], 0))
    loop.close()


def planned_loop(clock: FakeClock, prices: list[float], car_wh: float = 5000) -> ControlLoop:
    loop = ControlLoop(clock, "meter", home(prices, car_wh))
    loop.cycle(normal(clock))
    settle(loop)
    clock.t += 5
    return loop


def test_battery_reserve_overrides_the_plan(clock: FakeClock) -> None:
    # expensive first: the plan discharges the battery (it starts at 50 %)
    loop = planned_loop(clock, [0.40] * 4 + [0.10] * 4)
    cmds = loop.cycle(normal(clock))
    assert by_device(cmds)["bat"].value < -100
    # the battery reports its reserve: no discharge, whatever the plan says
    clock.t += 5
    cmds = loop.cycle([*normal(clock), *readings(clock, bat__soc_pct=10.0)])
    assert by_device(cmds)["bat"] == Command("bat", Quantity.SETPOINT_W, 0.0)
    loop.close()


def test_connection_limit_cuts_the_car_then_the_battery(clock: FakeClock) -> None:
    # the car needs all two hours at 16 A (8 × 2484 Wh): the plan charges it flat out
    loop = planned_loop(clock, [0.10] * 8, car_wh=8 * 2484)
    charging = readings(clock, car__power_w=11_040.0, bat__power_w=0.0)
    cmds = by_device(loop.cycle([*normal(clock), *charging]))
    bat_w = cmds["bat"].value
    assert cmds["car"].value == pytest.approx(16)

    def measured(excess: float) -> list[Reading]:
        """The meter's figure at which the new setpoints would import `excess` W too much:
        what it measures, less the car's measured 11 040 W, plus both new setpoints."""
        meter = 17_250 + excess + 11_040 - 11_040 - bat_w
        return readings(clock, meter__power_w=meter, car__power_w=11_040.0)

    # 3 kW too much: off the car first (16 A → 11.65 A), the battery keeps its setpoint
    clock.t += 1
    cmds = by_device(loop.cycle(measured(3000)))
    assert cmds["car"].value == pytest.approx((11_040 - 3000) / 690)
    assert cmds["bat"].value == pytest.approx(bat_w)

    # 12 kW too much: the car would fall below 6 A, so it stops (−11 040 W); the battery takes
    # the last 960 W
    clock.t += 1
    cmds = by_device(loop.cycle(measured(12_000)))
    assert cmds["car"].value == 0.0
    assert bat_w - 960 >= -3000
    assert cmds["bat"].value == pytest.approx(bat_w - 960)

    # and the reserve outranks the connection: at 10 % the battery only stops charging
    clock.t += 1
    meter = readings(clock, meter__power_w=40_000.0, car__power_w=11_040.0, bat__soc_pct=10.0)
    assert loop.plan is not None
    cmds = by_device(loop.cycle(meter))
    assert cmds["car"].value == 0.0 and cmds["bat"].value == 0.0
    loop.close()


def test_comfort_band_comes_before_cost(clock: FakeClock) -> None:
    loop = ControlLoop(clock, "meter", home(CHEAP_FIRST))
    cool = readings(clock, meter__power_w=1000.0, bat__soc_pct=50.0, hp__room_temp_c=20.05)
    loop.cycle(cool)
    settle(loop)
    clock.t += 5
    cmds = by_device(loop.cycle([]))
    assert loop.plan is not None
    # at 20.05 °C, cheap now and dear in an hour: the plan heats now (SG-Ready 3, recommended)
    assert loop.plan[0].device("hp").power_w[0] > 0
    assert cmds["hp"] == Command("hp", Quantity.SG_READY_MODE, 3.0)
    clock.t += 1
    cold = by_device(loop.cycle(readings(clock, hp__room_temp_c=19.5)))
    assert cold["hp"] == Command("hp", Quantity.SG_READY_MODE, 4.0)  # forced on
    clock.t += 1
    hot = by_device(loop.cycle(readings(clock, hp__room_temp_c=22.5)))
    assert hot["hp"] == Command("hp", Quantity.SG_READY_MODE, 1.0)  # blocked
    loop.close()


class StopRun(BaseException):
    """Ends the never-ending loop in a test (not an Exception, so the loop does not catch it)."""


async def test_run_keeps_cycling_when_a_poll_fails(clock: FakeClock) -> None:
    loop = ControlLoop(clock, "meter", home(CHEAP_FIRST))
    sent: list[list[Command]] = []
    polls = 0

    async def poll() -> list[Reading]:
        nonlocal polls
        polls += 1
        if polls == 2:
            raise OSError("meter: connection refused")
        if polls == 5:
            raise StopRun
        return normal(clock)

    async def send(commands: list[Command]) -> None:
        sent.append(commands)

    with pytest.raises(StopRun):
        await loop.run(poll, send, period_s=5)
    assert len(sent) == 3  # polls 1, 3 and 4; the second failed and the loop went on
    assert clock.now() == T0 + 20
    settle(loop)
    loop.close()


def reasons(loop: ControlLoop) -> list[str]:
    return [why for _, why in loop.replans]


def test_a_car_plugged_in_replans_at_once(clock: FakeClock) -> None:
    loop = planned_loop(clock, CHEAP_FIRST)
    loop.cycle([*normal(clock), *readings(clock, car__ev_connected=0.0)])
    assert reasons(loop) == ["new PTU"]
    clock.t += 5
    loop.cycle([*normal(clock), *readings(clock, car__ev_connected=1.0)])
    assert reasons(loop) == ["new PTU", "car plugged in"]
    settle(loop)
    clock.t += 5
    loop.cycle([*normal(clock), *readings(clock, car__ev_connected=0.0)])
    assert reasons(loop)[-1] == "car unplugged"
    settle(loop)
    loop.close()


def test_a_lasting_deviation_replans_once_per_ptu(clock: FakeClock) -> None:
    loop = planned_loop(clock, CHEAP_FIRST)
    loop.cycle(normal(clock))
    assert loop.plan is not None
    planned_w = loop.plan[0].net_w[0]
    clock.t += 5
    loop.cycle([*normal(clock), *readings(clock, meter__power_w=planned_w + 1400)])  # within
    off = planned_w + 2000  # beyond the 1500 W threshold
    for cycle in range(1, 7):
        clock.t += 5
        loop.cycle([*normal(clock), *readings(clock, meter__power_w=off)])
        if loop.pending is not None:
            settle(loop)
        # two cycles may be noise; the third re-plans; later cycles in this PTU do not again
        assert len(reasons(loop)) == (1 if cycle < 3 else 2), cycle
    assert reasons(loop)[-1] == f"meter at {off:.0f} W, the plan {planned_w:.0f} W, for 3 cycles"
    loop.close()


def test_a_replan_during_a_solve_follows_it(clock: FakeClock) -> None:
    release = threading.Event()
    seen: list[PlanInputs] = []

    def blocked(inputs: PlanInputs) -> Plan:
        seen.append(inputs)
        assert release.wait(timeout=30)
        return solve(inputs)

    loop = ControlLoop(clock, "meter", home(CHEAP_FIRST), planner=blocked)
    loop.cycle(normal(clock))
    order = FlexOrder(id="o1", start=at(2), end=at(4), max_net_w=-1000.0, expires=at(4))
    loop.accept_order(order)  # the solve under way has not seen it
    assert len(seen) == 1 and reasons(loop) == ["new PTU"]
    release.set()
    settle(loop)
    clock.t += 5
    loop.cycle(normal(clock))  # takes the first plan, starts the one that was wanted
    assert reasons(loop) == ["new PTU", "order o1"]
    settle(loop)
    assert seen[1].orders == [order]
    # the plan in force goes with it, so that the new one changes it only where that pays
    assert loop.plan is not None
    assert seen[1].previous is not None
    assert seen[1].previous.net_w == loop.plan[0].net_w
    clock.t += 5
    loop.cycle(normal(clock))
    plan = loop.plan[0]
    assert [(o.id, o.met) for o in plan.requests] == [("o1", True)]
    assert max(plan.net_w[2:4]) <= -1000.0 + 1e-6
    # once expired, the order is no longer handed to the planner
    clock.t = T0 + 4 * PTU_SECONDS
    loop.cycle(normal(clock))
    settle(loop)
    assert seen[-1].orders == [] and loop.orders == {}
    loop.close()


def test_a_request_is_planned_for(clock: FakeClock) -> None:
    loop = planned_loop(clock, CHEAP_FIRST)
    loop.cycle(normal(clock))
    loop.add_request(Request(id="r1", start=at(1), end=at(3), max_net_w=0.0))
    assert reasons(loop)[-1] == "request r1"
    settle(loop)
    clock.t += 5
    loop.cycle(normal(clock))
    assert loop.plan is not None
    plan = loop.plan[0]
    assert [(r.id, r.kind, r.met) for r in plan.requests] == [("r1", "request", True)]
    assert max(plan.net_w[1:3]) <= 1e-6
    loop.close()


def test_inputs_that_cannot_be_built_keep_the_plan_in_force(clock: FakeClock) -> None:
    make = home(CHEAP_FIRST)
    broken = False

    def flaky(now: float, snap: Snapshot) -> PlanInputs:
        if broken:
            raise ValueError("prices.yaml:3: import_price: not a number")
        return make(now, snap)

    loop = ControlLoop(clock, "meter", flaky)
    loop.cycle(normal(clock))
    settle(loop)
    clock.t += 5
    loop.cycle(normal(clock))
    assert loop.plan is not None
    plan = loop.plan[0]
    broken = True
    clock.t = T0 + PTU_SECONDS + 1  # a new PTU wants a plan; its inputs cannot be built
    cmds = loop.cycle(normal(clock))
    assert loop.pending is None  # the first solve was taken, no new one started
    assert loop.last_error == (
        "cannot build the planner's inputs: prices.yaml:3: import_price: not a number"
    )
    assert values(cmds) == pytest.approx(planned(plan, 1))
    # once they can be built again, the wanted plan follows at the next cycle
    broken = False
    clock.t += 5
    loop.cycle(normal(clock))
    assert loop.pending is not None
    settle(loop)
    assert reasons(loop) == ["new PTU", "new PTU"]
    # past the plan with no inputs at all: no commands, devices keep their own settings
    broken = True
    clock.t = T0 + 20 * PTU_SECONDS
    assert loop.cycle(normal(clock)) == []
    assert loop.current is None
    loop.close()


def test_a_reading_counts_until_its_device_misses_polls(clock: FakeClock) -> None:
    # the meter polled often: the default age; the heat pump polled every 120 s: 360 s
    loop = ControlLoop(clock, "meter", home(CHEAP_FIRST), device_max_age_s={"hp": 360.0})
    loop.cycle(readings(clock, meter__power_w=500.0, hp__room_temp_c=20.5))
    clock.t += 61
    loop.cycle([])
    assert set(loop.snapshot()) == {("hp", Quantity.ROOM_TEMP_C)}
    clock.t += 300
    assert set(loop.snapshot()) == set()
