"""One party of the USEF cycle in a process of its own, over XMPP with TLS, for the integration
tests: `dso`, `aggregator` or `home` (a battery home planned by the real planner). It runs until
SIGTERM, then prints one JSON line: what its brain ended with and what its Node sent; the same
is kept in `<creds>/status.json` meanwhile, each second. The password comes in XMPP_PASSWORD;
`--peer` names a peer's cert.pem (repeatable). A home keeps what it sent and how each message
it got was acknowledged; with `--answer-twice` it sends its first P-plan and offer of a round
again, in new envelopes, once the first ones are acknowledged.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import spade
from cryptography import x509

from homeflex.agents.carrier import NodeAgent
from homeflex.agents.delivery import Deliveries
from homeflex.agents.messages import TYPE_OF, Ack, Payload, Prices
from homeflex.agents.messenger import Messenger
from homeflex.agents.node import Node, Outgoing
from homeflex.agents.permissions import Permissions
from homeflex.agents.rounds import RoundStore
from homeflex.agents.xmpp_tls import XmppEndpoint
from homeflex.cloud.aggregator.brain import AggregatorBrain, DayPrices
from homeflex.cloud.dso.brain import CongestionPoint, DsoBrain
from homeflex.cloud.market.objects import Direction
from homeflex.edge.cems import HomeBrain
from homeflex.edge.planner.inputs import FlexOrder as PlannedOrder
from homeflex.edge.planner.inputs import PlanInputs
from homeflex.pki.bundle import Credentials
from homeflex.security import SecurityLog

EVENING = list(range(76, 84))  # 19:00-21:00
BATTERY = {
    "kind": "battery", "id": "bat", "capacity_wh": 8000, "soc_start_pct": 50,
    "soc_min_pct": 10, "max_charge_w": 3000, "max_discharge_w": 3000,
    "charge_efficiency": 0.95, "discharge_efficiency": 0.95,
}  # fmt: skip


def prices(day: date) -> DayPrices:
    """A little dearer in the evening: the batteries discharge what they hold then, and never
    charge for it (0.28 / 0.95² > 0.30), so the evening stays the peak."""
    imp = [0.30 if t in EVENING else 0.28 for t in range(96)]
    return DayPrices(imp, [0.05] * 96)


def home_inputs(evening_kw: float) -> Any:
    def make(p: Prices, orders: list[PlannedOrder]) -> PlanInputs:
        start = datetime(p.day.year, p.day.month, p.day.day, tzinfo=UTC)
        n = len(p.import_eur_kwh)
        start += p.first_ptu * timedelta(minutes=15)
        load = [evening_kw * 1000 if p.first_ptu + t in EVENING else 800.0 for t in range(n)]
        return PlanInputs.model_validate(
            {"start": start, "ptus": n, "import_price": p.import_eur_kwh,
             "export_price": p.export_eur_kwh, "base_load_w": load, "devices": [BATTERY],
             "orders": orders, "time_limit_s": 10.0}
        )  # fmt: skip

    return make


class Recording:
    """The DSO's brain, keeping what it was sent (to show it holds no home's data)."""

    def __init__(self, brain: DsoBrain) -> None:
        self.brain = brain
        self.received: list[str] = []

    def on_message(self, sender: str, message: Payload, now: float) -> Any:
        self.received.append(message.encode().decode())
        return self.brain.on_message(sender, message, now)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.brain, name)


class Home:
    """A home's brain, keeping what it sent its aggregator (by delivery key), every message it
    got with the acknowledgement it gave, and the acknowledgements it received: the tests
    compare the aggregator's sums and orders with these. With `answer_twice`, the first P-plan
    and the offer of a round go out once more (key `again:<key>`, so a new delivery and a new
    envelope) as soon as the aggregator acknowledged the first: what a home does that missed
    an acknowledgement or restarted with its answers kept."""

    def __init__(self, brain: HomeBrain, *, answer_twice: bool = False) -> None:
        self.brain = brain
        self.answer_twice = answer_twice
        self.sent: dict[str, Payload] = {}
        self.got: list[dict[str, str]] = []
        self.acks: dict[str, dict[str, str]] = {}

    def on_message(self, sender: str, message: Payload, now: float) -> tuple[Ack, list[Outgoing]]:
        ack, out = self.brain.on_message(sender, message, now)
        # prices by their round, an order by its id, a settlement by its order
        names = [a for a in ("id", "round", "order") if hasattr(message, a)]
        about = str(getattr(message, names[0])) if names else ""
        self.got.append({"type": TYPE_OF[type(message)], "about": about, "status": ack.status,
                         "detail": ack.detail})  # fmt: skip
        self.sent |= {o.key: o.message for o in out if o.key is not None}
        return ack, out

    def on_delivered(self, key: str, ack: Ack, now: float) -> list[Outgoing]:
        self.acks[key] = {"status": ack.status, "detail": ack.detail}
        out = self.brain.on_delivered(key, ack, now)
        first = key.startswith("offer:") or (key.startswith("plan:") and key.endswith(":0"))
        if self.answer_twice and first and key in self.sent:
            out.append(Outgoing(self.brain.aggregator, self.sent[key], key=f"again:{key}"))
        return out

    def on_failed(self, key: str, now: float) -> list[Outgoing]:
        return self.brain.on_failed(key, now)

    def on_tick(self, now: float) -> list[Outgoing]:
        return self.brain.on_tick(now)


def summary(node: Node, brain: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"sent": node.sent, "resent": node.resent, "failed": node.failed}
    if isinstance(brain, Recording):
        checks = []
        for check in brain.brain.checks:
            got = check.procurements.get(Direction.UP)
            checks.append({
                "safe": check.safe, "before_max_kw": max(check.prognosis_kw()),
                "after_max_kw": max(check.after_kw()),
                "request_kw": {t: kw for r in check.requests.values()
                               for t, kw in r.profile_kw.items()},
                "cost_eur": None if got is None else got.total_cost_eur,
                "orders": [] if got is None else [o.id for o in got.orders()],
            })  # fmt: skip
        out |= {"checks": checks, "received": brain.received}
    elif isinstance(brain, AggregatorBrain):
        out["open_rounds"] = {rid: sorted(r.plans) for rid, r in brain.rounds.items()}
        out["flex"] = {
            rid: {o: {h: m.profile_kw for h, m in homes.items()} for o, homes in f.orders.items()}
            for rid, f in brain.flex.items()
        }
    elif isinstance(brain, Home):
        home = brain.brain
        out["orders"] = {k: [p.max_net_w for p in v] for k, v in home.orders.items()}
        ordered: dict[int, float] = {}
        for order in home.accepted.values():
            for t, kw in order.profile_kw.items():
                ordered[t] = ordered.get(t, 0.0) + kw
        out["ordered_kw"] = ordered
        out["rounds"] = sorted(home.answered)
        out["accepted"] = {k: o.model_dump(mode="json") for k, o in home.accepted.items()}
        out["answers"] = {k: m.model_dump(mode="json") for k, m in brain.sent.items()}
        out["got"] = list(brain.got)
        out["acks"] = dict(brain.acks)
    return out


async def main(args: argparse.Namespace) -> int:
    creds = Credentials.load(args.creds)
    me = creds.identity()
    security = SecurityLog(args.creds / "security.jsonl")
    perms = Permissions(me, aggregator=args.aggregator, homes=frozenset(args.home))
    messenger = Messenger(creds, perms, security, args.creds / "replay.db")
    for chain in args.peer:
        messenger.know(x509.load_pem_x509_certificates(chain.read_bytes()))
    brain: Any
    if args.role == "dso":
        point = CongestionPoint(args.point, args.limit_kw, frozenset([args.aggregator_of]))
        brain = Recording(DsoBrain(me.name, [point], args.max_price, prognosis_wait_s=30,
                                   offer_window_s=30))  # fmt: skip
    elif args.role == "aggregator":
        store = RoundStore(args.creds / "rounds.db")
        brain = AggregatorBrain(me.name, frozenset(args.home), args.dso, args.point, store, prices,
                                answer_window_s=args.answer_s)  # fmt: skip
    else:
        brain = Home(HomeBrain(me.name, args.aggregator, home_inputs(args.evening_kw), EVENING),
                     answer_twice=args.answer_twice)  # fmt: skip
    node = Node(messenger, Deliveries(args.creds / "deliveries.db"), brain)
    agent = NodeAgent(node, creds, os.environ["XMPP_PASSWORD"],
                      XmppEndpoint(args.domain, args.address, args.port), tick_s=0.5)  # fmt: skip
    await agent.start()
    print(json.dumps({"event": "connected"}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    if isinstance(brain, AggregatorBrain):
        await asyncio.sleep(args.start_after)  # the homes are online by then
        brain.to_open.append(date.fromisoformat(args.day))
    status = args.creds / "status.json"
    while not stop.is_set():  # what the brain holds so far, for the test to watch
        try:
            text = json.dumps(summary(node, brain))
        except RuntimeError:  # the brain's thread changed a dict meanwhile: next time
            text = None
        if text is not None:
            status.with_suffix(".tmp").write_text(text)
            status.with_suffix(".tmp").replace(status)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    await agent.stop()
    print(json.dumps({"event": "summary", **summary(node, brain)}), flush=True)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--creds", type=Path, required=True)
    parser.add_argument("--address", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--domain", required=True)
    parser.add_argument("--peer", type=Path, action="append", default=[])
    parser.add_argument("--aggregator", help="home: its aggregator")
    parser.add_argument("--home", action="append", default=[], help="aggregator: a home")
    parser.add_argument("--aggregator-of", help="dso: the aggregator at the point")
    parser.add_argument("--dso", help="aggregator: its DSO")
    parser.add_argument("--point", default="trafo-1")
    parser.add_argument("--limit-kw", type=float, default=30.0)
    parser.add_argument("--max-price", type=float, default=0.25)
    parser.add_argument("--day", default="2026-01-15")
    parser.add_argument("--answer-s", type=float, default=20.0)
    parser.add_argument("--start-after", type=float, default=2.0)
    parser.add_argument("--evening-kw", type=float, default=3.0)
    parser.add_argument("--answer-twice", action="store_true", help="home: answer a round twice")
    parser.add_argument("role", choices=["dso", "aggregator", "home"])
    args = parser.parse_args()
    result: list[int] = []

    async def entry() -> None:
        result.append(await main(args))

    spade.run(entry())
    sys.exit(result[0] if result else 1)
