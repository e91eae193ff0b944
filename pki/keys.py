"""Private keys, generated where they live and written readable by their owner only."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from homeflex.pki.identity import Identity

# P-256 signs (ECDSA) and agrees keys (ECDH) with one certificate, and every TLS stack we talk to
# (OpenSSL, Mosquitto, Prosody, pyjabber, embedded devices) supports it.
CURVE = ec.SECP256R1()


def write_private(path: Path, data: bytes) -> None:
    """Create `path` with mode 0600 and `data`; refuses to overwrite, so a key is never replaced
    by accident (a replaced key would silently invalidate the certificate issued for it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def generate_key(path: Path, passphrase: bytes | None = None) -> ec.EllipticCurvePrivateKey:
    """A new P-256 key written to `path` (PKCS#8 PEM, encrypted when a passphrase is given)."""
    if path.exists():
        raise FileExistsError(f"{path}: a key is already there; remove it first if it is unused")
    key = ec.generate_private_key(CURVE)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    write_private(
        path,
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        ),
    )
    return key


def load_key(path: Path, passphrase: bytes | None = None) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), passphrase)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: cannot load the private key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: not an elliptic-curve key")
    return key


def make_csr(key: ec.EllipticCurvePrivateKey, identity: Identity) -> x509.CertificateSigningRequest:
    """A request for a certificate carrying `identity`; the CA decides what it finally signs."""
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(identity.subject())
        .add_extension(x509.SubjectAlternativeName(identity.alt_names()), critical=False)
        .sign(key, hashes.SHA256())
    )
