"""A throwaway root and fleet CA per test session, and credentials for any identity. Import the
fixtures in a conftest or test module: `from tests.pki_fixtures import fleet_ca, creds  # noqa`."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from homeflex.pki.bundle import Credentials, issue_credentials
from homeflex.pki.ca import FleetCA, init_fleet, init_root
from homeflex.pki.identity import Identity

PASSPHRASE = b"test root passphrase"


def make_fleet(base: Path, root_name: str = "Homeflex Root CA") -> FleetCA:
    init_root(base / "root", PASSPHRASE, root_name)
    return init_fleet(base / "root", PASSPHRASE, base / "fleet")


@pytest.fixture(scope="session")
def fleet_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetCA]:
    fleet = make_fleet(tmp_path_factory.mktemp("pki"))
    yield fleet
    fleet.close()


CredsFactory = Callable[[Identity], Credentials]


@pytest.fixture
def creds(fleet_ca: FleetCA, tmp_path: Path) -> CredsFactory:
    """Credentials for an identity, issued by the session's fleet CA, in a fresh directory."""
    counter = itertools.count()

    def make(identity: Identity) -> Credentials:
        return issue_credentials(fleet_ca, identity, tmp_path / f"{identity.name}-{next(counter)}")

    return make
