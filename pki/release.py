"""Signed update bundles: a release key (a certificate of role `release` from the fleet CA)
signs a manifest of the release's files; the box installs nothing whose manifest, signature,
signer or files do not check out (seed 004 TST-SEC#01).

A bundle is an uncompressed tar: `manifest.json` (canonical JSON: format, product, version,
created, and each file's SHA-256 and size), `manifest.sig` (ECDSA P-256/SHA-256 over the
manifest's bytes), `signer.pem` (the release certificate and the fleet CA's), then the files
under `files/`. Uncompressed because the files' hashes are what is signed, and a decompressor
would be one more parser fed untrusted input before the signature is checked."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from homeflex.pki.bundle import Credentials
from homeflex.pki.identity import Role

FORMAT = 1
PRODUCT = "homeflex-gateway"
MANIFEST, SIGNATURE, SIGNER, FILES = "manifest.json", "manifest.sig", "signer.pem", "files/"
_VERSION = re.compile(r"^\d{1,6}(\.\d{1,6}){2}$")


def parse_version(text: str) -> tuple[int, ...]:
    """`major.minor.patch`, compared as numbers: releases of a box are a single line, so three
    integers say all that matters (no pre-releases reach the fleet)."""
    if not isinstance(text, str) or not _VERSION.match(text):
        raise ValueError(f"version {text!r}: expected major.minor.patch, e.g. 1.4.0")
    return tuple(int(part) for part in text.split("."))


@dataclass(frozen=True)
class Manifest:
    version: str
    created: int
    files: dict[str, tuple[str, int]]  # relative path → (sha256 hex, size)

    def canonical(self) -> bytes:
        body = {
            "format": FORMAT,
            "product": PRODUCT,
            "version": self.version,
            "created": self.created,
            "files": {p: {"sha256": h, "size": n} for p, (h, n) in sorted(self.files.items())},
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))


def sign_bundle(source: Path, version: str, signer: Credentials, out: Path) -> Manifest:
    """Bundle every regular file under `source` as release `version`, signed by `signer`."""
    parse_version(version)
    if signer.identity().role is not Role.RELEASE:
        raise ValueError(f"{signer.dir}: not a release certificate (role {signer.identity().role})")
    paths = sorted(p for p in source.rglob("*") if p.is_file() and not p.is_symlink())
    if not paths:
        raise ValueError(f"{source}: no files to release")
    contents = {p.relative_to(source).as_posix(): p.read_bytes() for p in paths}
    manifest = Manifest(
        version,
        int(time.time()),
        {rel: (hashlib.sha256(data).hexdigest(), len(data)) for rel, data in contents.items()},
    )
    body = manifest.canonical()
    signature = signer.key().sign(body, ec.ECDSA(hashes.SHA256()))
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in signer.chain())
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, MANIFEST, body)
        _add(tar, SIGNATURE, signature)
        _add(tar, SIGNER, chain)
        for rel, data in contents.items():
            _add(tar, FILES + rel, data)
    return manifest
