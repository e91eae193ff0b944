"""Parties that exchange envelopes: each with real credentials from the session's fleet CA, a
receiver with its own replay file and security log, and one hand-moved clock for all."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from homeflex.agents.envelope import Receiver, Refused, Sender
from homeflex.agents.permissions import Permissions
from homeflex.agents.replay import ReplayCache
from homeflex.pki.bundle import Credentials
from homeflex.pki.ca import FleetCA
from homeflex.pki.identity import Identity, Role
from homeflex.pki.trust import TrustStore
from homeflex.security import Event, SecurityLog, read_events, verify_chain
from tests.fakeclock import FakeClock
from tests.pki_fixtures import CredsFactory

DOMAIN = "xmpp.homeflex.test"
AGG = Identity("agg-1", Role.AGGREGATOR, xmpp=f"agg-1@{DOMAIN}")
BOX = Identity("box-0001", Role.HOME, xmpp=f"box-0001@{DOMAIN}")
BOX2 = Identity("box-0002", Role.HOME, xmpp=f"box-0002@{DOMAIN}")
DSO = Identity("dso-1", Role.DSO, xmpp=f"dso-1@{DOMAIN}")


@dataclass
class Party:
    creds: Credentials
    sender: Sender
    receiver: Receiver
    log: SecurityLog
    replay_path: Path
    refusals: list[Refused] = field(default_factory=list)

    @property
    def identity(self) -> Identity:
        return self.sender.identity

    @property
    def jid(self) -> str:
        assert self.identity.xmpp
        return self.identity.xmpp

    def refuse(self, wire: str, xmpp_from: str) -> Refused:
        """Open `wire`, which must be refused; the refusal, after checking that the security
        log file got exactly one new event saying the same and that its chain is intact."""
        before = len(read_events(self.log.path))
        with pytest.raises(Refused) as err:
            self.receiver.open(wire, xmpp_from)
        events = read_events(self.log.path)
        assert len(events) == before + 1
        last: Event = events[-1]
        assert (last.kind, last.detail) == (err.value.kind, err.value.detail)
        assert last.fields["recipient"] == self.identity.name
        assert verify_chain(events) == []
        return err.value


PartyFactory = Callable[..., Party]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(time.time())


@pytest.fixture
def party(
    creds: CredsFactory, fleet_ca: FleetCA, clock: FakeClock, tmp_path: Path
) -> Iterator[PartyFactory]:
    caches: list[ReplayCache] = []

    def make(
        identity: Identity,
        aggregator: str | None = None,
        homes: frozenset[str] = frozenset(),
        credentials: Credentials | None = None,
    ) -> Party:
        c = credentials or creds(identity)
        # the live revocation list, as a service that fetches it would have
        trust = TrustStore.load(c.ca_path, fleet_ca.dir / "crl.pem")
        replay_path = c.dir / "replay.db"
        replay = ReplayCache(replay_path)
        caches.append(replay)
        log = SecurityLog(c.dir / "security.jsonl")
        perms = Permissions(c.identity(), aggregator=aggregator, homes=homes)
        receiver = Receiver(c, trust, replay, perms, log, clock)
        return Party(c, Sender.of(c), receiver, log, replay_path)

    yield make
    for cache in caches:
        cache.close()
