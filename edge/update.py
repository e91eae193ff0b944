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
    # relative, no `..`, and already in normal form: `a/./b` or `a//b` would name the same
    # file as `a/b` under another spelling, which the manifest-to-member matching must not see
    p = PurePosixPath(name)
    return (
        bool(p.parts)
        and not p.is_absolute()
        and ".." not in p.parts
        and p.as_posix() == name
        and "\\" not in name
        and "\0" not in name
    )


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


def _signature_valid(cert: x509.Certificate, signature: bytes, body: bytes) -> bool:
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):  # our CA issues P-256 keys only
        return False
    try:
        key.verify(signature, body, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


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
            return _check(tar, bundle, trust, installed, log)
        except (EOFError, tarfile.TarError) as exc:
            # a member header or body cut short: tarfile finds out only when it reaches it
            raise _refuse(log, bundle, f"not an update bundle ({exc})") from None


def _check(
    tar: tarfile.TarFile, bundle: Path, trust: TrustStore, installed: str | None, log: SecurityLog
) -> Manifest:
    """Cheapest and least trusting first: member names and types, then the signer, the
    signature, and only then the signed manifest's content and the files' hashes."""
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
    except (ValueError, x509.InvalidVersion, TrustError) as exc:  # any bytes may be in there
        raise _refuse(log, bundle, f"signer refused: {exc}") from None
    if signer.role is not Role.RELEASE:
        raise _refuse(log, bundle, f"signer {signer.name} has role {signer.role}, not release")
    if not _signature_valid(chain[0], _read(tar, members[SIGNATURE]), body):
        raise _refuse(log, bundle, f"bad signature on the manifest (signer {signer.name})")
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
    try:
        floor = parse_version(installed) if installed is not None else None
    except ValueError:
        raise _refuse(
            log, bundle, f"the installed release {installed!r} has no version to compare with"
        ) from None
    if floor is not None and parse_version(manifest.version) <= floor:
        raise _refuse(
            log,
            bundle,
            f"version {manifest.version} is not newer than the installed {installed}",
        )
    return manifest


def install_bundle(bundle: Path, data_dir: Path, trust: TrustStore, log: SecurityLog) -> Manifest:
    """Verify, unpack into releases/<version>/ and switch `current` to it. The release it
    replaces stays for a rollback; older ones are removed (a box's flash is small)."""
    previous = installed_version(data_dir)
    manifest = verify_bundle(bundle, trust, previous, log)
    releases = data_dir / "releases"
    releases.mkdir(parents=True, exist_ok=True)
    for stale in releases.glob(".unpack-*"):  # left by an install cut short (power loss)
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=releases))
    try:
        with tarfile.open(bundle, "r:") as tar:
            _unpack(tar, manifest, staging)
        final = releases / manifest.version
        if final.exists():  # left by an install that failed before switching
            shutil.rmtree(final)
        staging.rename(final)
        _fsync_dir(releases)
    except (ValueError, KeyError, tarfile.TarError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        # it verified a moment ago: the file was replaced while we were reading it
        raise _refuse(log, bundle, f"changed after it was verified ({exc})") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    link = data_dir / ".current.tmp"
    link.unlink(missing_ok=True)
    link.symlink_to(Path("releases") / manifest.version)
    os.replace(link, data_dir / "current")  # rename(2): `current` is the old or the new, never none
    _fsync_dir(data_dir)
    keep = {manifest.version, previous}
    for old in releases.iterdir():
        if old.is_dir() and not old.name.startswith(".") and old.name not in keep:
            shutil.rmtree(old, ignore_errors=True)
    return manifest


def _unpack(tar: tarfile.TarFile, manifest: Manifest, staging: Path) -> None:
    """Write the manifest's files under `staging`, each checked again against its hash as it
    is written: what was verified and what is installed are the same bytes even if the bundle
    file changes in between."""
    members = _members(tar)
    for rel, (sha256, size) in manifest.files.items():
        data = _read(tar, members[FILES + rel])
        if len(data) != size or hashlib.sha256(data).hexdigest() != sha256:
            raise ValueError(f"file {rel} does not match its hash or size")
        target = staging / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
