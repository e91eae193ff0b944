"""Deciding whom to believe: a certificate chain is accepted when it leads to our root, every
certificate in it is valid at the time, and the leaf is not on the fleet CA's revocation list.
The same rules in the TLS contexts every transport uses."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification

from homeflex.pki.bundle import Credentials
from homeflex.pki.identity import Identity


class TrustError(Exception):
    """A certificate is refused. `code` is one of: unknown-ca, expired, not-yet-valid, revoked,
    bad-chain, wrong-usage, no-identity, crl (no valid revocation list to check against)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@dataclass
class TrustStore:
    root: x509.Certificate
    crl: x509.CertificateRevocationList | None
    crl_path: Path | None = None
    _crl_mtime: float = 0.0

    @classmethod
    def load(cls, ca_pem: Path, crl_pem: Path | None = None) -> TrustStore:
        root = x509.load_pem_x509_certificate(ca_pem.read_bytes())
        store = cls(root, None, crl_pem)
        store.refresh()
        return store

    @classmethod
    def of(cls, creds: Credentials) -> TrustStore:
        return cls.load(creds.ca_path, creds.crl_path)

    def refresh(self) -> None:
        """Re-read the revocation list when its file changed (it is replaced atomically)."""
        if self.crl_path is None or not self.crl_path.is_file():
            return
        mtime = self.crl_path.stat().st_mtime
        if mtime != self._crl_mtime:
            self.crl = x509.load_pem_x509_crl(self.crl_path.read_bytes())
            self._crl_mtime = mtime

    def verify(self, chain: list[x509.Certificate], at: datetime | None = None) -> Identity:
        """The identity of `chain[0]` (intermediates after it), or TrustError saying why not."""
        if not chain:
            raise TrustError("bad-chain", "no certificate")
        at = at or datetime.now(UTC)
        leaf = chain[0]
        subject = leaf.subject.rfc4514_string()
        issuer = next((c for c in chain[1:] if c.subject == leaf.issuer), None)
        if issuer is None or not _signed_by(issuer, self.root):
            raise TrustError("unknown-ca", f"{subject} is not issued under our root")
        if not _signed_by(leaf, issuer):
            raise TrustError("unknown-ca", f"{subject}: its issuer's key did not sign it")
        for cert in (leaf, issuer):
            name = cert.subject.rfc4514_string()
            if at > cert.not_valid_after_utc:
                raise TrustError("expired", f"{name} expired {_utc(cert.not_valid_after_utc)}")
            if at < cert.not_valid_before_utc:
                raise TrustError(
                    "not-yet-valid", f"{name} is valid from {_utc(cert.not_valid_before_utc)}"
                )
        try:
            verifier = (
                verification.PolicyBuilder()
                .store(verification.Store([self.root]))
                .time(at)
                .build_client_verifier()
            )
            verifier.verify(leaf, chain[1:])
        except verification.VerificationError as exc:
            raise TrustError("bad-chain", f"{subject}: {exc}") from None
        self._check_revocation(leaf, issuer, at)
        try:
            return Identity.from_certificate(leaf)
        except ValueError as exc:
            raise TrustError("no-identity", str(exc)) from None

    def _check_revocation(
        self, leaf: x509.Certificate, issuer: x509.Certificate, at: datetime
    ) -> None:
        self.refresh()
        crl = self.crl
        if crl is None:
            raise TrustError("crl", "no revocation list to check against")
        check_crl(crl, issuer, at)
        entry = crl.get_revoked_certificate_by_serial_number(leaf.serial_number)
        if entry is not None:
            raise TrustError(
                "revoked",
                f"{leaf.subject.rfc4514_string()} (serial {leaf.serial_number:x}) was revoked "
                f"{_utc(entry.revocation_date_utc)}",
            )


def check_crl(crl: x509.CertificateRevocationList, issuer: x509.Certificate, at: datetime) -> None:
    """TrustError("crl") unless `crl` is signed by `issuer` and still current at `at`: a list
    that is not is worth nothing, whoever hands it over."""
    if crl.issuer != issuer.subject or not _crl_signed_by(crl, issuer):
        raise TrustError(
            "crl", f"the revocation list is not signed by {issuer.subject.rfc4514_string()}"
        )
    if crl.next_update_utc is not None and at > crl.next_update_utc:
        raise TrustError(
            "crl", f"the revocation list is out of date since {_utc(crl.next_update_utc)}"
        )


def _utc(t: datetime) -> str:
    return f"{t:%Y-%m-%d %H:%M} UTC"


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _crl_signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    key = issuer.public_key()
    return isinstance(key, ec.EllipticCurvePublicKey) and crl.is_signature_valid(key)


def _load_crl(ctx: ssl.SSLContext, crl: Path | None) -> None:
    # OpenSSL then refuses a peer whose leaf is listed, and any peer when the list is missing
    # or out of date: revocation is never silently skipped
    if crl is None or not crl.is_file():
        raise FileNotFoundError(f"{crl}: no revocation list; fetch one before connecting")
    ctx.load_verify_locations(cafile=str(crl))
    ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF


def server_context(creds: Credentials, require_client_cert: bool = True) -> ssl.SSLContext:
    """TLS ≥ 1.2 server presenting `creds`; clients must show a certificate of ours."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(creds.cert_path, creds.key_path)
    ctx.load_verify_locations(cafile=str(creds.ca_path))
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        _load_crl(ctx, creds.crl_path)
    return ctx


def client_context(
    creds: Credentials | None = None,
    *,
    ca: Path | None = None,
    crl: Path | None = None,
) -> ssl.SSLContext:
    """TLS ≥ 1.2 client verifying the server against our root, its name and the revocation
    list; presents `creds` when given. Without creds, `ca` and `crl` say what to trust (an
    installer's laptop that has no certificate of its own yet)."""
    ca = ca or (creds.ca_path if creds else None)
    crl = crl or (creds.crl_path if creds else None)
    if ca is None:
        raise ValueError("a client context needs our root certificate (ca.pem)")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cafile=str(ca))
    _load_crl(ctx, crl)
    if creds is not None:
        ctx.load_cert_chain(creds.cert_path, creds.key_path)
    return ctx
