"""What the web page shows of its gateway and may change in it (`Box`), and `GatewayBox`, the
gateway's side. Reads may come from the server's worker threads (the page's plain `def`
routes): they only look at objects the loop replaces whole. What changes the gateway
(`set_preferences`, `add_modbus`, `permit_join`) and what waits on it is called from `async`
routes, on the gateway's own event loop; store reads go to the store's own thread."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any, Protocol

from homeflex.edge.config import ModbusDeviceConfig
from homeflex.edge.devices.capabilities import DeviceError
from homeflex.edge.devices.modbus import ModbusDevice, ModbusLink
from homeflex.edge.devices.templates import BUILTIN_DIR, load_modbus_template
from homeflex.edge.preferences import Preferences
from homeflex.edge.web.history import Bucket, Period, RecordedPrices, history
from homeflex.edge.web.plan_view import PlanView, view
from homeflex.edge.web.suggestions import Suggestion, suggest

if TYPE_CHECKING:
    from homeflex.edge.gateway import Gateway

PLAN_WAIT_S = 20.0  # real seconds a change waits for the plan that takes it in
TEST_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class DeviceRow:
    id: str
    protocol: str  # modbus | zigbee
    model: str  # the template
    state: str  # starting | ok | failing
    last_ok: float | None
    problem: str  # the last error or bad value, in words; "" when none
    planned: str  # the planner's kind for it, "" when only monitored


@dataclass(frozen=True)
class Order:
    id: str
    day: date
    direction: str
    kw: float  # the largest PTU's
    ptus: int
    earned_eur: float | None  # None until settled


@dataclass(frozen=True)
class Neighbourhood:
    configured: bool  # the box has an aggregator
    connected: bool
    aggregator: str
    rounds: int
    orders: list[Order]
    earned_eur: float


class Box(Protocol):
    """The page's view of its gateway."""

    gateway_id: str

    @property
    def utc_offset_h(self) -> float: ...
    def now(self) -> float: ...
    def live(self) -> dict[str, Any]: ...
    def plan(self) -> PlanView | None: ...
    def plan_problem(self) -> str: ...
    async def wait_for_plan(self, after_solve: int) -> bool: ...
    async def history(self, period: Period, count: int) -> list[Bucket]: ...
    def devices(self) -> list[DeviceRow]: ...
    def templates(self) -> list[str]: ...
    async def permit_join(self, seconds: int) -> None: ...
    async def test_modbus(self, cfg: ModbusDeviceConfig) -> list[str]: ...
    def add_modbus(self, cfg: ModbusDeviceConfig) -> None: ...
    def preferences(self) -> Preferences: ...
    def planned_devices(self) -> list[Any]: ...
    def set_preferences(self, prefs: Preferences, why: str) -> int: ...
    def neighbourhood(self) -> Neighbourhood: ...
    async def suggestions(self) -> list[Suggestion]: ...


class GatewayBox:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.gateway_id = gw.cfg.gateway_id

    @property
    def utc_offset_h(self) -> float:
        home = self.gw.cfg.home
        return home.site.utc_offset_h if home is not None else 0.0

    def now(self) -> float:
        return self.gw.clock.now()

    def live(self) -> dict[str, Any]:
        return self.gw.live()

    def plan(self) -> PlanView | None:
        control = self.gw.control
        if control is None or control.current is None:
            return None
        return view(*control.current)

    def plan_problem(self) -> str:
        """Why the plan shown may not be the planner's, in words ("" when all is well)."""
        control, home = self.gw.control, self.gw.home
        if control is None or home is None:
            return "this box plans no home: it only records its devices"
        return " ".join(x for x in (control.last_error, home.prices.error,
                                    self.gw.preference_file.error) if x)  # fmt: skip

    async def wait_for_plan(self, after_solve: int) -> bool:
        """Until a plan from a solve started after `after_solve` is in force (True), or
        PLAN_WAIT_S have passed (False)."""
        control = self.gw.control
        if control is None:
            return False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PLAN_WAIT_S
        while loop.time() < deadline:
            if control.plan_solve > after_solve and control.current is control.plan:
                return True
            await asyncio.sleep(0.1)
        return False

    async def history(self, period: Period, count: int) -> list[Bucket]:
        gw, home = self.gw, self.gw.home
        if gw.store is None or home is None:
            return []
        pv = [d.id for d in home.cfg.devices if d.kind == "pv"]
        until = gw.clock.now()
        store, meter, offset = gw.store, home.cfg.meter, self.utc_offset_h
        prices = RecordedPrices(store, home.prices)
        result: list[Bucket] = await gw._db(
            lambda: history(store, meter, pv, prices, offset, period, until, count)
        )
        return result

    def devices(self) -> list[DeviceRow]:
        home = self.gw.home
        planned = {d.id: d.kind for d in home.cfg.devices} if home is not None else {}
        rows = []
        for p in self.gw.pollers:
            cfg = getattr(p.device, "cfg", None)
            h = p.health
            problem = h.last_error if h.state == "failing" else "; ".join(h.problems)
            rows.append(DeviceRow(
                p.device.id,
                str(getattr(cfg, "protocol", "")),
                str(getattr(cfg, "template", "")),
                h.state,
                h.last_ok,
                problem or "",
                planned.get(p.device.id, ""),
            ))  # fmt: skip
        return rows

    def templates(self) -> list[str]:
        return sorted(
            p.stem
            for p in BUILTIN_DIR.glob("*.yaml")
            if not p.stem.startswith("zigbee-")  # Zigbee devices join by pairing, not by address
        )

    async def permit_join(self, seconds: int) -> None:
        zigbee = self.gw.zigbee
        if zigbee is None:
            raise DeviceError("this box has no Zigbee radio")
        await zigbee.permit_join(seconds)  # type: ignore[attr-defined]  # ZigbeeGateway's

    async def test_modbus(self, cfg: ModbusDeviceConfig) -> list[str]:
        """Read every register of the template once; what is wrong, in words ([] when all is
        well). A fresh connection: the gateway's own links are not disturbed."""
        try:
            template = load_modbus_template(cfg.template)
        except (FileNotFoundError, ValueError) as exc:
            return [str(exc)]
        link = ModbusLink(cfg.host, cfg.port, min(cfg.timeout_s, TEST_TIMEOUT_S))
        device = ModbusDevice(cfg, template, link, self.gw.clock)
        try:
            readings = await device.poll()
        except DeviceError as exc:
            return [str(exc)]
        finally:
            link.close()
        if not readings and not device.problems:
            return [f"{cfg.host}:{cfg.port} unit {cfg.unit} answered, but gave no values"]
        return device.problems

    def add_modbus(self, cfg: ModbusDeviceConfig) -> None:
        self.gw.add_modbus(cfg)

    def preferences(self) -> Preferences:
        return self.gw.preferences

    def planned_devices(self) -> list[Any]:
        """The home's planned devices as the planner sees them now (the owner's choices in)."""
        return list(self.gw.home.cfg.devices) if self.gw.home is not None else []

    def set_preferences(self, prefs: Preferences, why: str) -> int:
        return self.gw.set_preferences(prefs, why)

    def neighbourhood(self) -> Neighbourhood:
        agent = self.gw.agent
        if agent is None:
            configured = self.gw.cfg.agent is not None
            name = self.gw.cfg.agent.aggregator if self.gw.cfg.agent is not None else ""
            return Neighbourhood(configured, False, name, 0, [], 0.0)
        brain = agent.brain
        orders = []
        for oid, o in sorted(brain.accepted.items(), key=lambda kv: kv[1].day, reverse=True):
            s = brain.settlements.get(oid)
            orders.append(Order(oid, o.day, str(o.direction), max(o.profile_kw.values()),
                                len(o.profile_kw),
                                None if s is None else s.payment_eur - s.penalty_eur))  # fmt: skip
        earned = sum(s.payment_eur - s.penalty_eur for s in brain.settlements.values())
        return Neighbourhood(True, agent.connected, agent.cfg.aggregator, len(brain.answered),
                             orders, earned)  # fmt: skip

    async def suggestions(self) -> list[Suggestion]:
        gw, home = self.gw, self.gw.home
        if gw.store is None or home is None:
            return []
        days = await self.history("day", 28)
        return suggest(home, days, self.plan(), gw.clock.now())
