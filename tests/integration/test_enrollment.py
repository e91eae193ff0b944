"""Enrollment end to end: the service runs as its own process (`homeflex cloud enroll`) on a
free loopback port with a CA made by `homeflex pki init`; boxes enroll, renew and are revoked
through the real HTTPS service, and every refusal leaves a security event in its log.

The XMPP account store is the embedded XMPP server's own (`--xmpp-accounts pyjabber=CONFIG`,
the server's configuration file; the server itself need not run: the store is its SQLite
database); the tests check the box's card logs in there, by the server's own password check."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from homeflex.cli import main as cli
from homeflex.cloud.enroll.registry import BoxState, Registry
from homeflex.cloud.enroll.service import AttemptLimiter, EnrollmentService
from homeflex.cloud.xmpp.embedded import PyjabberAccounts
from homeflex.edge.enroll import (
    EnrollError,
    bootstrap_context,
    enroll,
    refresh_crl,
    renew,
    xmpp_account,
)
from homeflex.pki.bundle import Credentials
from homeflex.pki.ca import FleetCA
from homeflex.pki.identity import Identity, Role
from homeflex.pki.trust import TrustError, TrustStore
from homeflex.security import SecurityLog, read_events, verify_chain

REPO = Path(__file__).resolve().parents[2]
DOMAIN = "xmpp.homeflex.test"


@dataclass
class Service:
    url: str
    fleet: Path
    ca: Path
    log: Path
    accounts: PyjabberAccounts
    accounts_spec: str
    stderr: Path

    def events(self, after: int = 0) -> list[Any]:
        events = read_events(self.log)
        assert verify_chain(events) == []
        return [e for e in events if e.seq > after]

    def last_seq(self) -> int:
        events = read_events(self.log)
        return events[-1].seq if events else 0


def run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def new_code(svc: Service, box: str, *extra: str) -> str:
    out = run("pki", "code", "--fleet", str(svc.fleet), "--box", box, *extra)
    match = re.search(r"^code\s+(\S+)$", out, re.M)
    assert match, out
    return match.group(1)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    base = tmp_path_factory.mktemp("enroll")
    fleet, root, creds = base / "fleet", base / "root", base / "service"
    (base / "passphrase").write_text("a passphrase long enough\n")
    run("pki", "init", "--root", str(root), "--fleet", str(fleet),
        "--passphrase-file", str(base / "passphrase"))  # fmt: skip
    run("pki", "issue", "--fleet", str(fleet), "--name", "enroll", "--role", "service",
        "--dns", "localhost", "--ip", "127.0.0.1", "--out", str(creds))  # fmt: skip
    # the embedded XMPP server's configuration, as its operator writes it; enrollment reads
    # the domain and the database from it
    run("pki", "issue", "--fleet", str(fleet), "--name", "xmpp", "--role", "service",
        "--dns", DOMAIN, "--out", str(base / "xmpp"))  # fmt: skip
    xmpp_config = base / "xmpp.yaml"
    xmpp_config.write_text(
        yaml.safe_dump(
            {
                "domain": DOMAIN,
                "credentials": str(base / "xmpp"),
                "database": str(base / "pyjabber.db"),
                "security_log": str(base / "xmpp-security.log"),
            }
        )
    )
    spec = f"pyjabber={xmpp_config}"
    log = base / "security.log"
    stderr = base / "service.stderr"
    with stderr.open("wb") as err:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("homeflex")), "cloud", "enroll",
             "--fleet", str(fleet), "--creds", str(creds), "--listen", "127.0.0.1:0",
             "--xmpp-domain", DOMAIN, "--xmpp-accounts", spec, "--security-log", str(log),
             "--attempts-per-hour", "50"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=err,
        )  # fmt: skip
    assert proc.stdout is not None
    first: list[bytes] = []
    reader = threading.Thread(target=lambda: first.append(proc.stdout.readline()))  # type: ignore[union-attr]
    reader.start()
    reader.join(20)
    line = first[0].decode() if first else ""
    match = re.search(r"listening on (https://127\.0\.0\.1:\d+)", line)
    if not match:
        proc.kill()
        pytest.fail(f"service did not start: {line!r}\n{stderr.read_text()}")
    try:
        yield Service(
            match.group(1), fleet, fleet / "ca.pem", log,
            PyjabberAccounts(base / "pyjabber.db", DOMAIN), spec, stderr,
        )  # fmt: skip
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert proc.returncode == 0, stderr.read_text()


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every byte the HTTP client hands to TLS (what leaves the box)."""
    data: list[bytes] = []
    original = http.client.HTTPConnection.send

    def send(self: http.client.HTTPConnection, payload: Any) -> None:
        data.append(payload if isinstance(payload, bytes) else str(payload).encode())
        original(self, payload)

    monkeypatch.setattr(http.client.HTTPConnection, "send", send)
    return data


def test_a_box_enrolls_and_holds_a_working_credential(
    service: Service, tmp_path: Path, sent: list[bytes]
) -> None:
    code = new_code(service, "box-0001")
    box_dir = tmp_path / "box"
    done = enroll(service.url, code, box_dir, service.ca)
    creds = Credentials.load(box_dir)
    expected = Identity("box-0001", Role.HOME, xmpp="box-0001@xmpp.homeflex.test")
    assert done.identity == expected
    # a fresh trust store from the box's own files accepts it
    assert TrustStore.of(creds).verify(creds.chain()) == expected
    assert creds.ca_path.read_bytes() == service.ca.read_bytes()
    for path in (creds.key_path, box_dir / "xmpp.json"):
        assert os.stat(path).st_mode & 0o777 == 0o600, path
    assert os.stat(box_dir).st_mode & 0o777 == 0o700
    # the key never left: the request carried a CSR for it and nothing private
    body = b"".join(sent)
    key = creds.key()
    private_der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    assert b"PRIVATE KEY" not in body and private_der not in body
    assert key.private_numbers().private_value.to_bytes(32, "big") not in body
    request = json.loads(body[body.index(b"{") :])
    assert set(request) == {"code", "csr"}
    assert x509.load_pem_x509_csr(request["csr"].encode()).public_key() == key.public_key()
    assert creds.certificate().public_key() == key.public_key()
    # the box holds exactly the account the XMPP server has for it
    address, password = xmpp_account(box_dir)
    assert address == "box-0001@xmpp.homeflex.test"
    assert address in service.accounts.accounts()
    assert service.accounts.check(address, password)
    registry = Registry.open(service.fleet)
    box = registry.get("box-0001")
    registry.close()
    assert box is not None and box.state is BoxState.ENROLLED
    assert box.cert_serial == creds.certificate().serial_number


def refusal(service: Service, after: int, reason: str) -> None:
    matching = [e for e in service.events(after) if e.fields.get("reason") == reason]
    assert len(matching) == 1, service.events(after)
    assert matching[0].source == "127.0.0.1"


def test_reused_expired_and_wrong_codes_are_refused(service: Service, tmp_path: Path) -> None:
    code = new_code(service, "box-0002")
    enroll(service.url, code, tmp_path / "first", service.ca)
    seq = service.last_seq()
    with pytest.raises(EnrollError, match=r"HTTP 410.*used code"):
        enroll(service.url, code, tmp_path / "second", service.ca)
    refusal(service, seq, "used-code")

    registry = Registry.open(service.fleet)
    late = registry.new_code("box-0003", now=datetime.now(UTC) - timedelta(days=8)).code
    registry.close()
    seq = service.last_seq()
    with pytest.raises(EnrollError, match=r"HTTP 410.*expired code"):
        enroll(service.url, late, tmp_path / "late", service.ca)
    refusal(service, seq, "expired-code")

    seq = service.last_seq()
    with pytest.raises(EnrollError, match=r"HTTP 403.*unknown code"):
        enroll(service.url, "ABCD-EFGH-JKMN-PQRS", tmp_path / "wrong", service.ca)
    refusal(service, seq, "unknown-code")
    assert not (tmp_path / "wrong" / "cert.pem").exists()
    assert "box-0003@xmpp.homeflex.test" not in service.accounts.accounts()


def post(service: Service, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    host, port = service.url.removeprefix("https://").split(":")
    conn = http.client.HTTPSConnection(host, int(port), context=bootstrap_context(service.ca))
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("body", "status", "reason", "message"),
    [
        (b"{not json", 400, "not-json", "not JSON"),
        (b"[1, 2]", 400, "not-json", "JSON object"),
        (b'{"csr": "x"}', 400, "no-code", "'code'"),
        (b'{"code": "AAAA-AAAA-AAAA-AAAA", "csr": "nonsense"}', 400, "bad-csr", "not a PEM"),
        (b'{"code": "AAAA", "csr": "' + b"x" * 20000 + b'"}', 413, "too-large", "at most"),
    ],
)
def test_bad_requests_get_a_clear_error_and_the_service_keeps_running(
    service: Service, body: bytes, status: int, reason: str, message: str
) -> None:
    seq = service.last_seq()
    got, answer = post(service, "/enroll", body)
    assert got == status and message in answer["error"] and answer["reason"] == reason
    refusal(service, seq, reason)
    got, answer = post(service, "/renew", b"{}")  # no client certificate
    assert got == 401 and "client certificate" in answer["error"]


def test_renewal_works_until_the_box_is_revoked(service: Service, tmp_path: Path) -> None:
    box_dir = tmp_path / "box"
    enroll(service.url, new_code(service, "box-0004"), box_dir, service.ca)
    creds = Credentials.load(box_dir)
    first = creds.certificate()
    assert renew(service.url, box_dir) is None  # not due: 2/3 of 30 days have not passed
    due = (
        first.not_valid_before_utc
        + (first.not_valid_after_utc - first.not_valid_before_utc) * 2 / 3
    )
    assert renew(service.url, box_dir, now=due - timedelta(seconds=1)) is None
    not_after = renew(service.url, box_dir, now=due)
    renewed = creds.certificate()
    assert renewed.serial_number != first.serial_number
    assert not_after == renewed.not_valid_after_utc
    assert TrustStore.of(creds).verify(creds.chain()) == Identity(
        "box-0004", Role.HOME, xmpp="box-0004@xmpp.homeflex.test"
    )
    # a box that was registered but never enrolled: its code must die with the revocation
    pending_code = new_code(service, "box-0005")

    address, password = xmpp_account(box_dir)
    assert service.accounts.check(address, password)
    out = run("pki", "revoke", "--fleet", str(service.fleet), "--box", "box-0004",
              "--xmpp-accounts", service.accounts_spec)  # fmt: skip
    assert f"{first.serial_number:x}" in out and f"{renewed.serial_number:x}" in out
    assert "box-0004@xmpp.homeflex.test" not in service.accounts.accounts()
    run("pki", "revoke", "--fleet", str(service.fleet), "--box", "box-0005")

    seq = service.last_seq()
    with pytest.raises(EnrollError, match=r"HTTP 403.*revoked"):
        renew(service.url, box_dir, force=True)
    refusal(service, seq, "revoked")
    assert creds.certificate() == renewed  # nothing was installed

    seq = service.last_seq()
    with pytest.raises(EnrollError, match=r"HTTP 403.*box revoked"):
        enroll(service.url, pending_code, tmp_path / "thief", service.ca)
    refusal(service, seq, "box-revoked")

    # the box's own trust store still has the old list; after a refresh it refuses the box
    store = TrustStore.of(creds)
    assert store.verify(creds.chain()).name == "box-0004"
    crl = refresh_crl(service.url, box_dir)
    listed = {r.serial_number for r in crl}
    assert {first.serial_number, renewed.serial_number} <= listed
    with pytest.raises(TrustError) as err:
        store.verify(creds.chain())
    assert err.value.code == "revoked"


def test_a_replaced_box_enrolls_again_with_a_new_code(service: Service, tmp_path: Path) -> None:
    enroll(service.url, new_code(service, "box-0006"), tmp_path / "old-card", service.ca)
    old = Credentials.load(tmp_path / "old-card")
    result = CliRunner().invoke(cli, ["pki", "code", "--fleet", str(service.fleet),
                                      "--box", "box-0006"])  # fmt: skip
    assert result.exit_code == 1 and "--replace" in result.output
    code = new_code(service, "box-0006", "--replace")
    new = enroll(service.url, code, tmp_path / "new-card", service.ca)
    assert new.identity.name == "box-0006"
    new_creds = Credentials.load(tmp_path / "new-card")
    assert new_creds.certificate().public_key() != old.certificate().public_key()
    with pytest.raises(TrustError, match="revoked"):
        TrustStore.of(new_creds).verify(old.chain())  # the new CRL came with the enrollment
    address, password = xmpp_account(tmp_path / "new-card")
    old_address, old_password = xmpp_account(old.dir)
    assert address == old_address == "box-0006@xmpp.homeflex.test"
    assert password != old_password
    assert service.accounts.check(address, password)
    assert not service.accounts.check(address, old_password)  # the old card no longer logs in


def test_the_pki_list_shows_boxes_and_certificates(service: Service) -> None:
    new_code(service, "box-0007")
    out = run("pki", "list", "--fleet", str(service.fleet))
    assert re.search(r"box-0007\s+pending\s+-", out)
    assert re.search(r"box-0001\s+enrolled\s+box-0001@xmpp.homeflex.test", out)
    assert re.search(r"box-0004\s+revoked", out)
    assert re.search(r"[0-9a-f]+\s+enroll\s+service\s+until", out)


async def test_guessing_codes_is_rate_limited_per_address(
    fleet_ca: FleetCA, creds: Any, tmp_path: Path
) -> None:
    """In process (its own limiter and account store): after 3 failures from an address even
    the right code is refused for the rest of the window."""
    service_creds = creds(Identity("enroll-rl", Role.SERVICE, ips=("127.0.0.1",)))
    registry = Registry.open(fleet_ca.dir)
    accounts = PyjabberAccounts(tmp_path / "pyjabber.db", DOMAIN)
    log = SecurityLog(tmp_path / "security.log")
    svc = EnrollmentService(fleet_ca, registry, accounts, log, DOMAIN, AttemptLimiter(3, 3600))
    code = registry.new_code("box-rl").code
    stop, ready = asyncio.Event(), asyncio.Event()
    bound: list[int] = []

    def started(_host: str, port: int) -> None:
        bound.append(port)
        ready.set()

    task = asyncio.create_task(svc.serve(service_creds, "127.0.0.1", 0, stop, started))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        url = f"https://127.0.0.1:{bound[0]}"
        ca = fleet_ca.dir / "ca.pem"
        for n in range(3):
            with pytest.raises(EnrollError, match="unknown code"):
                await asyncio.to_thread(enroll, url, f"AAAA-AAAA-AAAA-AAA{n}", tmp_path / "g", ca)
        with pytest.raises(EnrollError, match="HTTP 429"):
            await asyncio.to_thread(enroll, url, code, tmp_path / "g", ca)
        assert [e.kind for e in log.events()] == ["enroll-refused"] * 3 + ["rate-limited"]
        assert accounts.accounts() == []
        svc.limiter = AttemptLimiter(3, 3600)  # the window has passed
        done = await asyncio.to_thread(enroll, url, code, tmp_path / "box", ca)
        address, password = xmpp_account(done.credentials.dir)
        assert address == "box-rl@xmpp.homeflex.test"
        assert accounts.accounts() == [address] and accounts.check(address, password)
    finally:
        stop.set()
        await task
        registry.close()
