"""The PKI: what the fleet CA issues carries the identity, and the trust store refuses
certificates from another CA with the same names, out of their validity, or revoked; the TLS
contexts apply the same rules in a real handshake on loopback."""

from __future__ import annotations

import os
import socket
import ssl
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from homeflex.pki.bundle import Credentials, issue_credentials
from homeflex.pki.ca import CaError, FleetCA
from homeflex.pki.identity import Identity, Role
from homeflex.pki.keys import generate_key, load_key, make_csr
from homeflex.pki.trust import TrustError, TrustStore, client_context, server_context
from tests.pki_fixtures import PASSPHRASE, CredsFactory, make_fleet

BOX = Identity("box-0001", Role.HOME, xmpp="box-0001@xmpp.homeflex.test")
BROKER = Identity("broker", Role.SERVICE, dns=("localhost",), ips=("127.0.0.1",))


def test_a_certificate_carries_its_identity(creds: CredsFactory) -> None:
    box = creds(BOX)
    assert TrustStore.of(box).verify(box.chain()) == BOX
    assert box.identity().xmpp == "box-0001@xmpp.homeflex.test"
    assert Identity.from_certificate(creds(BROKER).certificate()) == BROKER


def test_keys_are_readable_by_their_owner_only(creds: CredsFactory, tmp_path: Path) -> None:
    box = creds(BOX)
    assert os.stat(box.key_path).st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):
        generate_key(box.key_path)


def test_the_root_key_is_encrypted_at_rest(fleet_ca: FleetCA) -> None:
    root_key = fleet_ca.dir.parent / "root" / "root.key"
    with pytest.raises(ValueError, match="cannot load"):
        load_key(root_key)
    assert load_key(root_key, PASSPHRASE).curve.name == "secp256r1"


def test_another_ca_with_the_same_names_is_unknown(creds: CredsFactory, tmp_path: Path) -> None:
    impostor_ca = make_fleet(tmp_path)  # same root and fleet CA names, other keys
    impostor = issue_credentials(impostor_ca, BOX, tmp_path / "impostor")
    with pytest.raises(TrustError) as err:
        TrustStore.of(creds(BOX)).verify(impostor.chain())
    assert err.value.code == "unknown-ca"


def test_validity_is_checked(creds: CredsFactory) -> None:
    box = creds(BOX)
    store = TrustStore.of(box)
    cert = box.certificate()
    with pytest.raises(TrustError) as err:
        store.verify(box.chain(), at=cert.not_valid_after_utc + timedelta(seconds=1))
    assert err.value.code == "expired"
    with pytest.raises(TrustError) as err:
        store.verify(box.chain(), at=cert.not_valid_before_utc - timedelta(seconds=1))
    assert err.value.code == "not-yet-valid"


def test_a_revoked_certificate_is_refused_once_the_list_is_refreshed(
    fleet_ca: FleetCA, creds: CredsFactory
) -> None:
    box, other = creds(BOX), creds(Identity("box-0002", Role.HOME))
    store = TrustStore.load(box.ca_path, fleet_ca.dir / "crl.pem")
    assert store.verify(box.chain()) == BOX
    fleet_ca.revoke(box.certificate().serial_number, "stolen")
    assert store.verify(box.chain()) == BOX  # not published yet
    fleet_ca.publish_crl()
    with pytest.raises(TrustError) as err:
        store.verify(box.chain())
    assert err.value.code == "revoked"
    assert store.verify(other.chain()).name == "box-0002"
    assert fleet_ca.issued("box-0001")[-1].revoked_at is not None


def test_an_out_of_date_list_refuses_everything(creds: CredsFactory) -> None:
    box = creds(BOX)
    store = TrustStore.of(box)
    assert store.crl is not None and store.crl.next_update_utc is not None
    with pytest.raises(TrustError) as err:
        store.verify(box.chain(), at=store.crl.next_update_utc + timedelta(seconds=1))
    assert err.value.code == "crl"


def test_the_ca_refuses_a_forged_request(fleet_ca: FleetCA, tmp_path: Path) -> None:
    key = generate_key(tmp_path / "k.pem")
    csr = make_csr(key, BOX)
    der = bytearray(csr.public_bytes(Encoding.DER))
    der[-1] ^= 0x01  # the signature's last byte
    with pytest.raises(CaError, match="signature"):
        fleet_ca.issue(x509.load_der_x509_csr(bytes(der)), BOX)
    with pytest.raises(CaError, match="not issued"):
        fleet_ca.revoke(12345)


def handshake(server: Credentials, client: ssl.SSLContext, name: str = "localhost") -> str:
    """One TLS handshake on loopback; the client's identity as the server saw it, or the
    server's error."""
    ctx = server_context(server)
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[str] = []

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with ctx.wrap_socket(conn, server_side=True) as tls:
                der = tls.getpeercert(binary_form=True)
                assert der is not None
                seen.append(Identity.from_certificate(x509.load_der_x509_certificate(der)).name)
                tls.sendall(b"ok")
        except ssl.SSLError as exc:
            seen.append(f"refused: {exc.reason}")
        finally:
            conn.close()

    t = threading.Thread(target=serve)
    t.start()
    try:
        with (
            socket.create_connection(listener.getsockname()) as raw,
            client.wrap_socket(raw, server_hostname=name) as tls,
        ):
            tls.recv(2)
    except (ssl.SSLError, ConnectionError):
        pass
    t.join(5)
    listener.close()
    return seen[0] if seen else "no connection"


def test_tls_contexts_verify_both_sides(
    fleet_ca: FleetCA, creds: CredsFactory, tmp_path: Path
) -> None:
    broker, box = creds(BROKER), creds(BOX)
    assert handshake(broker, client_context(box)) == "box-0001"
    # a client that trusts our root refuses a server from another CA with the same names
    impostor = issue_credentials(make_fleet(tmp_path), BROKER, tmp_path / "impostor")
    assert handshake(impostor, client_context(box)).startswith("refused")
    # the server refuses a client certificate that was revoked
    fleet_ca.revoke(box.certificate().serial_number)
    broker.crl_path.write_bytes(fleet_ca.publish_crl().read_bytes())
    assert handshake(broker, client_context(box)).startswith("refused")


def test_a_name_keeps_its_role(fleet_ca: FleetCA, creds: CredsFactory) -> None:
    creds(Identity("ingest", Role.SERVICE))
    with pytest.raises(CaError, match="already held with role service"):
        creds(Identity("ingest", Role.HOME))
