"""The two certificate authorities: an offline root whose key is encrypted at rest and used only
to certify the fleet CA, and the online fleet CA that issues every box, agent and service
certificate, keeps the register of what it issued, revokes, and publishes the revocation list.

Files: root dir `root.key` (encrypted, 0600), `root.crt`; fleet dir `fleet.key` (0600; online, so
it must be usable unattended), `fleet.crt`, `ca.pem` (the root certificate, what everybody
trusts), `registry.db` (issued certificates and revocations), `crl.pem` (published)."""

from __future__ import annotations

import os
import sqlite3
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from homeflex.pki.identity import ORGANISATION, Identity, Role
from homeflex.pki.keys import generate_key, load_key

ROOT_DAYS = 3650
FLEET_DAYS = 730
LEAF_DAYS = 30  # short: a lost key is useful for weeks at most even if nobody revokes it
CRL_VALID = timedelta(days=2)  # a published list is good for this long; it is refreshed hourly
BACKDATE = timedelta(minutes=5)  # tolerate clocks a little behind ours

# may also serve TLS: services, field devices, and the box (its web page on the LAN)
SERVER_ROLES = {Role.SERVICE, Role.DEVICE, Role.HOME}


class CaError(Exception):
    """The CA refuses a request; the message says why."""


def _ca_name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _ca_certificate(
    subject: x509.Name,
    key: ec.EllipticCurvePublicKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    days: int,
    path_length: int,
) -> x509.Certificate:
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
        .sign(issuer_key, hashes.SHA256())
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def init_root(
    root_dir: Path, passphrase: bytes, name: str = "Homeflex Root CA"
) -> x509.Certificate:
    """A new root CA in `root_dir`; keep the directory offline (a USB stick in a safe)."""
    if len(passphrase) < 12:
        raise CaError("the root key's passphrase must have at least 12 characters")
    key = generate_key(root_dir / "root.key", passphrase)
    subject = _ca_name(name)
    cert = _ca_certificate(subject, key.public_key(), subject, key, ROOT_DAYS, path_length=1)
    (root_dir / "root.crt").write_bytes(_pem(cert))
    return cert


def init_fleet(
    root_dir: Path, passphrase: bytes, fleet_dir: Path, name: str = "Homeflex Fleet CA"
) -> FleetCA:
    """A fleet CA in `fleet_dir`, certified by the root (which needs its passphrase once)."""
    root_key = load_key(root_dir / "root.key", passphrase)
    root_cert = x509.load_pem_x509_certificate((root_dir / "root.crt").read_bytes())
    key = generate_key(fleet_dir / "fleet.key")
    cert = _ca_certificate(
        _ca_name(name), key.public_key(), root_cert.subject, root_key, FLEET_DAYS, path_length=0
    )
    (fleet_dir / "fleet.crt").write_bytes(_pem(cert))
    (fleet_dir / "ca.pem").write_bytes(_pem(root_cert))
    fleet = FleetCA.open(fleet_dir)
    fleet.publish_crl()
    return fleet


@dataclass(frozen=True)
class Issued:
    serial: int
    name: str
    role: Role
    not_after: datetime
    revoked_at: datetime | None


class FleetCA:
    def __init__(self, fleet_dir: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate):
        self.dir = fleet_dir
        self.key = key
        self.cert = cert
        self.root = x509.load_pem_x509_certificate((fleet_dir / "ca.pem").read_bytes())
        self.db = sqlite3.connect(fleet_dir / "registry.db", isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS issued (serial TEXT PRIMARY KEY, name TEXT NOT NULL,"
            " role TEXT NOT NULL, not_after TEXT NOT NULL, pem TEXT NOT NULL,"
            " revoked_at TEXT, reason TEXT)"
        )

    @classmethod
    def open(cls, fleet_dir: Path) -> FleetCA:
        if not (fleet_dir / "fleet.key").is_file():
            raise CaError(f"{fleet_dir}: no fleet CA here (create one with `homeflex pki init`)")
        key = load_key(fleet_dir / "fleet.key")
        cert = x509.load_pem_x509_certificate((fleet_dir / "fleet.crt").read_bytes())
        return cls(fleet_dir, key, cert)

    def close(self) -> None:
        self.db.close()

    @property
    def chain(self) -> list[x509.Certificate]:
        """What a leaf sends after itself: the fleet CA (the root is known to everybody)."""
        return [self.cert]

    def issue(
        self, csr: x509.CertificateSigningRequest, identity: Identity, days: int = LEAF_DAYS
    ) -> x509.Certificate:
        """A certificate for the CSR's key carrying `identity`. The identity is the caller's
        decision (enrollment knows which box it is talking to); the CSR only proves the key."""
        if not csr.is_signature_valid:
            raise CaError("the certificate request's signature does not verify")
        key = csr.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise CaError("the certificate request's key must be an elliptic-curve P-256 key")
        if not 0 < days <= 397:
            raise CaError(f"validity of {days} days: must be 1 to 397")
        held = {i.role for i in self.issued(identity.name)} - {identity.role}
        if held:
            # services are authorised by name (the MQTT ACL sees only the CN): one name, one role
            raise CaError(
                f"{identity.name}: the name is already held with role {held.pop().value}; "
                f"choose another name for this {identity.role.value} certificate"
            )
        now = datetime.now(UTC)
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if identity.role in SERVER_ROLES:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if identity.role is Role.RELEASE:
            usages.append(ExtendedKeyUsageOID.CODE_SIGNING)
        cert = (
            x509.CertificateBuilder()
            .subject_name(identity.subject())
            .issuer_name(self.cert.subject)
            .public_key(key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(min(now + timedelta(days=days), self.cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=True,  # envelopes are encrypted to this key (ECDH)
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectAlternativeName(identity.alt_names()), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.db.execute(
            "INSERT INTO issued (serial, name, role, not_after, pem) VALUES (?, ?, ?, ?, ?)",
            (
                f"{cert.serial_number:x}",
                identity.name,
                identity.role.value,
                cert.not_valid_after_utc.isoformat(),
                _pem(cert).decode(),
            ),
        )
        return cert

    def issued(self, name: str | None = None) -> list[Issued]:
        """What was issued (to `name`), newest last."""
        rows = self.db.execute(
            "SELECT serial, name, role, not_after, revoked_at FROM issued"
            + (" WHERE name = ?" if name else "")
            + " ORDER BY rowid",
            (name,) if name else (),
        ).fetchall()
        return [
            Issued(
                int(s, 16),
                n,
                Role(r),
                datetime.fromisoformat(na),
                datetime.fromisoformat(rv) if rv else None,
            )
            for s, n, r, na, rv in rows
        ]

    def revoke(self, serial: int, reason: str = "unspecified") -> None:
        """Revoke one certificate; it is listed from the next `publish_crl()` on."""
        cur = self.db.execute(
            "UPDATE issued SET revoked_at = ?, reason = ? WHERE serial = ? AND revoked_at IS NULL",
            (datetime.now(UTC).isoformat(), reason, f"{serial:x}"),
        )
        if cur.rowcount == 0:
            known = self.db.execute("SELECT 1 FROM issued WHERE serial = ?", (f"{serial:x}",))
            if known.fetchone() is None:
                raise CaError(f"serial {serial:x}: not issued by this CA")

    def revoke_name(self, name: str, reason: str = "unspecified") -> list[int]:
        """Revoke every valid certificate of `name` (a lost or stolen box); their serials."""
        serials = [i.serial for i in self.issued(name) if i.revoked_at is None]
        if not serials:
            raise CaError(f"{name}: no unrevoked certificate issued to this name")
        for serial in serials:
            self.revoke(serial, reason)
        return serials

    def crl(self) -> x509.CertificateRevocationList:
        now = datetime.now(UTC)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now - BACKDATE)
            .next_update(now + CRL_VALID)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .add_extension(x509.CRLNumber(int(now.timestamp() * 1000)), critical=False)
        )
        for serial, revoked_at in self.db.execute(
            "SELECT serial, revoked_at FROM issued WHERE revoked_at IS NOT NULL"
        ):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(int(serial, 16))
                .revocation_date(datetime.fromisoformat(revoked_at))
                .build()
            )
        return builder.sign(self.key, hashes.SHA256())

    def publish_crl(self) -> Path:
        """Write `crl.pem` atomically (readers never see half a list); its path."""
        path = self.dir / "crl.pem"
        # a temporary name of its own: the service and an operator's command may publish at once
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".crl-", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(self.crl().public_bytes(serialization.Encoding.PEM))
        os.chmod(tmp, 0o644)  # the list is public
        os.replace(tmp, path)
        return path
