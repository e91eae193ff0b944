"""A market round over XMPP with TLS and envelopes, phase by phase, for 50, 100 and 200 homes.

Processes: the embedded XMPP server (pyjabber), the DSO, the aggregator, and one process hosting
every home agent (each its own XMPP session, Messenger and Delivery store). The homes answer
from a fixed P-plan and offer (the planner's own time is bench.planner_solve's); the aggregator
and the DSO are the product's brains (cloud/aggregator, cloud/dso) in NodeAgents, as in the
integration test. The homes' evening peak is 3 kW each against a transformer limit of 2.8 kW
per home, so every round has a request, an offer and orders. The aggregator times:
  prices → every P-plan and offer in (the round closes when all have answered),
  close → the DSO's request in (D-prognosis out, the DSO's check),
  request → the DSO's orders in (the aggregator's offer out, the DSO's purchase),
  orders → every home has acknowledged its order.
Usage: PYTHONPATH=. python -m bench.agent_round [--homes 50 100 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

import spade
from cryptography import x509

from bench.machine import machine
from bench.xmpp_fleet import DOMAIN, xmpp_fleet
from homeflex.agents.carrier import NodeAgent
from homeflex.agents.delivery import Deliveries
from homeflex.agents.messages import (
    Ack,
    FlexOffer,
    FlexOrder,
    FlexRequest,
    OfferBlock,
    Payload,
    PPlan,
    Prices,
)
from homeflex.agents.messenger import Messenger
from homeflex.agents.node import Node, Outgoing, Reporting
from homeflex.agents.permissions import Permissions
from homeflex.agents.rounds import RoundStore
from homeflex.agents.xmpp_tls import XmppEndpoint
from homeflex.cloud.aggregator.brain import AggregatorBrain, DayPrices
from homeflex.cloud.dso.brain import CongestionPoint, DsoBrain
from homeflex.pki.bundle import Credentials
from homeflex.pki.identity import Role
from homeflex.security import SecurityLog

DAY = date(2026, 1, 15)
EVENING = range(76, 84)
PHASES = ("answers", "request", "orders", "acks")


def home_name(n: int) -> str:
    return f"home-{n:04d}"


class QuickHome(Reporting):
    """A home that answers at once: 3 kW in the evening, 0.8 kW before; 1 kW less on offer in
    each evening PTU at its own price."""

    def __init__(self, name: str, n: int) -> None:
        self.name = name
        self.price = round(0.05 + 0.001 * n, 3)

    def on_message(self, sender: str, message: Payload, now: float) -> tuple[Ack, list[Outgoing]]:
        if isinstance(message, Prices):
            plan = PPlan(round=message.round, day=message.day, revision=0,
                         net_kw=[3.0 if t in EVENING else 0.8 for t in range(96)])  # fmt: skip
            blocks = [OfferBlock(ptu=t, direction="up", kw=1.0, price=self.price) for t in EVENING]
            offer = FlexOffer(round=message.round, id=f"{self.name}.o", day=message.day,
                              blocks=blocks)  # fmt: skip
            return Ack(status="ok"), [
                Outgoing(sender, plan, key=f"plan:{message.round}"),
                Outgoing(sender, offer, key=f"offer:{message.round}"),
            ]
        return Ack(status="ok"), []  # an order: kept


class TimedAggregator(AggregatorBrain):
    """The product's aggregator, noting when each phase of the round ended."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.times: dict[str, float] = {}
        self.orders_out: set[str] = set()
        self.acked: set[str] = set()
        self.done = threading.Event()  # set on the Node's worker thread

    def open_round(self, day: date, now: float, seq: int = 0) -> list[Outgoing]:
        self.times.setdefault("start", time.time())
        return super().open_round(day, now, seq)

    def on_tick(self, now: float) -> list[Outgoing]:
        out = super().on_tick(now)
        if any(o.key and o.key.startswith("prognosis:") for o in out):
            self.times.setdefault("answers", time.time())
        return out

    def on_message(self, sender: str, message: Payload, now: float) -> tuple[Ack, list[Outgoing]]:
        ack, out = super().on_message(sender, message, now)
        if isinstance(message, FlexRequest):
            self.times.setdefault("request", time.time())
        if isinstance(message, FlexOrder):
            self.times["orders"] = time.time()  # the last of the DSO's orders
            self.orders_out |= {o.key for o in out if o.key}
        return ack, out

    def on_delivered(self, key: str, ack: Ack, now: float) -> list[Outgoing]:
        if key in self.orders_out:
            self.acked.add(key)
            if self.acked == self.orders_out:
                self.times["acks"] = time.time()
                self.done.set()
        return super().on_delivered(key, ack, now)


def messenger(base: Path, name: str, **perms: Any) -> Messenger:
    creds = Credentials.load(base / name)
    m = Messenger(creds, Permissions(creds.identity(), **perms), SecurityLog(base / f"{name}.log"),
                  base / f"{name}-replay.db")  # fmt: skip
    return m


def know(m: Messenger, base: Path, *names: str) -> None:
    for name in names:
        m.know(x509.load_pem_x509_certificates((base / name / "cert.pem").read_bytes()))


async def run_party(role: str, base: Path, port: int, homes: int) -> None:
    passwords = json.loads((base / "passwords.json").read_text())
    endpoint = XmppEndpoint(DOMAIN, "127.0.0.1", port)
    names = [home_name(n) for n in range(homes)]
    agents: list[NodeAgent] = []
    if role == "homes":
        for n, name in enumerate(names):
            m = messenger(base, name, aggregator="agr-1")
            know(m, base, "agr-1")
            node = Node(m, Deliveries(base / f"{name}-deliveries.db"), QuickHome(name, n))
            agents.append(NodeAgent(node, Credentials.load(base / name), passwords[name],
                                    endpoint, tick_s=0.5))  # fmt: skip
    elif role == "dso":
        m = messenger(base, "dso-1")
        know(m, base, "agr-1")
        point = CongestionPoint("trafo-1", 2.8 * homes, frozenset({"agr-1"}))
        brain: Any = DsoBrain("dso-1", [point], max_price=0.5)
        node = Node(m, Deliveries(base / "dso-deliveries.db"), brain)
        agents.append(NodeAgent(node, Credentials.load(base / "dso-1"), passwords["dso-1"],
                                endpoint, tick_s=0.2))  # fmt: skip
    else:
        m = messenger(base, "agr-1", homes=frozenset(names))
        know(m, base, "dso-1", *names)
        aggregator = TimedAggregator("agr-1", frozenset(names), "dso-1", "trafo-1",
                                     RoundStore(base / "rounds.db"), _prices,
                                     answer_window_s=120)  # fmt: skip
        node = Node(m, Deliveries(base / "agr-deliveries.db"), aggregator)
        agents.append(NodeAgent(node, Credentials.load(base / "agr-1"), passwords["agr-1"],
                                endpoint, tick_s=0.2))  # fmt: skip
    for a in agents:
        await a.start()
    print("READY", flush=True)
    if role == "aggregator":
        aggregator.to_open.append(DAY)
        await asyncio.get_running_loop().run_in_executor(None, aggregator.done.wait)
        times = {**aggregator.times, "sent": node.sent, "resent": node.resent}
        (base / "times.json").write_text(json.dumps(times))
        print("DONE", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # until told
    for a in agents:
        await a.stop()


def _prices(day: date) -> DayPrices:
    return DayPrices([0.25] * 96, [0.05] * 96)


def setup(base: Path, homes: int) -> None:
    parties = [("agr-1", Role.AGGREGATOR), ("dso-1", Role.DSO)]
    parties += [(home_name(n), Role.HOME) for n in range(homes)]
    passwords = xmpp_fleet(base, parties)
    (base / "passwords.json").write_text(json.dumps(passwords))
    (base / "passwords.json").chmod(0o600)


def spawn(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip


def expect(proc: subprocess.Popen[bytes], word: str) -> list[str]:
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().split()
    if line[:1] != [word]:
        raise SystemExit(f"expected {word}, got {line}")
    return line


def one_round(homes: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        setup(base, homes)
        server = spawn("-m", "homeflex.cloud.xmpp.embedded", "--config", str(base / "xmpp.yaml"))
        procs = [server]
        try:
            port = expect(server, "READY")[2]

            def party(role: str) -> subprocess.Popen[bytes]:
                p = spawn("-m", "bench.agent_round", "--party", role, str(base), port, str(homes))
                procs.append(p)
                return p

            started = time.perf_counter()
            expect(party("homes"), "READY")
            connect_s = time.perf_counter() - started
            expect(party("dso"), "READY")
            agg = party("aggregator")
            expect(agg, "READY")
            expect(agg, "DONE")
            times: dict[str, float] = json.loads((base / "times.json").read_text())
            times["connect_s"] = connect_s
            return times
        finally:
            for p in reversed(procs):
                if p is not server and p.stdin is not None:
                    p.stdin.write(b"stop\n")
                    p.stdin.flush()
            for p in reversed(procs):
                if p is server:
                    p.terminate()
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\nUsage:")[0])
    parser.add_argument("--homes", type=int, nargs="+", default=[50, 100, 200])
    parser.add_argument("--party", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.party:
        role, base, port, homes = args.party
        spade.run(run_party(role, Path(base), int(port), int(homes)))
        return
    print(f"machine: {machine()}")
    print("a market round over XMPP (embedded pyjabber, STARTTLS on loopback, every message an "
          "envelope, delivered until acknowledged); seconds per phase:")  # fmt: skip
    print(f"  {'homes':>5}  {'answers':>8} {'request':>8} {'orders':>8} {'acks':>8}  "
          f"{'round':>7}  messages (aggregator)  homes' sessions up")  # fmt: skip
    for n in args.homes:
        t = one_round(n)
        phases = []
        before = t["start"]
        for name in PHASES:
            phases.append(t[name] - before)
            before = t[name]
        total = t["acks"] - t["start"]
        print(f"  {n:5d}  " + " ".join(f"{p:8.2f}" for p in phases) + f"  {total:7.2f}  "
              f"{int(t['sent']):,} sent, {int(t['resent'])} resent      {t['connect_s']:.1f} s",
              flush=True)  # fmt: skip
    print("target: a full round for 200 homes ≤ 10 s")


if __name__ == "__main__":
    main()
