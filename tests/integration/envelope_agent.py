"""A SPADE agent in a process of its own that speaks in envelopes (agents/messenger.py), for
the integration tests and the round-trip bench:
  serve N           aggregator: opens N envelopes, answers each opened one with an `ack`
                    envelope carrying `ack: <payload>`; refused ones are reported
  send TYPE TEXT    sends TEXT as TYPE to the peer (--peer), prints the opened answer;
                    --tamper replay sends the same wire twice, --tamper flip a copy with one
                    character of the ciphertext changed, --tamper order a `flex-order` (which
                    homes may not send), each before the genuine one
Every outcome is one JSON line on stdout. The password comes in XMPP_PASSWORD.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import spade
from cryptography import x509
from spade.behaviour import CyclicBehaviour, OneShotBehaviour
from spade.message import Message

from homeflex.agents.envelope import seal
from homeflex.agents.messenger import Messenger
from homeflex.agents.permissions import Permissions
from homeflex.agents.xmpp_tls import TlsAgent, XmppEndpoint
from homeflex.pki.bundle import Credentials
from homeflex.security import SecurityLog


def say(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


class Serve(CyclicBehaviour):  # type: ignore[misc]
    async def run(self) -> None:
        messenger: Messenger = self.agent.get("messenger")
        msg = await self.receive(timeout=self.agent.get("timeout"))
        if msg is None:
            say("error", kind="timeout", detail="no envelope arrived")
            self.kill()
            return
        opened = messenger.open(msg)
        if opened is None:
            event = messenger.security.events()[-1]
            say("refused", kind=event.kind, detail=event.detail)
        else:
            say("opened", type=opened.header.type, sender=opened.sender.name,
                payload=opened.payload.decode())  # fmt: skip
            answer = messenger.message(
                opened.sender.name, "ack", b"ack: " + opened.payload, in_reply_to=opened.header.id
            )
            await self.send(answer)
        self.agent.set("left", self.agent.get("left") - 1)
        if self.agent.get("left") == 0:
            await asyncio.sleep(0.2)  # let the last answer leave
            self.kill()


class Send(OneShotBehaviour):  # type: ignore[misc]
    async def run(self) -> None:
        messenger: Messenger = self.agent.get("messenger")
        msg = messenger.message(self.agent.get("peer"), self.agent.get("type"),
                                self.agent.get("text").encode())  # fmt: skip
        tamper = self.agent.get("tamper")
        if tamper == "flip":
            wire = json.loads(msg.body)
            ct = wire["ct"]
            wire["ct"] = ("B" if ct[10] == "A" else "A").join((ct[:10], ct[11:]))
            flipped = json.dumps(wire, separators=(",", ":"), sort_keys=True)
            await self.send(Message(to=str(msg.to), body=flipped))
        if tamper == "order":  # what only an aggregator may send, sealed without our own check
            peer = messenger.peers.certificate(self.agent.get("peer"), messenger.clock.now())
            wire = seal(
                b"stop charging", type="flex-order", sender=messenger.sender, recipient=peer
            )
            await self.send(Message(to=str(msg.to), body=wire))
        await self.send(msg)
        if tamper == "replay":
            await self.send(Message(to=str(msg.to), body=msg.body))
        say("sent", type=self.agent.get("type"), bytes=len(msg.body))
        answer = await self.receive(timeout=self.agent.get("timeout"))
        if answer is None:
            say("error", kind="timeout", detail="no answer arrived")
            return
        opened = messenger.open(answer)
        if opened is None:
            say("refused", kind=messenger.security.events()[-1].kind)
        else:
            say("opened", type=opened.header.type, sender=opened.sender.name,
                payload=opened.payload.decode(), in_reply_to=opened.header.in_reply_to)  # fmt: skip


async def main(args: argparse.Namespace) -> int:
    creds = Credentials.load(args.creds)
    security = SecurityLog(args.creds / "security.jsonl")
    perms = Permissions(creds.identity(), aggregator=args.aggregator, homes=frozenset(args.home))
    messenger = Messenger(creds, perms, security, args.creds / "replay.db")
    if args.peer_chain:
        messenger.know(x509.load_pem_x509_certificates(args.peer_chain.read_bytes()))
    endpoint = XmppEndpoint(args.domain, args.address, args.port)
    agent = TlsAgent.from_credentials(creds, os.environ["XMPP_PASSWORD"], endpoint, security)
    agent.set("messenger", messenger)
    agent.set("timeout", args.timeout)
    if args.mode == "serve":
        agent.set("left", int(args.what))
        agent.add_behaviour(Serve())
    else:
        agent.set("peer", args.peer)
        agent.set("type", args.what)
        agent.set("text", args.text)
        agent.set("tamper", args.tamper)
        agent.add_behaviour(Send())
    try:
        async with asyncio.timeout(args.timeout):
            await agent.start()
    except Exception as exc:
        say("error", kind=type(exc).__name__, detail=str(exc))
        return 1
    say("connected", jid=str(agent.jid))
    for behaviour in agent.behaviours:
        await behaviour.join(timeout=args.timeout + 1)
    await agent.stop()
    messenger.close()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--creds", type=Path, required=True)
    parser.add_argument("--address", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--domain", required=True)
    parser.add_argument("--timeout", type=float, default=15)
    parser.add_argument("--aggregator", help="on a home: its aggregator's name")
    parser.add_argument("--home", action="append", default=[], help="on an aggregator: a home")
    parser.add_argument("--peer", help="the identity name to send to")
    parser.add_argument("--peer-chain", type=Path, help="the peer's cert.pem")
    parser.add_argument("--tamper", choices=["replay", "flip", "order"])
    parser.add_argument("mode", choices=["serve", "send"])
    parser.add_argument("what", help="serve: how many envelopes; send: the message type")
    parser.add_argument("text", nargs="?", default="")
    args = parser.parse_args()
    result: list[int] = []

    async def entry() -> None:
        result.append(await main(args))

    spade.run(entry())
    sys.exit(result[0] if result else 1)
