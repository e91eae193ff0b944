"""Installing an update bundle on the box: nothing is unpacked before the manifest's signature,
its signer (a release certificate of our CA, not revoked) and every file's hash and size have
been checked, and the version is newer than the one installed. Each refusal is a security
event. Releases live in `<data_dir>/releases/<version>/`; `current` is a symlink switched
atomically, so a failure at any point leaves the box on the release it runs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from homeflex.pki.identity import Role
from homeflex.pki.release import (
    FILES,
    MANIFEST,
    PRODUCT,
    SIGNATURE,
    SIGNER,
    Manifest,
    parse_version,
)
from homeflex.pki.trust import TrustError, TrustStore
from homeflex.security import SecurityLog

MAX_MEMBER = 256 * 1024 * 1024  # no single file of a gateway release is near this


class UpdateRefused(Exception):
    """The bundle is not installed; the message says why."""


def installed_version(data_dir: Path) -> str | None:
    current = data_dir / "current"
    return os.readlink(current).rsplit("/", 1)[-1] if current.is_symlink() else None


def _refuse(log: SecurityLog, bundle: Path, reason: str) -> UpdateRefused:
    log.record("update-refused", str(bundle), reason)
    return UpdateRefused(f"{bundle}: {reason}")


def _safe_name(name: str) -> bool:
    p = PurePosixPath(name)
    return bool(name) and not p.is_absolute() and ".." not in p.parts and "\\" not in name


def _members(tar: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    members: dict[str, tarfile.TarInfo] = {}
    for m in tar.getmembers():
        if not m.isfile():
            raise ValueError(
                f"member {m.name!r} is not a regular file (links and devices are refused)"
            )
        if not _safe_name(m.name):
            raise ValueError(f"member {m.name!r} has an unsafe path")
        if m.name in members:
            raise ValueError(f"member {m.name!r} appears twice")
        if m.size > MAX_MEMBER:
            raise ValueError(f"member {m.name!r} is {m.size} bytes, over the limit")
        members[m.name] = m
    return members


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    f = tar.extractfile(member)
    assert f is not None  # a regular file
    return f.read()


def _manifest(body: bytes) -> Manifest:
    raw: Any = json.loads(body)
    if not isinstance(raw, dict) or raw.get("format") != 1 or raw.get("product") != PRODUCT:
        raise ValueError(f"not a manifest of {PRODUCT} (format 1)")
    version = str(raw.get("version"))
    parse_version(version)
    files = raw.get("files")
    if not isinstance(files, dict) or not files:
        raise ValueError("the manifest lists no files")
    listed = {}
    for rel, entry in files.items():
        if not _safe_name(rel) or not isinstance(entry, dict):
            raise ValueError(f"manifest entry {rel!r} is not a safe path with a hash and size")
        listed[rel] = (str(entry.get("sha256")), int(entry.get("size", -1)))
    manifest = Manifest(version, int(raw.get("created", 0)), listed)
    if manifest.canonical() != body:
        raise ValueError("the manifest is not in its canonical form")
    return manifest


def verify_bundle(
    bundle: Path, trust: TrustStore, installed: str | None, log: SecurityLog
) -> Manifest:
    """The bundle's manifest once everything checks out; UpdateRefused (and a security event)
    naming the first thing that does not."""
    try:
        tar = tarfile.open(bundle, "r:")  # noqa: SIM115 (closed by the `with tar` below)
    except (OSError, tarfile.TarError) as exc:
        raise _refuse(log, bundle, f"not an update bundle ({exc})") from None
    with tar:
        try:
            members = _members(tar)
        except ValueError as exc:
            raise _refuse(log, bundle, str(exc)) from None
        if SIGNATURE not in members or SIGNER not in members:
            raise _refuse(log, bundle, "unsigned: no manifest.sig or signer.pem")
        if MANIFEST not in members:
            raise _refuse(log, bundle, "no manifest.json")
        body = _read(tar, members[MANIFEST])
        try:
            chain = x509.load_pem_x509_certificates(_read(tar, members[SIGNER]))
            signer = trust.verify(chain)
        except (ValueError, TrustError) as exc:
            raise _refuse(log, bundle, f"signer refused: {exc}") from None
        if signer.role is not Role.RELEASE:
            raise _refuse(log, bundle, f"signer {signer.name} has role {signer.role}, not release")
        key = chain[0].public_key()
        try:
            assert isinstance(key, ec.EllipticCurvePublicKey)
            key.verify(_read(tar, members[SIGNATURE]), body, ec.ECDSA(hashes.SHA256()))
        except (AssertionError, InvalidSignature):
            raise _refuse(
                log, bundle, f"bad signature on the manifest (signer {signer.name})"
            ) from None
        try:
            manifest = _manifest(body)
        except (ValueError, TypeError) as exc:
            raise _refuse(log, bundle, f"manifest: {exc}") from None
        carried = {n[len(FILES) :] for n in members if n.startswith(FILES)}
        extra = set(members) - {MANIFEST, SIGNATURE, SIGNER} - {FILES + r for r in carried}
        if carried != set(manifest.files) or extra:
            odd = sorted((carried ^ set(manifest.files)) | extra)
            raise _refuse(log, bundle, f"files and manifest disagree: {', '.join(odd)}")
        for rel, (sha256, size) in manifest.files.items():
            data = _read(tar, members[FILES + rel])
            if len(data) != size or hashlib.sha256(data).hexdigest() != sha256:
                raise _refuse(log, bundle, f"file {rel} does not match its hash or size")
        if installed is not None and parse_version(manifest.version) <= parse_version(installed):
            raise _refuse(
                log,
                bundle,
                f"version {manifest.version} is not newer than the installed {installed}",
            )
        return manifest


def install_bundle(bundle: Path, data_dir: Path, trust: TrustStore, log: SecurityLog) -> Manifest:
    """Verify, unpack into releases/<version>/ and switch `current` to it; the previous release
    stays for a rollback."""
    manifest = verify_bundle(bundle, trust, installed_version(data_dir), log)
    releases = data_dir / "releases"
    releases.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=releases))
    try:
        with tarfile.open(bundle, "r:") as tar:
            for rel in manifest.files:
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(_read(tar, tar.getmember(FILES + rel)))
        final = releases / manifest.version
        if final.exists():  # left by an install that failed before switching
            shutil.rmtree(final)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    link = data_dir / ".current.tmp"
    link.unlink(missing_ok=True)
    link.symlink_to(Path("releases") / manifest.version)
    os.replace(link, data_dir / "current")
    return manifest
