"""A party's credentials: one directory holding its key, its certificate chain, the root it
trusts and the latest revocation list. Services, gateways and agents all load theirs the same
way, so one change of layout changes them all."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from homeflex.pki.ca import FleetCA
from homeflex.pki.identity import Identity
from homeflex.pki.keys import generate_key, load_key, make_csr


@dataclass(frozen=True)
class Credentials:
    dir: Path

    @property
    def key_path(self) -> Path:
        return self.dir / "key.pem"

    @property
    def cert_path(self) -> Path:
        """The leaf certificate followed by the fleet CA's: what TLS sends."""
        return self.dir / "cert.pem"

    @property
    def ca_path(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def crl_path(self) -> Path:
        return self.dir / "crl.pem"

    @classmethod
    def load(cls, directory: Path) -> Credentials:
        creds = cls(directory)
        missing = [
            p.name for p in (creds.key_path, creds.cert_path, creds.ca_path) if not p.is_file()
        ]
        if missing:
            raise FileNotFoundError(
                f"{directory}: missing {', '.join(missing)} (enroll the box, or issue credentials "
                "with `homeflex pki issue`)"
            )
        return creds

    def key(self) -> ec.EllipticCurvePrivateKey:
        return load_key(self.key_path)

    def chain(self) -> list[x509.Certificate]:
        return x509.load_pem_x509_certificates(self.cert_path.read_bytes())

    def certificate(self) -> x509.Certificate:
        return self.chain()[0]

    def identity(self) -> Identity:
        return Identity.from_certificate(self.certificate())

    def install(
        self,
        chain: list[x509.Certificate],
        root: x509.Certificate,
        crl: bytes | None = None,
    ) -> None:
        """Write a newly issued chain (and the root and list that came with it), each file
        replaced atomically so a reader never sees a certificate without its key."""
        _replace(
            self.cert_path, b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
        )
        _replace(self.ca_path, root.public_bytes(serialization.Encoding.PEM))
        if crl is not None:
            _replace(self.crl_path, crl)


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def issue_credentials(
    fleet: FleetCA, identity: Identity, directory: Path, days: int = 30
) -> Credentials:
    """Key generated in `directory`, certificate issued by `fleet` directly: for services on the
    CA's own host, tests and the demo (boxes enroll over the network instead)."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    key = generate_key(directory / "key.pem")
    cert = fleet.issue(make_csr(key, identity), identity, days)
    creds = Credentials(directory)
    creds.install([cert, *fleet.chain], fleet.root, (fleet.dir / "crl.pem").read_bytes())
    return creds
