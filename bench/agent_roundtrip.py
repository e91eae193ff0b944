"""Agent round trip over XMPP with and without envelopes: a home agent sends a 200-byte
message to its aggregator agent, which answers; the time from send to answer, plain SPADE
messages against sealed and opened envelopes (both directions), through the embedded server
with TLS on loopback. Usage: PYTHONPATH=. python -m bench.agent_roundtrip [--count 200]
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import spade
from spade.behaviour import CyclicBehaviour, OneShotBehaviour
from spade.message import Message

from bench.machine import machine
from bench.xmpp_fleet import DOMAIN, xmpp_fleet
from homeflex.agents.messenger import Messenger
from homeflex.agents.permissions import Permissions
from homeflex.agents.xmpp_tls import TlsAgent, XmppEndpoint
from homeflex.pki.bundle import Credentials
from homeflex.pki.identity import Role
from homeflex.security import SecurityLog


class Answer(CyclicBehaviour):  # type: ignore[misc]
    """The aggregator: plain messages are answered plainly, envelopes with an `ack` envelope."""

    async def run(self) -> None:
        msg = await self.receive(timeout=30)
        if msg is None:
            return
        messenger: Messenger = self.agent.get("messenger")
        if msg.get_metadata("homeflex-type"):
            opened = messenger.open(msg)
            assert opened is not None, messenger.security.events()[-1]
            reply = messenger.message(
                opened.sender.name, "ack", opened.payload, in_reply_to=opened.header.id
            )
            await self.send(reply)
        else:
            await self.send(Message(to=str(msg.sender.bare), body=msg.body))


class Ask(OneShotBehaviour):  # type: ignore[misc]
    """The home: `count` round trips each way of sending, interleaved in rounds of ten."""

    async def run(self) -> None:
        messenger: Messenger = self.agent.get("messenger")
        payload = secrets.token_hex(100).encode()  # 200 bytes
        times: dict[str, list[float]] = {"plain": [], "envelope": []}
        for i in range(self.agent.get("count") * 2 + 20):
            kind = "envelope" if (i // 10) % 2 else "plain"
            t = time.perf_counter()
            if kind == "plain":
                await self.send(Message(to=f"agg-1@{DOMAIN}", body=payload.decode()))
            else:
                await self.send(messenger.message("agg-1", "p-plan", payload))
            answer = await self.receive(timeout=30)
            assert answer is not None, "no answer"
            if kind == "envelope":
                opened = messenger.open(answer)
                assert opened is not None and opened.payload == payload
            else:
                assert answer.body == payload.decode()
            if i >= 20:  # the first rounds warm up both sides (chain checks are cached)
                times[kind].append(time.perf_counter() - t)
        self.agent.set("times", times)


def agent(creds: Credentials, password: str, port: int, base: Path) -> TlsAgent:
    perms = Permissions(creds.identity(), aggregator="agg-1", homes=frozenset({"box-a"}))
    name = creds.identity().name
    messenger = Messenger(creds, perms, SecurityLog(base / f"{name}.log"), base / f"{name}.db")
    a = TlsAgent.from_credentials(creds, password, XmppEndpoint(DOMAIN, "127.0.0.1", port))
    a.set("messenger", messenger)
    return a


async def answer(base: Path, port: int, password: str) -> None:
    """The aggregator, in a process of its own: SPADE hands messages between agents of one
    process directly, so the round trip would not touch XMPP."""
    agg = agent(Credentials.load(base / "agg-1"), password, port, base)
    behaviour = Answer()
    agg.add_behaviour(behaviour)
    await agg.start()
    print("READY", flush=True)
    await behaviour.join()


async def ask(base: Path, port: int, password: str, count: int) -> dict[str, list[float]]:
    box = agent(Credentials.load(base / "box-a"), password, port, base)
    box.get("messenger").know(Credentials.load(base / "agg-1").chain())
    box.set("count", count)
    behaviour = Ask()
    box.add_behaviour(behaviour)
    await box.start()
    await behaviour.join(timeout=600)
    times: dict[str, list[float]] = box.get("times")
    await box.stop()
    return times


def spawn(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )


def ready(proc: subprocess.Popen[bytes]) -> list[str]:
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().split()
    assert line[:1] == ["READY"], f"did not start: {line}"
    return line


def setup(base: Path) -> dict[str, str]:
    """A PKI, the XMPP service's and both agents' credentials, their accounts; passwords."""
    return xmpp_fleet(base, [("agg-1", Role.AGGREGATOR), ("box-a", Role.HOME)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=200, help="round trips of each kind")
    parser.add_argument("--answer", nargs=2, metavar=("BASE", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.answer:  # the aggregator's process
        base = Path(args.answer[0])
        password = sys.stdin.readline().strip()
        spade.run(answer(base, int(args.answer[1]), password))
        return
    result: list[dict[str, list[float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        passwords = setup(base)
        server = spawn("-m", "homeflex.cloud.xmpp.embedded", "--config", str(base / "xmpp.yaml"))
        aggregator = None
        try:
            port = int(ready(server)[2])
            aggregator = subprocess.Popen(
                [sys.executable, "-m", "bench.agent_roundtrip", "--answer", str(base), str(port)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            assert aggregator.stdin is not None
            aggregator.stdin.write(passwords["agg-1"].encode() + b"\n")
            aggregator.stdin.flush()
            ready(aggregator)

            async def entry() -> None:
                result.append(await ask(base, port, passwords["box-a"], args.count))

            spade.run(entry())
        finally:
            for proc in (aggregator, server):
                if proc is not None:
                    proc.terminate()
                    proc.wait(10)
    times = result[0]
    print(f"machine: {machine()}")
    print(
        "agent round trip over XMPP (embedded pyjabber, STARTTLS, loopback; home and aggregator "
        f"in two processes), 200-byte payload, {args.count} of each:"
    )
    med: dict[str, Any] = {}
    for kind, values in times.items():
        ms = sorted(v * 1000 for v in values)
        med[kind] = statistics.median(ms)
        p95 = ms[int(0.95 * (len(ms) - 1))]
        print(f"  {kind:<9} median {med[kind]:6.2f} ms   p95 {p95:6.2f} ms")
    print(f"  envelope overhead: {med['envelope'] / med['plain']:.2f}x the plain round trip")


if __name__ == "__main__":
    main()
