"""A SPADE agent in a process of its own, for the XMPP tests: connects with `TlsAgent` (our
credentials, verified TLS), then
  echo          waits for one message, prints it, answers `echo: <body>` to its sender;
  send TO TEXT  sends TEXT to TO and prints the first answer;
  connect       only connects (and disconnects);
  hold          stays connected until the server ends the session (prints "disconnected").
Every outcome is one JSON line on stdout: {"event": "connected" | "received" | "error", ...}.
The password comes in the environment (XMPP_PASSWORD), never on the command line.

python tests/integration/xmpp_agent.py --creds DIR --address 127.0.0.1 --port N \
    --domain xmpp.homeflex.test echo
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import spade
from spade.behaviour import OneShotBehaviour
from spade.message import Message

from homeflex.agents.xmpp_tls import TlsAgent, XmppEndpoint
from homeflex.pki.bundle import Credentials
from homeflex.security import SecurityLog


def say(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


class Echo(OneShotBehaviour):  # type: ignore[misc]
    async def run(self) -> None:
        msg = await self.receive(timeout=self.agent.get("timeout"))
        if msg is None:
            say("error", kind="timeout", detail="no message arrived")
            return
        say("received", sender=str(msg.sender), body=msg.body)
        await self.send(Message(to=str(msg.sender.bare), body=f"echo: {msg.body}"))
        await asyncio.sleep(0.2)  # let the answer leave before the agent stops


class Send(OneShotBehaviour):  # type: ignore[misc]
    async def run(self) -> None:
        to, text = self.agent.get("to"), self.agent.get("text")
        await self.send(Message(to=to, body=text))
        say("sent", to=to, body=text)
        if not self.agent.get("wait_answer"):
            await asyncio.sleep(0.2)
            return
        msg = await self.receive(timeout=self.agent.get("timeout"))
        if msg is None:
            say("error", kind="timeout", detail="no answer arrived")
            return
        say("received", sender=str(msg.sender), body=msg.body)


async def hold(agent: TlsAgent, limit_s: float) -> int:
    ended = asyncio.Event()
    agent.client.add_event_handler("disconnected", lambda _reason: ended.set())
    try:
        await asyncio.wait_for(ended.wait(), limit_s)
    except TimeoutError:
        say("error", kind="timeout", detail="the session was not ended")
        await agent.stop()
        return 1
    say("disconnected")
    return 0


async def main(args: argparse.Namespace) -> int:
    creds = Credentials.load(args.creds)
    security = SecurityLog(args.security_log) if args.security_log else None
    endpoint = XmppEndpoint(args.domain, args.address, args.port)
    agent = TlsAgent.from_credentials(creds, os.environ["XMPP_PASSWORD"], endpoint, security)
    agent.set("timeout", args.timeout)
    if args.mode == "echo":
        agent.add_behaviour(Echo())
    elif args.mode == "send":
        agent.set("to", args.to)
        agent.set("text", args.text)
        agent.set("wait_answer", not args.no_answer)
        agent.add_behaviour(Send())
    try:
        async with asyncio.timeout(args.timeout):
            await agent.start()
    except Exception as exc:  # what the test wants to see: how the connection was refused
        say("error", kind=type(exc).__name__, detail=str(exc))
        return 1
    say("connected", jid=str(agent.jid), tls=agent.client.transport.get_extra_info("cipher")[1])
    if args.mode == "hold":
        return await hold(agent, args.timeout)
    for behaviour in agent.behaviours:
        await behaviour.join(timeout=args.timeout + 1)
    await agent.stop()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--creds", type=Path, required=True)
    parser.add_argument("--address", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--domain", required=True)
    parser.add_argument("--security-log", type=Path)
    parser.add_argument("--timeout", type=float, default=15)
    parser.add_argument("--no-answer", action="store_true")
    parser.add_argument("mode", choices=["echo", "send", "connect", "hold"])
    parser.add_argument("to", nargs="?")
    parser.add_argument("text", nargs="?")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug log on stderr")
    args = parser.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    loop_result: list[int] = []

    async def entry() -> None:
        loop_result.append(await main(args))

    spade.run(entry())
    sys.exit(loop_result[0] if loop_result else 1)
