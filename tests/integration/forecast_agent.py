"""A party that asks the forecaster for one forecast over XMPP and prints what came back (the
acknowledgement of its request, the forecast if any) as one JSON line, then stops. Run by
tests/integration/test_forecaster.py, one process per asking party."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import spade
from cryptography import x509

from homeflex.agents.carrier import NodeAgent
from homeflex.agents.delivery import Deliveries
from homeflex.agents.messages import Ack, Forecast, ForecastRequest, Payload
from homeflex.agents.messenger import Messenger
from homeflex.agents.node import Node, Outgoing, Reporting
from homeflex.agents.permissions import Permissions
from homeflex.agents.xmpp_tls import XmppEndpoint
from homeflex.pki.bundle import Credentials
from homeflex.security import SecurityLog


class Asker(Reporting):
    def __init__(self, name: str, forecaster: str, request: ForecastRequest) -> None:
        self.name, self.forecaster, self.request = name, forecaster, request
        self.asked = False
        self.ack: dict[str, Any] | None = None
        self.forecast: dict[str, Any] | None = None

    def on_message(self, sender: str, message: Payload, now: float) -> tuple[Ack, list[Outgoing]]:
        if isinstance(message, Forecast):
            self.forecast = message.model_dump(mode="json")
        return Ack(status="ok"), []

    def on_delivered(self, key: str, ack: Ack, now: float) -> list[Outgoing]:
        self.ack = ack.model_dump(mode="json")
        return []

    def on_tick(self, now: float) -> list[Outgoing]:
        if self.asked:
            return []
        self.asked = True
        return [Outgoing(self.forecaster, self.request, key="forecast-request")]

    def done(self) -> bool:
        return self.ack is not None and (self.ack["status"] != "ok" or self.forecast is not None)


async def main(args: argparse.Namespace) -> int:
    creds = Credentials.load(args.creds)
    me = creds.identity()
    messenger = Messenger(creds, Permissions(me), SecurityLog(args.creds / "security.jsonl"),
                          args.creds / "replay.db")  # fmt: skip
    chain = x509.load_pem_x509_certificates(args.forecaster_cert.read_bytes())
    forecaster = messenger.know(chain).name
    request = ForecastRequest(day=date.fromisoformat(args.day), series=args.series, site=args.site)
    brain = Asker(me.name, forecaster, request)
    node = Node(messenger, Deliveries(args.creds / "deliveries.db"), brain)
    agent = NodeAgent(node, creds, os.environ["XMPP_PASSWORD"],
                      XmppEndpoint(args.domain, args.address, args.port), tick_s=0.2)  # fmt: skip
    await agent.start()
    deadline = time.monotonic() + args.wait_s
    # the brain runs on the agent's worker thread, which no asyncio.Event may be set from
    while not brain.done() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    await agent.stop()
    print(json.dumps({"ack": brain.ack, "forecast": brain.forecast}), flush=True)
    return 0 if brain.done() else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--creds", type=Path, required=True)
    parser.add_argument("--forecaster-cert", type=Path, required=True)
    parser.add_argument("--address", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--domain", required=True)
    parser.add_argument("--day", required=True)
    parser.add_argument("--series", action="append", choices=["pv", "load"], required=True)
    parser.add_argument("--site")
    parser.add_argument("--wait-s", type=float, default=30.0)
    args = parser.parse_args()
    result: list[int] = []

    async def entry() -> None:
        result.append(await main(args))

    spade.run(entry())
    sys.exit(result[0] if result else 1)
