"""The home's agent inside the gateway: the home brain (edge/cems.py) on a NodeAgent
(agents/carrier.py) that plans with the gateway's own readings, history, forecasts and plan.

Two clocks. Messages, round deadlines, envelopes and certificates run on real time, as the
aggregator does; the home's plans run on the gateway's clock (simulated, faster, in the demo).
So the Node is given real time and the brain's inputs read the gateway's clock.

Two threads. The brain runs on the agent's worker thread (a plan with its envelope takes
seconds); the readings and the control loop live on the gateway's event loop. So the brain's
inputs are built on the loop (`run_coroutine_threadsafe`), an accepted order goes to the control
loop with `call_soon_threadsafe`, and each new plan of the control loop reaches the brain through
`HomeBrain.plan_changed`, taken at its next tick.

The XMPP server or the aggregator may be away: the agent keeps trying to connect, and the home
runs on its own plan meanwhile, with every order it accepted before (kept in
`<data_dir>/agent.json`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any

from cryptography import x509

from homeflex.agents.carrier import NodeAgent
from homeflex.agents.delivery import Deliveries
from homeflex.agents.messages import Prices
from homeflex.agents.messenger import Messenger
from homeflex.agents.node import Node
from homeflex.agents.permissions import Permissions
from homeflex.agents.xmpp_tls import XmppEndpoint
from homeflex.clock import PTU_SECONDS, Clock, ptu_start
from homeflex.edge.cems import HomeBrain, day_start
from homeflex.edge.config import AgentConfig
from homeflex.edge.control import ControlLoop
from homeflex.edge.home import Home
from homeflex.edge.planner.inputs import FlexOrder, PlanInputs
from homeflex.edge.preferences import Neighbourhood
from homeflex.pki.bundle import Credentials
from homeflex.security import SecurityLog

log = logging.getLogger(__name__)
RETRY_S = 15.0  # real seconds between attempts to reach the XMPP server
WATCH_S = 1.0  # real seconds between looks at the control loop's plan
INPUTS_TIMEOUT_S = 30.0
MAX_PTUS = 672  # the planner's longest horizon


def offer_ptus(cfg: AgentConfig, utc_offset_h: float) -> list[int]:
    """The day's PTUs (UTC) in the local offer window; a window past midnight wraps."""

    def minutes(t: time) -> int:
        return t.hour * 60 + t.minute

    first = minutes(cfg.offer_from) - round(utc_offset_h * 60)
    length = (minutes(cfg.offer_until) - minutes(cfg.offer_from)) % 1440 or 1440
    return sorted({((first + m) % 1440) // 15 for m in range(0, length, 15)})


class HomeAgent:
    def __init__(
        self,
        cfg: AgentConfig,
        creds_dir: Path,
        data_dir: Path,
        home: Home,
        control: ControlLoop,
        clock: Clock,
        security: SecurityLog,
        choices: Callable[[], Neighbourhood] = Neighbourhood,
    ) -> None:
        self.cfg = cfg
        self.home = home
        self.control = control
        self.clock = clock
        self.creds = Credentials.load(creds_dir)
        me = self.creds.identity()
        self.messenger = Messenger(
            self.creds,
            Permissions(me, aggregator=cfg.aggregator),
            security,
            data_dir / "agent-replay.db",
        )
        self.messenger.know(
            x509.load_pem_x509_certificates(cfg.aggregator_certificate.read_bytes())
        )
        self.brain = HomeBrain(
            me.name,
            cfg.aggregator,
            self._inputs,
            offer_ptus(cfg, home.cfg.site.utc_offset_h),
            margin_eur_kwh=cfg.margin_eur_kwh,
            on_order=self._take_orders,
            state=data_dir / "agent.json",
            choices=choices,
        )
        self.node = Node(self.messenger, Deliveries(data_dir / "agent-deliveries.db"), self.brain)
        self.connected = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def status(self) -> dict[str, Any]:
        """What status.json says about the neighbourhood."""
        return {
            "connected": self.connected,
            "aggregator": self.cfg.aggregator,
            "rounds": sorted(self.brain.answered),
            "orders": sorted(self.brain.accepted),
            "earned_eur": round(
                sum(s.payment_eur - s.penalty_eur for s in self.brain.settlements.values()), 4
            ),
            "sent": self.node.sent,
            "resent": self.node.resent,
            "failed": self.node.failed,
        }

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        for order in self.brain.binding():  # accepted before a restart: still binding
            self.control.accept_order(order)
        password = self.cfg.password_file.read_text().strip()
        endpoint = XmppEndpoint(self.cfg.xmpp_domain, self.cfg.xmpp_address, self.cfg.xmpp_port)
        agent: NodeAgent | None = None
        try:
            while agent is None:
                candidate = NodeAgent(self.node, self.creds, password, endpoint)
                try:
                    await candidate.start()
                    agent = candidate
                except Exception as exc:  # server away, refused login: the home runs on
                    log.warning("agent: cannot reach %s:%d (%s); trying again in %.0f s",
                                endpoint.address, endpoint.port, exc, RETRY_S)  # fmt: skip
                    await asyncio.sleep(RETRY_S)
            log.info("agent %s connected; aggregator %s", self.node.name, self.cfg.aggregator)
            seen = None
            while True:
                self.connected = agent.is_alive()
                plan = self.control.plan
                if plan is not None and plan[0] is not seen:
                    seen = plan[0]
                    self.brain.plan_changed(seen.start, list(seen.net_w), self.clock.now())
                await asyncio.sleep(WATCH_S)
        finally:
            self.connected = False
            if agent is not None:
                await agent.stop()

    def _inputs(self, prices: Prices, orders: list[FlexOrder]) -> PlanInputs:
        """Called on the agent's worker thread: built on the gateway's loop, where the readings
        are."""
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(self._build(prices, orders), self._loop)
        return future.result(INPUTS_TIMEOUT_S)

    async def _build(self, prices: Prices, orders: list[FlexOrder]) -> PlanInputs:
        """The home's inputs from now to the last priced PTU, at the aggregator's prices where it
        gave them and the home's own tariff before."""
        now = self.clock.now()
        start = ptu_start(now)
        day0 = day_start(prices.day)
        end = day0 + (prices.first_ptu + len(prices.import_eur_kwh)) * PTU_SECONDS
        ptus = round((end - start) / PTU_SECONDS)
        if not 1 <= ptus <= MAX_PTUS:
            at = datetime.fromtimestamp(now, UTC).isoformat(timespec="minutes")
            raise ValueError(
                f"prices for {prices.day} do not fit a plan from the gateway's time {at} "
                f"({ptus} PTUs; 1 to {MAX_PTUS} can be planned)"
            )
        inputs = self.home.make_inputs(now, self.control.snapshot(), ptus)
        imp, exp = list(inputs.import_price), list(inputs.export_price)
        for i, (p_imp, p_exp) in enumerate(
            zip(prices.import_eur_kwh, prices.export_eur_kwh, strict=True)
        ):
            t = round((day0 + (prices.first_ptu + i) * PTU_SECONDS - start) / PTU_SECONDS)
            if 0 <= t < ptus:
                imp[t], exp[t] = p_imp, p_exp
        return inputs.model_copy(
            update={"import_price": imp, "export_price": exp, "orders": orders}
        )

    def _take_orders(self, orders: list[FlexOrder]) -> None:
        """Called on the agent's worker thread when the brain kept an order."""
        assert self._loop is not None
        for order in orders:
            self._loop.call_soon_threadsafe(self.control.accept_order, order)
