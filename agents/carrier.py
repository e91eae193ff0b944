"""A Node on XMPP: the SPADE agent every party runs (home, aggregator, DSO).

Two behaviours: one takes each arriving message to the Node, the other ticks the Node every
`tick_s` (its brain's timers, resends, expiries). The Node's work runs on a worker thread, one
call at a time: a home's planner takes seconds, and meanwhile the XMPP session must keep
answering the server. What the Node returns is sent in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

from spade.behaviour import CyclicBehaviour, PeriodicBehaviour

from homeflex.agents.node import Node
from homeflex.agents.xmpp_tls import TlsAgent, XmppEndpoint, xmpp_tls_context
from homeflex.pki.bundle import Credentials

log = logging.getLogger(__name__)
T = TypeVar("T")


class NodeAgent(TlsAgent):
    def __init__(
        self,
        node: Node,
        creds: Credentials,
        password: str,
        endpoint: XmppEndpoint,
        *,
        tick_s: float = 1.0,
    ) -> None:
        """`node` is this party's (its Messenger was made from the same `creds`); its clock is
        the one the brain is given."""
        jid = creds.identity().xmpp
        if jid is None:
            raise ValueError(f"{creds.cert_path}: the certificate carries no XMPP address")
        super().__init__(jid, password, endpoint, xmpp_tls_context(creds), node.messenger.security)
        self.node = node
        self.tick_s = tick_s
        self._busy = asyncio.Lock()

    def now(self) -> float:
        return self.node.messenger.clock.now()

    async def setup(self) -> None:
        self.add_behaviour(_Receive())
        self.add_behaviour(_Tick(period=self.tick_s))

    async def work(self, fn: Callable[[], T]) -> T:
        """`fn` on the worker thread, one call at a time (the brain is not thread-safe)."""
        async with self._busy:
            return await asyncio.get_running_loop().run_in_executor(None, fn)


class _Receive(CyclicBehaviour):  # type: ignore[misc]
    async def run(self) -> None:
        msg = await self.receive(timeout=1.0)
        if msg is None:
            return
        agent: NodeAgent = self.agent
        try:
            out = await agent.work(lambda: agent.node.receive(msg, agent.now()))
        except Exception:  # one bad message must not stop the agent
            log.exception("%s: handling a message from %s", agent.node.name, msg.sender)
            return
        for m in out:
            await self.send(m)


class _Tick(PeriodicBehaviour):  # type: ignore[misc]
    async def run(self) -> None:
        agent: NodeAgent = self.agent
        try:
            out = await agent.work(lambda: agent.node.tick(agent.now()))
        except Exception:
            log.exception("%s: tick", agent.node.name)
            return
        for m in out:
            await self.send(m)
