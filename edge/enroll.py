"""The box's side of enrollment: the key is generated in the credentials directory and never
leaves it; the enrollment service certifies it in exchange for the one-time code, and later
renews the certificate and hands out the current revocation list.

The first CRL: a new box has none, and an installer's copy would be out of date within two days
(pki.ca.CRL_VALID) while boxes sit on shelves for weeks, so the first connection checks the
server against the root the installer gave and its hostname only. The answer brings the CRL;
before anything is installed the box checks that list is signed by the fleet CA that issued the
box's own certificate (which must chain to the given root), and that the server's certificate is
not on it. What an attacker holding a revoked server key could gain in between is the code
itself, and a code is useful once and for days at most. The same channel fetches a CRL when the
box's own list is out of date (a CRL is signed, so where it came from does not matter)."""

from __future__ import annotations

import http.client
import json
import os
import ssl
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from homeflex.pki.bundle import Credentials
from homeflex.pki.identity import Identity, Role
from homeflex.pki.keys import generate_key, load_key
from homeflex.pki.trust import TrustError, TrustStore, check_crl, client_context

XMPP_FILE = "xmpp.json"
MAX_ANSWER = 1024 * 1024
RENEW_AT = 2 / 3  # of the validity: leaves a third (10 days of 30) to retry in


class EnrollError(Exception):
    """Enrollment, renewal or a CRL refresh did not happen; the message says why."""


@dataclass(frozen=True)
class Enrolled:
    identity: Identity
    not_after: datetime
    credentials: Credentials


def bootstrap_context(ca: Path) -> ssl.SSLContext:
    """TLS ≥ 1.2 checking the server against our root and its hostname, without a CRL (see the
    module docstring for when, and why that is enough)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cafile=str(ca))
    return ctx


def _csr(key: ec.EllipticCurvePrivateKey) -> x509.CertificateSigningRequest:
    # the box does not know its name: the service decides the identity, the CSR proves the key
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "homeflex-box")]))
        .sign(key, hashes.SHA256())
    )


def _request(
    url: str,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    ctx: ssl.SSLContext,
    timeout: float,
) -> tuple[int, bytes, x509.Certificate]:
    """Status, body and the server's certificate of one HTTPS request."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise EnrollError(f"{url}: expected an https:// address of the enrollment service")
    conn = http.client.HTTPSConnection(
        parts.hostname, parts.port or 443, context=ctx, timeout=timeout
    )
    try:
        conn.connect()
        der = (
            conn.sock.getpeercert(binary_form=True)
            if isinstance(conn.sock, ssl.SSLSocket)
            else None
        )
        if not der:
            raise EnrollError(f"{url}: the server showed no certificate")
        server = x509.load_der_x509_certificate(der)
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn.request(method, parts.path.rstrip("/") + path, body=data, headers=headers)
        resp = conn.getresponse()
        answer = resp.read(MAX_ANSWER + 1)
    except (OSError, http.client.HTTPException) as exc:  # ssl.SSLError is an OSError
        raise EnrollError(f"{url}{path}: no secure connection ({exc})") from None
    finally:
        conn.close()
    if len(answer) > MAX_ANSWER:
        raise EnrollError(f"{url}{path}: answer larger than {MAX_ANSWER} bytes")
    return resp.status, answer, server


def _json_answer(url: str, status: int, raw: bytes) -> dict[str, Any]:
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = None
    if status != 200:
        error = answer.get("error") if isinstance(answer, dict) else raw[:200].decode("replace")
        raise EnrollError(f"{url}: refused (HTTP {status}): {error}")
    if not isinstance(answer, dict):
        raise EnrollError(f"{url}: the answer is not a JSON object")
    return answer


@dataclass(frozen=True)
class _Issued:
    chain: list[x509.Certificate]
    root: x509.Certificate
    crl_pem: bytes
    crl: x509.CertificateRevocationList
    identity: Identity


def _check_issued(
    url: str,
    answer: dict[str, Any],
    root: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    server: x509.Certificate,
) -> _Issued:
    """What the service sent, checked as if it came from anybody: same root as ours, a chain
    to it for OUR key, a CRL of the fleet CA, and the server not on it."""
    try:
        chain = x509.load_pem_x509_certificates(str(answer["certificate"]).encode())
        answer_root = x509.load_pem_x509_certificate(str(answer["ca"]).encode())
        crl_pem = str(answer["crl"]).encode()
        crl = x509.load_pem_x509_crl(crl_pem)
    except (KeyError, ValueError) as exc:
        raise EnrollError(f"{url}: malformed answer ({exc})") from None
    if answer_root != root:
        raise EnrollError(f"{url}: the answer names another root CA than the one we were given")
    try:
        identity = TrustStore(root, crl).verify(chain)
    except TrustError as exc:
        raise EnrollError(f"{url}: the issued certificate is not valid: {exc}") from None
    if chain[0].public_key() != key.public_key():
        raise EnrollError(f"{url}: the issued certificate is not for this box's key")
    if identity.role is not Role.HOME:
        raise EnrollError(f"{url}: issued a certificate of role {identity.role.value}, not home")
    if server.issuer != crl.issuer:
        raise EnrollError(f"{url}: cannot check the server's certificate against the CRL")
    if crl.get_revoked_certificate_by_serial_number(server.serial_number) is not None:
        raise EnrollError(f"{url}: the server's certificate is revoked")
    return _Issued(chain, root, crl_pem, crl, identity)


def _write_private(path: Path, data: bytes) -> None:
    """Replace `path` atomically with a file only its owner can read."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def enroll(
    url: str, code: str, credentials_dir: Path, ca_pem: Path, timeout: float = 30.0
) -> Enrolled:
    """Enroll this box with `code` (from the aggregator) at the service `url`, trusting the root
    `ca_pem` the installer brought. Leaves key.pem, cert.pem, ca.pem, crl.pem and xmpp.json
    in `credentials_dir`."""
    credentials_dir.mkdir(parents=True, exist_ok=True)
    credentials_dir.chmod(0o700)
    creds = Credentials(credentials_dir)
    if creds.cert_path.exists():
        raise EnrollError(
            f"{credentials_dir}: this box is enrolled already (remove the directory to enroll "
            "again with a new code)"
        )
    try:
        root = x509.load_pem_x509_certificate(ca_pem.read_bytes())
    except (OSError, ValueError) as exc:
        raise EnrollError(f"{ca_pem}: not a root certificate ({exc})") from None
    # an earlier attempt may have generated the key and failed on the network: reuse it
    key = load_key(creds.key_path) if creds.key_path.exists() else generate_key(creds.key_path)
    csr_pem = _csr(key).public_bytes(serialization.Encoding.PEM).decode()
    status, raw, server = _request(
        url, "POST", "/enroll", {"code": code, "csr": csr_pem}, bootstrap_context(ca_pem), timeout
    )
    answer = _json_answer(url, status, raw)
    issued = _check_issued(url, answer, root, key, server)
    xmpp = answer.get("xmpp")
    if (
        not isinstance(xmpp, dict)
        or xmpp.get("address") != issued.identity.xmpp
        or not isinstance(xmpp.get("password"), str)
    ):
        raise EnrollError(f"{url}: the answer's XMPP account does not match the certificate")
    account = {"address": xmpp["address"], "password": xmpp["password"]}
    _write_private(credentials_dir / XMPP_FILE, json.dumps(account).encode())
    creds.install(issued.chain, issued.root, issued.crl_pem)
    return Enrolled(issued.identity, issued.chain[0].not_valid_after_utc, creds)


def xmpp_account(credentials_dir: Path) -> tuple[str, str]:
    """The address and password enrollment stored."""
    data = json.loads((credentials_dir / XMPP_FILE).read_text())
    return str(data["address"]), str(data["password"])


def renewal_due(cert: x509.Certificate, now: datetime | None = None) -> bool:
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return (now or datetime.now(UTC)) >= start + (end - start) * RENEW_AT


def _crl_current(creds: Credentials, now: datetime) -> bool:
    try:
        crl = x509.load_pem_x509_crl(creds.crl_path.read_bytes())
    except (OSError, ValueError):
        return False
    return crl.next_update_utc is None or now < crl.next_update_utc


def refresh_crl(
    url: str, credentials_dir: Path, timeout: float = 30.0
) -> x509.CertificateRevocationList:
    """Fetch the service's current CRL and install it when it is signed by our fleet CA and not
    older than the one we hold. Uses the box's full TLS checks while its own list is current."""
    creds = Credentials.load(credentials_dir)
    now = datetime.now(UTC)
    ctx = client_context(creds) if _crl_current(creds, now) else bootstrap_context(creds.ca_path)
    status, raw, _ = _request(url, "GET", "/crl.pem", None, ctx, timeout)
    if status != 200:
        raise EnrollError(f"{url}/crl.pem: HTTP {status}: {raw[:200].decode('replace')}")
    try:
        crl = x509.load_pem_x509_crl(raw)
    except ValueError as exc:
        raise EnrollError(f"{url}/crl.pem: not a PEM CRL ({exc})") from None
    try:
        check_crl(crl, creds.chain()[1], now)
    except TrustError as exc:
        raise EnrollError(f"{url}/crl.pem: {exc.detail}") from None
    if creds.crl_path.exists():
        held = x509.load_pem_x509_crl(creds.crl_path.read_bytes())
        if crl.last_update_utc < held.last_update_utc:
            raise EnrollError(f"{url}/crl.pem: older than the list this box holds (replayed?)")
    _write_public(creds.crl_path, raw)
    return crl


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def renew(
    url: str,
    credentials_dir: Path,
    *,
    force: bool = False,
    now: datetime | None = None,
    timeout: float = 30.0,
) -> datetime | None:
    """Renew the box's certificate once 2/3 of its validity have passed (or `force`): the same
    key, certified again for the same identity. The new expiry, or None when not due yet."""
    creds = Credentials.load(credentials_dir)
    now = now or datetime.now(UTC)
    current = creds.certificate()
    if not force and not renewal_due(current, now):
        return None
    if not _crl_current(creds, now):  # the TLS checks need a current list
        refresh_crl(url, credentials_dir, timeout)
    key = creds.key()
    csr_pem = _csr(key).public_bytes(serialization.Encoding.PEM).decode()
    status, raw, server = _request(
        url, "POST", "/renew", {"csr": csr_pem}, client_context(creds), timeout
    )
    answer = _json_answer(url, status, raw)
    root = x509.load_pem_x509_certificate(creds.ca_path.read_bytes())
    issued = _check_issued(url, answer, root, key, server)
    if issued.identity != creds.identity():
        raise EnrollError(
            f"{url}: renewed certificate names {issued.identity}, not {creds.identity()}"
        )
    creds.install(issued.chain, issued.root, issued.crl_pem)
    return issued.chain[0].not_valid_after_utc


@click.command("enroll")
@click.option("--url", required=True, help="the enrollment service, https://HOST:PORT")
@click.option("--code", prompt="enrollment code", help="the one-time code from the aggregator")
@click.option(
    "--credentials",
    "credentials_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="where the key and certificates go (created, mode 0700)",
)
@click.option(
    "--ca",
    "ca_pem",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    required=True,
    help="the root certificate the installer brought (ca.pem)",
)
def enroll_cmd(url: str, code: str, credentials_dir: Path, ca_pem: Path) -> None:
    """Enroll this box: get its certificate and XMPP account with a one-time code."""
    try:
        done = enroll(url, code, credentials_dir, ca_pem)
    except (EnrollError, OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"enrolled as {done.identity.name} ({done.identity.xmpp}); certificate valid until "
        f"{done.not_after:%Y-%m-%d %H:%M} UTC; credentials in {credentials_dir}"
    )
