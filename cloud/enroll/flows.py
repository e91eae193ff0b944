"""What enrolling, renewing, revoking and re-enrolling a box do to the CA, the register of
boxes and the XMPP accounts, in which order, independent of HTTP (the service and the
`homeflex pki` commands both call these)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from homeflex.cloud.enroll.accounts import XmppAccounts
from homeflex.cloud.enroll.registry import (
    CODE_VALIDITY,
    Box,
    BoxState,
    IssuedCode,
    Registry,
    RegistryError,
)
from homeflex.cloud.xmpp.domain import new_password
from homeflex.pki.ca import FleetCA
from homeflex.pki.identity import Identity, Role
from homeflex.pki.trust import TrustError, TrustStore

MAX_CSR_PEM = 8192  # a P-256 CSR is well under 1 KiB


class Refused(Exception):
    """A request refused for a reason that is worth a security event: `reason` is a short
    machine-readable word, `detail` says what was wrong."""

    def __init__(self, reason: str, detail: str, box: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.box = box


@dataclass(frozen=True)
class Issued:
    """What a box receives: its chain (leaf, fleet CA), the root, the current CRL."""

    box: str
    chain: list[x509.Certificate]
    root: x509.Certificate
    crl: bytes


@dataclass(frozen=True)
class Enrollment(Issued):
    xmpp: str
    password: str


@dataclass(frozen=True)
class Revocation:
    box: str
    serials: list[int]
    crl: Path
    xmpp: str | None
    xmpp_removed: bool | None  # None: there was no account to remove


def parse_csr(pem: object) -> x509.CertificateSigningRequest:
    """The certificate request a box sent, or Refused("bad-csr") saying what is wrong with it.
    Checked in full before a code is used up, so a broken request does not burn the code."""
    if not isinstance(pem, str) or not pem.strip():
        raise Refused("bad-csr", "field 'csr' must be a PEM certificate request (text)")
    if len(pem) > MAX_CSR_PEM:
        raise Refused("bad-csr", f"field 'csr' is {len(pem)} characters, at most {MAX_CSR_PEM}")
    try:
        csr = x509.load_pem_x509_csr(pem.encode())
    except ValueError as exc:
        raise Refused("bad-csr", f"field 'csr' is not a PEM certificate request ({exc})") from None
    if not csr.is_signature_valid:
        raise Refused("bad-csr", "the certificate request's signature does not verify")
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise Refused("bad-csr", "the certificate request's key must be an EC P-256 key")
    return csr


def _crl(fleet: FleetCA) -> bytes:
    return (fleet.dir / "crl.pem").read_bytes()


def enroll(
    fleet: FleetCA,
    registry: Registry,
    accounts: XmppAccounts,
    code: str,
    csr: x509.CertificateSigningRequest,
    xmpp_domain: str,
    now: datetime | None = None,
) -> Enrollment:
    """Use up `code`, certify the CSR's key as the box the code was made for and give it a
    fresh XMPP account. CodeRefused / MalformedCode when the code does not enroll anything.
    One transaction: if anything fails the code stays usable."""
    with registry.transaction():
        box = registry.claim(code, now)
        jid = f"{box.name}@{xmpp_domain}"
        identity = Identity(box.name, Role.HOME, xmpp=jid)
        # a re-enrolled box had an account: its old password is on the old card, replace it
        password = new_password()
        accounts.add_account(jid, password, replace=True)
        cert = fleet.issue(csr, identity)
        registry.mark_enrolled(box.name, cert.serial_number, jid, now)
    return Enrollment(box.name, [cert, *fleet.chain], fleet.root, _crl(fleet), jid, password)


def renew(
    fleet: FleetCA,
    registry: Registry,
    trust: TrustStore,
    presented: list[x509.Certificate],
    csr: x509.CertificateSigningRequest,
) -> Issued:
    """A new certificate for the enrolled box that presented `presented` (its current chain,
    checked here against the root and the CRL as it is now, not as when the TLS context was
    made). Refused when the certificate or the box is not in good standing."""
    try:
        identity = trust.verify(presented)
    except TrustError as exc:
        raise Refused(exc.code, exc.detail) from None
    if identity.role is not Role.HOME:
        raise Refused("wrong-role", f"{identity.name} is a {identity.role.value}, not a box")
    with registry.transaction():
        box = registry.get(identity.name)
        if box is None:
            raise Refused("unknown-box", f"{identity.name} is not a registered box")
        if box.state is BoxState.REVOKED:
            raise Refused("box-revoked", f"box {box.name} is revoked", box.name)
        if box.state is not BoxState.ENROLLED:
            raise Refused("box-state", f"box {box.name} is {box.state.value}", box.name)
        cert = fleet.issue(csr, Identity(box.name, Role.HOME, xmpp=box.xmpp))
        registry.set_serial(box.name, cert.serial_number)
    return Issued(box.name, [cert, *fleet.chain], fleet.root, _crl(fleet))


def new_code(
    fleet: FleetCA, registry: Registry, name: str, valid: timedelta = CODE_VALIDITY
) -> IssuedCode:
    """Register box `name` (if new) and give it a fresh code; refused when the name belongs to
    another kind of party in the CA (the CA would refuse to issue for it at enrollment)."""
    held = {i.role for i in fleet.issued(name)} - {Role.HOME}
    if held:
        raise RegistryError(
            f"{name}: the name is already held with role {held.pop().value}; "
            "choose another name for the box"
        )
    return registry.new_code(name, valid)


def _revoke_certificates(fleet: FleetCA, name: str, reason: str) -> list[int]:
    # a name could also be a service's: only the box's own certificates
    serials = [i.serial for i in fleet.issued(name) if i.role is Role.HOME and i.revoked_at is None]
    for serial in serials:
        fleet.revoke(serial, reason)
    return serials


def _lock_out(
    fleet: FleetCA, registry: Registry, box: Box, accounts: XmppAccounts | None, reason: str
) -> Revocation:
    """The box's certificates revoked, the list republished, its XMPP account removed (when
    there is an account store to remove it from)."""
    serials = _revoke_certificates(fleet, box.name, reason)
    crl = fleet.publish_crl()
    removed: bool | None = None
    if box.xmpp and box.xmpp_account:
        removed = False
        if accounts is not None:
            accounts.remove_account(box.xmpp)
            registry.set_xmpp_account(box.name, False)
            removed = True
    return Revocation(box.name, serials, crl, box.xmpp, removed)


def revoke_box(
    fleet: FleetCA,
    registry: Registry,
    name: str,
    accounts: XmppAccounts | None,
    reason: str = "keyCompromise",
) -> Revocation:
    """A lost or stolen box: no more renewals or codes, every certificate of it revoked, the CRL
    republished, its XMPP account removed. Without an account store the account stays and the
    result says so (run again with one: revoking twice finishes what was left)."""
    box = registry.mark_revoked(name)  # first: a renewal racing with us is refused or revoked
    return _lock_out(fleet, registry, box, accounts, reason)


def prepare_reenrollment(
    fleet: FleetCA,
    registry: Registry,
    name: str,
    accounts: XmppAccounts | None,
    valid: timedelta = CODE_VALIDITY,
) -> tuple[IssuedCode, Revocation]:
    """A box whose key is gone (replaced SD card) or that was revoked and is trusted again:
    a new code for the same name; its old certificates are revoked and its XMPP account removed
    (when no store is given the account's password is replaced when the box enrolls)."""
    box = registry.get(name)
    if box is None:
        raise RegistryError(f"no box {name!r} in {registry.path}; `homeflex pki code` registers it")
    issued = registry.new_code(name, valid, replace=True)  # pending: renewals now refused
    return issued, _lock_out(fleet, registry, box, accounts, "superseded")
