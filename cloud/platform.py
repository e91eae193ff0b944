"""The aggregator platform's agents from one configuration file (`homeflex cloud run`).

Each aggregator (one per congestion point), the DSO and the forecaster run as NodeAgents over
XMPP with TLS, in this process. Every agent keeps its state under `state_dir/<name>/`: the
replay cache, the deliveries awaiting acknowledgement, the aggregator's rounds, the DSO's
checks, the security log. So a restart resumes open rounds and validations and resends what was
not acknowledged. Each day at `day_ahead_at` (UTC) an aggregator opens the next day's round;
`--open DAY` opens a round for DAY at start.

An aggregator's prices are flat, or come from a price file in the gateway's format (start,
series_step_s, import_price, export_price; cloud/aggregator/prices.py), with flat prices where
the file has none (by default the gateway's 0.30 and 0.05 €/kWh):
`prices: {file: /etc/homeflex/prices.yaml, import_eur_kwh: 0.25}`. The forecaster answers PV
and load forecasts for its sites (cloud/forecast/): a home's site is named like the home, and
only that home and the site's `readers` may ask for it.

Settle: an aggregator with `history` (the history ingest's data directory) settles each day
with DSO orders `settle_after_s` after its end (the agents' clock), from its homes' metered PTU
energies there (the device `meter_device` of each home's gateway): each home its Settlement,
the DSO one sum of the homes per day (cloud/aggregator/brain.py). Its ledger, and the DSO's,
is `ledger.db` in the agent's state directory; a kWh short costs `penalty_eur_kwh`.

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
    history: /var/lib/homeflex/history   # optional: without it the aggregator does not settle
    meter_device: meter
    settle_after_s: 1800
    penalty_eur_kwh: 0.1
dso:
  credentials: /etc/homeflex/dso-1
  password_file: /etc/homeflex/dso-1/xmpp-password
  max_price: 0.25
  penalty_eur_kwh: 0.1
  points:
    - name: trafo-1
      limit_kw: 280
      aggregators: {agr-1: /etc/homeflex/agr-1/cert.pem}
      feeder:           # optional: the LV feeder behind it, checked by a power flow as well
        buses: {agr-1: R18}                 # where each aggregator's homes connect
        other_load_kw: {R1: 150, R15: 40}   # the other homes: kW, or a list of 96 (per PTU)
        v_min: 0.9
        v_max: 1.1
forecaster:
  credentials: /etc/homeflex/forecast-1
  password_file: /etc/homeflex/forecast-1/xmpp-password
  sites:
    home-0001: {latitude: 52.1, longitude: 5.1, kwp: 4.2, annual_kwh: 3500, utc_offset_h: 1,
                readers: [agr-1]}
```
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from functools import partial
from pathlib import Path
from typing import Annotated, Literal

from cryptography import x509
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from homeflex.agents.carrier import NodeAgent
from homeflex.agents.delivery import Deliveries
from homeflex.agents.messages import ID
from homeflex.agents.messenger import Messenger
from homeflex.agents.node import Brain, Node
from homeflex.agents.permissions import Permissions
from homeflex.agents.rounds import RoundStore
from homeflex.agents.xmpp_tls import XmppEndpoint
from homeflex.cloud.agent_status import status, write_status
from homeflex.cloud.aggregator.brain import AggregatorBrain, DayPrices, Settling
from homeflex.cloud.aggregator.local_market import PaymentRule
from homeflex.cloud.aggregator.meters import HistoryDirMeters
from homeflex.cloud.aggregator.prices import FilePrices
from homeflex.cloud.dso.brain import PTUS, CongestionPoint, DsoBrain
from homeflex.cloud.dso.checks import CheckStore
from homeflex.cloud.dso.feeder import Feeder
from homeflex.cloud.forecast.brain import ForecasterBrain
from homeflex.cloud.forecast.site import Site
from homeflex.cloud.market.grid import EN50160_PU
from homeflex.cloud.market.settlement import Ledger
from homeflex.pki.bundle import Credentials
from homeflex.security import SecurityLog

log = logging.getLogger(__name__)
SCHEDULE_EVERY_S = 30.0
STATUS_EVERY_S = 2.0  # each agent's status.json (cloud/agent_status.py)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Xmpp(Strict):
    domain: str
    address: str = "127.0.0.1"
    port: int = Field(5222, ge=1, le=65535)


class Party(Strict):
    credentials: Path
    password_file: Path


Penalty = Field(0.1, ge=0, le=10, allow_inf_nan=False, description="€ per kWh not delivered")


class Peer(Strict):
    name: str
    certificate: Path


class FlatPrices(Strict):
    import_eur_kwh: float = Field(ge=-10, le=10, allow_inf_nan=False)
    export_eur_kwh: float = Field(ge=-10, le=10, allow_inf_nan=False)


class PricesFromFile(Strict):
    """A price file in the gateway's format; the flat prices (the gateway's defaults) where it
    has none."""

    file: Path
    import_eur_kwh: float = Field(0.30, ge=-10, le=10, allow_inf_nan=False)
    export_eur_kwh: float = Field(0.05, ge=-10, le=10, allow_inf_nan=False)

    def source(self) -> FilePrices:
        """The day prices it gives; ConfigError naming the file and field when it is bad."""
        return FilePrices(self.file, self.import_eur_kwh, self.export_eur_kwh)


class AggregatorConfig(Party):
    congestion_point: str
    dso: Peer
    homes: dict[str, Path] = Field(description="home name → its certificate")
    prices: FlatPrices | PricesFromFile
    day_ahead_at: time | None = Field(
        time(12, 0), description="UTC; null: rounds only for the days given with --open"
    )
    answer_window_s: float = Field(600.0, gt=0)
    payment: PaymentRule = "pay-as-bid"  # how a home's share of a DSO order is priced
    history: Path | None = Field(
        None, description="the history ingest's data directory; null: no settling"
    )
    meter_device: str = Field("meter", min_length=1, description="the homes' meter device id")
    settle_after_s: float = Field(
        1800.0, ge=0, allow_inf_nan=False, description="after a day's end, when settling begins"
    )
    settle_retry_s: float = Field(
        60.0, gt=0, allow_inf_nan=False, description="how often settling is tried until done"
    )
    penalty_eur_kwh: float = Penalty


LoadPoint = Literal["R1", "R11", "R15", "R16", "R17", "R18"]  # grid.RESIDENTIAL_LOAD_POINTS
Kw = Annotated[float, Field(ge=-1000, le=1000, allow_inf_nan=False)]


class FeederConfig(Strict):
    """The LV feeder behind a point, checked by a power flow in Validate (cloud/dso/feeder.py):
    pandapower's CIGRE LV residential feeder and its 0.5 MVA transformer."""

    buses: dict[str, LoadPoint] = Field(description="aggregator name → where its homes connect")
    other_load_kw: dict[LoadPoint, Kw | list[Kw]] = Field(
        {}, description="load point → kW of the homes no aggregator speaks for, flat or per PTU"
    )
    v_min: float = Field(EN50160_PU[0], gt=0, lt=1, description="lowest bus voltage, p.u.")
    v_max: float = Field(EN50160_PU[1], gt=1, lt=2, description="highest bus voltage, p.u.")
    loading_limit_pct: float = Field(100.0, gt=0, le=200, allow_inf_nan=False)

    @field_validator("other_load_kw")
    @classmethod
    def _day(cls, loads: dict[str, float | list[float]]) -> dict[str, float | list[float]]:
        for bus, kw in loads.items():
            if isinstance(kw, list) and len(kw) != PTUS:
                raise ValueError(f"{bus}: {len(kw)} values; give one kW or one per PTU ({PTUS})")
        return loads

    def loads_kw(self) -> dict[str, list[float]]:
        """kW per PTU of the day at each load point."""
        return {
            b: kw if isinstance(kw, list) else [kw] * PTUS for b, kw in self.other_load_kw.items()
        }


class PointConfig(Strict):
    name: str
    limit_kw: float = Field(gt=0, allow_inf_nan=False)
    aggregators: dict[str, Path] = Field(description="aggregator name → its certificate")
    feeder: FeederConfig | None = None

    @model_validator(mode="after")
    def _placed(self) -> PointConfig:
        if self.feeder is not None and set(self.feeder.buses) != set(self.aggregators):
            named, wanted = (
                ", ".join(sorted(self.feeder.buses)),
                ", ".join(sorted(self.aggregators)),
            )
            raise ValueError(
                f"point {self.name}: feeder.buses names {named}; "
                f"give a load point for each of its aggregators ({wanted})"
            )
        return self

    def congestion_point(self) -> CongestionPoint:
        aggregators = frozenset(self.aggregators)
        if self.feeder is None:
            return CongestionPoint(self.name, self.limit_kw, aggregators)
        f = self.feeder
        other = f.loads_kw()
        total = tuple(sum(s[t] for s in other.values()) for t in range(PTUS))
        feeder = Feeder(f.buses, other, f.v_min, f.v_max, f.loading_limit_pct)
        return CongestionPoint(self.name, self.limit_kw, aggregators, total, feeder)


class DsoConfig(Party):
    max_price: float = Field(ge=0, le=10, allow_inf_nan=False)
    points: list[PointConfig] = Field(min_length=1)
    prognosis_wait_s: float = Field(
        120.0, gt=0, description="how long a check waits for silent aggregators' D-prognoses"
    )
    offer_window_s: float = Field(120.0, gt=0, description="how long offers are awaited")
    penalty_eur_kwh: float = Penalty


class ForecasterConfig(Party):
    sites: dict[ID, Site] = Field(min_length=1, description="site id (a home's name) → site")


class PlatformConfig(Strict):
    xmpp: Xmpp
    state_dir: Path
    aggregators: list[AggregatorConfig] = []
    dso: DsoConfig | None = None
    forecaster: ForecasterConfig | None = None


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
            settling = None
            if a.history is not None:
                settling = Settling(
                    HistoryDirMeters(a.history, a.meter_device), Ledger(state / "ledger.db"),
                    penalty_eur_kwh=a.penalty_eur_kwh, after_s=a.settle_after_s,
                    retry_s=a.settle_retry_s,
                )  # fmt: skip
            return AggregatorBrain(
                name, frozenset(a.homes), a.dso.name, a.congestion_point,
                RoundStore(state / "rounds.db"), day_prices(a.prices),
                answer_window_s=a.answer_window_s, payment=a.payment, settling=settling,
            )  # fmt: skip

        peers = [a.dso.certificate, *a.homes.values()]
        agent, brain = _agent(cfg, a, peers, aggregator, frozenset(a.homes))
        out.append((agent, brain, a.day_ahead_at))
    if cfg.dso is not None:
        d = cfg.dso
        points = [p.congestion_point() for p in d.points]

        def dso(name: str, state: Path) -> DsoBrain:
            return DsoBrain(name, points, d.max_price, prognosis_wait_s=d.prognosis_wait_s,
                            offer_window_s=d.offer_window_s, ledger=Ledger(state / "ledger.db"),
                            penalty_eur_kwh=d.penalty_eur_kwh,
                            store=CheckStore(state / "checks.db"))  # fmt: skip

        peers = [path for p in d.points for path in p.aggregators.values()]
        agent, brain = _agent(cfg, d, peers, dso)
        out.append((agent, brain, None))
    if cfg.forecaster is not None:
        sites = cfg.forecaster.sites

        def forecaster(name: str, state: Path) -> ForecasterBrain:
            return ForecasterBrain(name, sites)

        # no peers to configure: it answers whoever asks, learning them from their envelopes
        agent, brain = _agent(cfg, cfg.forecaster, [], forecaster)
        out.append((agent, brain, None))
    return out


def day_prices(prices: FlatPrices | PricesFromFile) -> Callable[[date], DayPrices]:
    """An aggregator's `prices(day)`: the day's 96 PTU prices."""
    if isinstance(prices, PricesFromFile):
        return prices.source()
    flat = DayPrices([prices.import_eur_kwh] * 96, [prices.export_eur_kwh] * 96)
    return lambda _day: flat


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
    next_schedule = 0.0
    try:
        while not stop.is_set():
            now = datetime.now(UTC)
            if now.timestamp() >= next_schedule:
                next_schedule = now.timestamp() + SCHEDULE_EVERY_S
                for _, brain, at in parties:
                    day = due_day(now, at) if at is not None else None
                    if isinstance(brain, AggregatorBrain) and day is not None:
                        brain.to_open.append(day)  # opening one that exists does nothing
            for agent, brain, _ in parties:
                try:
                    data = await agent.work(partial(status, agent.node, brain))
                    write_status(cfg.state_dir / agent.node.name / "status.json", data)
                except Exception:  # a full disk: the agents go on; tried again next time
                    log.exception("%s: status not written", agent.node.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), STATUS_EVERY_S)
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
    """Fail before connecting when a credential, password, certificate or price file is
    missing, unreadable or (a price file) not valid, naming it."""
    parties: list[Party] = [*cfg.aggregators]
    parties += [p for p in (cfg.dso, cfg.forecaster) if p is not None]
    for party in parties:
        Credentials.load(party.credentials)
        if not party.password_file.is_file():
            raise FileNotFoundError(f"{party.password_file}: no such password file")
    for a in cfg.aggregators:
        for path in [a.dso.certificate, *a.homes.values()]:
            _chain(path)
        day_prices(a.prices)  # ConfigError with the price file, line and field
        if a.history is not None and not a.history.is_dir():
            raise FileNotFoundError(
                f"{a.history}: no such directory; `history:` is the history ingest's data directory"
            )
    for p in cfg.dso.points if cfg.dso else []:
        for path in p.aggregators.values():
            _chain(path)
