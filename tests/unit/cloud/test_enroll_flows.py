"""The flows against a real fleet CA and register: enrollment certifies the box's key under the
name its code was made for and creates its XMPP account; renewal needs an enrolled, unrevoked
box; revocation revokes every certificate, republishes the CRL and removes the account;
re-enrollment revokes the old certificates and lets a new key in with a new code. The account
store is the embedded XMPP server's own (PyjabberAccounts, a SQLite file; no server runs)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from homeflex.cloud.enroll import flows
from homeflex.cloud.enroll.registry import BoxState, CodeRefused, Registry, RegistryError
from homeflex.cloud.xmpp.embedded import PyjabberAccounts
from homeflex.pki.bundle import issue_credentials
from homeflex.pki.ca import FleetCA
from homeflex.pki.identity import Identity, Role
from homeflex.pki.keys import make_csr
from homeflex.pki.trust import TrustError, TrustStore
from tests.pki_fixtures import make_fleet

DOMAIN = "xmpp.homeflex.test"


@dataclass
class Aggregator:
    fleet: FleetCA
    registry: Registry
    accounts: PyjabberAccounts

    def trust(self) -> TrustStore:
        return TrustStore.load(self.fleet.dir / "ca.pem", self.fleet.dir / "crl.pem")


@pytest.fixture
def agg(tmp_path: Path) -> Iterator[Aggregator]:
    fleet = make_fleet(tmp_path)
    registry = Registry.open(fleet.dir)
    yield Aggregator(fleet, registry, PyjabberAccounts(tmp_path / "pyjabber.db", DOMAIN))
    registry.close()
    fleet.close()


def box_csr() -> tuple[ec.EllipticCurvePrivateKey, x509.CertificateSigningRequest]:
    key = ec.generate_private_key(ec.SECP256R1())
    # the box asks for a name it does not know; the code decides
    return key, make_csr(key, Identity("whatever", Role.SERVICE))


def enroll(agg: Aggregator, name: str) -> flows.Enrollment:
    code = agg.registry.new_code(name).code
    return flows.enroll(agg.fleet, agg.registry, agg.accounts, code, box_csr()[1], DOMAIN)


def test_enrollment_certifies_the_key_as_the_registered_box(agg: Aggregator) -> None:
    code = agg.registry.new_code("box-0001").code
    key, csr = box_csr()
    done = flows.enroll(agg.fleet, agg.registry, agg.accounts, code, csr, DOMAIN)
    assert agg.trust().verify(done.chain) == Identity(
        "box-0001", Role.HOME, xmpp="box-0001@xmpp.homeflex.test"
    )
    assert done.chain[0].public_key() == key.public_key()
    assert agg.accounts.accounts() == ["box-0001@xmpp.homeflex.test"]
    assert agg.accounts.check("box-0001@xmpp.homeflex.test", done.password)
    assert len(done.password) >= 32
    box = agg.registry.get("box-0001")
    assert box is not None and box.state is BoxState.ENROLLED
    assert box.cert_serial == done.chain[0].serial_number and box.xmpp == done.xmpp
    with pytest.raises(CodeRefused, match="used-code"):
        flows.enroll(agg.fleet, agg.registry, agg.accounts, code, csr, DOMAIN)


def test_renewal_certifies_the_same_identity_again(agg: Aggregator) -> None:
    first = enroll(agg, "box-0001")
    renewed = flows.renew(agg.fleet, agg.registry, agg.trust(), first.chain, box_csr()[1])
    assert agg.trust().verify(renewed.chain) == agg.trust().verify(first.chain)
    assert renewed.chain[0].serial_number != first.chain[0].serial_number
    box = agg.registry.get("box-0001")
    assert box is not None and box.cert_serial == renewed.chain[0].serial_number


def test_a_service_certificate_cannot_renew_as_a_box(agg: Aggregator, tmp_path: Path) -> None:
    svc = issue_credentials(agg.fleet, Identity("svc-0001", Role.SERVICE), tmp_path / "svc")
    with pytest.raises(RegistryError, match="already held with role service"):
        flows.new_code(agg.fleet, agg.registry, "svc-0001")
    with pytest.raises(flows.Refused, match="wrong-role"):
        flows.renew(agg.fleet, agg.registry, agg.trust(), svc.chain(), box_csr()[1])


def test_revocation_revokes_everything_and_removes_the_account(agg: Aggregator) -> None:
    first = enroll(agg, "box-0001")
    second = flows.renew(agg.fleet, agg.registry, agg.trust(), first.chain, box_csr()[1])
    other = enroll(agg, "box-0002")
    done = flows.revoke_box(agg.fleet, agg.registry, "box-0001", agg.accounts)
    assert sorted(done.serials) == sorted(
        [first.chain[0].serial_number, second.chain[0].serial_number]
    )
    crl = x509.load_pem_x509_crl(done.crl.read_bytes())
    assert {r.serial_number for r in crl} == set(done.serials)
    for chain in (first.chain, second.chain):
        with pytest.raises(TrustError) as err:
            agg.trust().verify(chain)
        assert err.value.code == "revoked"
    assert agg.trust().verify(other.chain).name == "box-0002"  # the others keep working
    assert agg.accounts.accounts() == ["box-0002@xmpp.homeflex.test"]
    assert agg.accounts.check("box-0002@xmpp.homeflex.test", other.password)
    with pytest.raises(flows.Refused, match="revoked"):
        flows.renew(agg.fleet, agg.registry, agg.trust(), second.chain, box_csr()[1])


def test_revocation_without_an_account_store_says_so_and_can_be_finished(
    agg: Aggregator,
) -> None:
    enroll(agg, "box-0001")
    done = flows.revoke_box(agg.fleet, agg.registry, "box-0001", None)
    assert done.xmpp_removed is False and len(done.serials) == 1
    assert agg.accounts.accounts() == ["box-0001@xmpp.homeflex.test"]
    again = flows.revoke_box(agg.fleet, agg.registry, "box-0001", agg.accounts)
    assert again.xmpp_removed is True and again.serials == []
    assert agg.accounts.accounts() == []
    box = agg.registry.get("box-0001")
    assert box is not None and box.state is BoxState.REVOKED and not box.xmpp_account


def test_reenrollment_revokes_the_old_key_and_lets_a_new_one_in(agg: Aggregator) -> None:
    old = enroll(agg, "box-0001")
    issued, revoked = flows.prepare_reenrollment(agg.fleet, agg.registry, "box-0001", None)
    assert revoked.serials == [old.chain[0].serial_number]
    with pytest.raises(flows.Refused, match="revoked"):
        flows.renew(agg.fleet, agg.registry, agg.trust(), old.chain, box_csr()[1])
    key, csr = box_csr()
    new = flows.enroll(agg.fleet, agg.registry, agg.accounts, issued.code, csr, DOMAIN)
    assert agg.trust().verify(new.chain).xmpp == "box-0001@xmpp.homeflex.test"
    assert new.chain[0].public_key() == key.public_key()
    assert new.password != old.password  # the old card's password no longer logs in
    assert agg.accounts.accounts() == ["box-0001@xmpp.homeflex.test"]
    assert agg.accounts.check("box-0001@xmpp.homeflex.test", new.password)
    assert not agg.accounts.check("box-0001@xmpp.homeflex.test", old.password)
    with pytest.raises(TrustError, match="revoked"):
        agg.trust().verify(old.chain)


def _pem(csr: x509.CertificateSigningRequest) -> str:
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def test_bad_certificate_requests_are_refused() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    csr384 = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(p384, hashes.SHA256())
    )
    good = _pem(box_csr()[1])
    tampered = good.replace(good.splitlines()[5], good.splitlines()[5][::-1])
    for bad, message in [
        (None, "must be a PEM"),
        ("hello", "not a PEM certificate request"),
        (_pem(csr384), "P-256"),
        (tampered, "not a PEM certificate request|signature"),
        ("x" * 9000, "at most 8192"),
    ]:
        with pytest.raises(flows.Refused, match=message):
            flows.parse_csr(bad)
    assert flows.parse_csr(good).is_signature_valid
