"""A gateway keeps its credentials current by itself: with `enrollment_url` it fetches the
fleet's revocation list from the enrollment service (a real process, `homeflex cloud enroll`),
so a box revoked at the aggregator is refused by this gateway too after one refresh."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from homeflex.clock import SystemClock
from homeflex.edge.config import GatewayConfig
from homeflex.edge.enroll import enroll
from homeflex.edge.gateway import Gateway
from homeflex.pki.bundle import Credentials
from homeflex.pki.trust import TrustError, TrustStore

DOMAIN = "xmpp.homeflex.test"


def homeflex(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "homeflex.cli", *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The enrollment service of a fresh fleet; (its URL, the fleet directory)."""
    fleet = tmp_path / "fleet"
    (tmp_path / "pass").write_text("a passphrase long enough\n")
    homeflex("pki", "init", "--root", str(tmp_path / "root"), "--fleet", str(fleet),
             "--passphrase-file", str(tmp_path / "pass"))  # fmt: skip
    homeflex("pki", "issue", "--fleet", str(fleet), "--name", "enroll", "--role", "service",
             "--dns", "localhost", "--ip", "127.0.0.1", "--out", str(tmp_path / "svc"))  # fmt: skip
    xmpp = tmp_path / "xmpp.yaml"
    xmpp.write_text(yaml.safe_dump({"domain": DOMAIN, "listen": "127.0.0.1", "port": 0,
                                    "credentials": str(tmp_path / "svc"),
                                    "database": str(tmp_path / "pyjabber.db"),
                                    "security_log": str(tmp_path / "xmpp.log")}))  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "homeflex.cli", "cloud", "enroll", "--fleet", str(fleet),
         "--creds", str(tmp_path / "svc"), "--listen", "127.0.0.1:0", "--xmpp-domain", DOMAIN,
         "--xmpp-accounts", f"pyjabber={xmpp}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        match = re.search(r"listening on (https://127\.0\.0\.1:\d+)", proc.stdout.readline())
        if match is None:
            proc.kill()
            assert proc.stderr is not None
            pytest.fail(f"the enrollment service did not start: {proc.stderr.read()[-2000:]}")
        yield match.group(1), fleet
    finally:
        proc.terminate()
        proc.wait(10)


def enrolled(url: str, fleet: Path, box: str, directory: Path) -> Credentials:
    code = re.search(
        r"^code\s+(\S+)", homeflex("pki", "code", "--fleet", str(fleet), "--box", box), re.M
    )
    assert code
    enroll(url, code.group(1), directory, fleet / "ca.pem")
    return Credentials.load(directory)


async def test_a_revocation_reaches_the_gateway_within_one_refresh(
    service: tuple[str, Path], tmp_path: Path
) -> None:
    url, fleet = service
    mine = enrolled(url, fleet, "box-gw", tmp_path / "gw-creds")
    other = enrolled(url, fleet, "box-lost", tmp_path / "lost-creds")
    cfg = GatewayConfig.model_validate({
        "gateway_id": "box-gw", "data_dir": str(tmp_path / "gw"),
        "store": {"path": str(tmp_path / "gw" / "store.db")}, "devices": [],
        "credentials": str(mine.dir), "enrollment_url": url, "credentials_refresh_s": 0.2,
    })  # fmt: skip
    assert TrustStore.of(mine).verify(other.chain()).name == "box-lost"
    stop = asyncio.Event()
    gateway = asyncio.create_task(Gateway(cfg, SystemClock()).run(stop))
    try:
        homeflex("pki", "revoke", "--fleet", str(fleet), "--box", "box-lost",
                 "--xmpp-accounts", f"pyjabber={tmp_path / 'xmpp.yaml'}")  # fmt: skip
        serial = other.certificate().serial_number
        for _ in range(100):  # the gateway fetches every 0.2 s
            crl = x509.load_pem_x509_crl(mine.crl_path.read_bytes())
            if crl.get_revoked_certificate_by_serial_number(serial) is not None:
                break
            await asyncio.sleep(0.1)
        with pytest.raises(TrustError) as err:
            TrustStore.of(mine).verify(other.chain())
        assert err.value.code == "revoked"
        assert TrustStore.of(mine).verify(mine.chain()).name == "box-gw"
    finally:
        stop.set()
        await asyncio.wait_for(gateway, 30)
