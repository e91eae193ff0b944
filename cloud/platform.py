"""The aggregator platform's agents from one configuration file (`homeflex cloud run`).

Each aggregator (one per congestion point) and the DSO run as NodeAgents over XMPP with TLS, in
this process. Every agent keeps its state under `state_dir/<name>/`: the replay cache, the
deliveries awaiting acknowledgement, the aggregator's rounds, its security log. So a restart
resumes open rounds and resends what was not acknowledged. Each day at `day_ahead_at` (UTC)
an aggregator opens the next day's round; `--open DAY` opens a round for DAY at start.

```yaml
xmpp: {domain: xmpp.example.net, address: 127.0.0.1, port: 5222}
state_dir: /var/lib/homeflex/agents
aggregators:
  - credentials: /etc/homeflex/agr-1          # key.pem, cert.pem, ca.pem (homeflex pki issue)
    password_file: /etc/homeflex/agr-1/xmpp-password
    congestion_point: trafo-1
    dso: {name: dso-1, certificate: /etc/homeflex/dso-1/cert.pem}
    homes: {home-0001: /var/lib/homeflex/registry/home-0001.pem}
    prices: {import_eur_kwh: 0.25, export_eur_kwh: 0.05}
    day_ahead_at: "12:00"
    answer_window_s: 600
dso:
  credentials: /etc/homeflex/dso-1
  password_file: /etc/homeflex/dso-1/xmpp-password
  max_price: 0.25
  points: [{name: trafo-1, limit_kw: 280, aggregators: {agr-1: /etc/homeflex/agr-1/cert.pem}}]
```
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from cryptography import x509
from pydantic import BaseModel, ConfigDict, Field

from homeflex.agents.carrier import NodeAgent
from homeflex.agents.delivery import Deliveries
from homeflex.agents.messenger import Messenger
from homeflex.agents.node import Brain, Node
from homeflex.agents.permissions import Permissions
from homeflex.agents.rounds import RoundStore
from homeflex.agents.xmpp_tls import XmppEndpoint
from homeflex.cloud.aggregator.brain import AggregatorBrain, DayPrices
from homeflex.cloud.dso.brain import CongestionPoint, DsoBrain
from homeflex.pki.bundle import Credentials
from homeflex.security import SecurityLog

log = logging.getLogger(__name__)
SCHEDULE_EVERY_S = 30.0


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Xmpp(Strict):
    domain: str
    address: str = "127.0.0.1"
    port: int = Field(5222, ge=1, le=65535)


class Party(Strict):
    credentials: Path
    password_file: Path


class Peer(Strict):
    name: str
    certificate: Path


class FlatPrices(Strict):
    import_eur_kwh: float = Field(ge=-10, le=10, allow_inf_nan=False)
    export_eur_kwh: float = Field(ge=-10, le=10, allow_inf_nan=False)


class AggregatorConfig(Party):
    congestion_point: str
    dso: Peer
    homes: dict[str, Path] = Field(description="home name → its certificate")
    prices: FlatPrices
    day_ahead_at: time = time(12, 0)
    answer_window_s: float = Field(600.0, gt=0)


class PointConfig(Strict):
    name: str
    limit_kw: float = Field(gt=0, allow_inf_nan=False)
    aggregators: dict[str, Path] = Field(description="aggregator name → its certificate")


class DsoConfig(Party):
    max_price: float = Field(ge=0, le=10, allow_inf_nan=False)
    points: list[PointConfig] = Field(min_length=1)


class PlatformConfig(Strict):
    xmpp: Xmpp
    state_dir: Path
    aggregators: list[AggregatorConfig] = []
    dso: DsoConfig | None = None


def _chain(path: Path) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a PEM certificate ({exc})") from None


def _agent(
    cfg: PlatformConfig,
    party: Party,
    peers: list[Path],
    make: Callable[[str, Path], Brain],
    homes: frozenset[str] = frozenset(),
) -> tuple[NodeAgent, Brain]:
    """The party's NodeAgent around the brain `make(name, state directory)` gives."""
    creds = Credentials.load(party.credentials)
    name = creds.identity().name
    state = cfg.state_dir / name
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    messenger = Messenger(
        creds,
        Permissions(creds.identity(), homes=homes),
        SecurityLog(state / "security.log"),
        state / "replay.db",
    )
    for path in peers:
        messenger.know(_chain(path))
    brain = make(name, state)
    node = Node(messenger, Deliveries(state / "deliveries.db"), brain)
    password = party.password_file.read_text().strip()
    endpoint = XmppEndpoint(cfg.xmpp.domain, cfg.xmpp.address, cfg.xmpp.port)
    return NodeAgent(node, creds, password, endpoint), brain


def build(cfg: PlatformConfig) -> list[tuple[NodeAgent, Brain, time | None]]:
    """The agents of the configuration, not started; with each aggregator its day-ahead time."""
    out: list[tuple[NodeAgent, Brain, time | None]] = []
    for a in cfg.aggregators:

        def aggregator(name: str, state: Path, a: AggregatorConfig = a) -> AggregatorBrain:
            flat = DayPrices([a.prices.import_eur_kwh] * 96, [a.prices.export_eur_kwh] * 96)
            return AggregatorBrain(
                name, frozenset(a.homes), a.dso.name, a.congestion_point,
                RoundStore(state / "rounds.db"), lambda _day: flat,
                answer_window_s=a.answer_window_s,
            )  # fmt: skip

        peers = [a.dso.certificate, *a.homes.values()]
        agent, brain = _agent(cfg, a, peers, aggregator, frozenset(a.homes))
        out.append((agent, brain, a.day_ahead_at))
    if cfg.dso is not None:
        d = cfg.dso
        points = [CongestionPoint(p.name, p.limit_kw, frozenset(p.aggregators)) for p in d.points]

        def dso(name: str, state: Path) -> DsoBrain:
            return DsoBrain(name, points, d.max_price)

        peers = [path for p in d.points for path in p.aggregators.values()]
        agent, brain = _agent(cfg, d, peers, dso)
        out.append((agent, brain, None))
    return out


def due_day(now: datetime, at: time) -> date | None:
    """The day whose day-ahead round is due at `now`: tomorrow, once today's `at` has passed."""
    return (now + timedelta(days=1)).date() if now.time() >= at else None


async def serve(cfg: PlatformConfig, open_days: list[date], stop: asyncio.Event) -> None:
    parties = build(cfg)
    for agent, _, _ in parties:
        await agent.start()
        log.info("%s connected", agent.node.name)
    print("READY " + " ".join(agent.node.name for agent, _, _ in parties), flush=True)
    for _, brain, _ in parties:
        if isinstance(brain, AggregatorBrain):
            brain.to_open.extend(open_days)
    try:
        while not stop.is_set():
            now = datetime.now(UTC)
            for _, brain, at in parties:
                day = due_day(now, at) if at is not None else None
                if isinstance(brain, AggregatorBrain) and day is not None:
                    brain.to_open.append(day)  # opening one that exists does nothing
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SCHEDULE_EVERY_S)
    finally:
        for agent, _, _ in parties:
            await agent.stop()


def run(cfg: PlatformConfig, open_days: list[date]) -> None:
    import spade

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(cfg, open_days, stop)

    spade.run(main())


def build_check(cfg: PlatformConfig) -> None:
    """Fail before connecting when a credential, password or certificate file is missing or
    unreadable, naming it."""
    for party in [*cfg.aggregators, *([cfg.dso] if cfg.dso else [])]:
        Credentials.load(party.credentials)
        if not party.password_file.is_file():
            raise FileNotFoundError(f"{party.password_file}: no such password file")
    for a in cfg.aggregators:
        for path in [a.dso.certificate, *a.homes.values()]:
            _chain(path)
    for p in cfg.dso.points if cfg.dso else []:
        for path in p.aggregators.values():
            _chain(path)
