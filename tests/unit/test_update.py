"""Signed updates (seed 004 TST-SEC#01): a bundle signed by a release certificate of our CA is
installed and `current` switches to it; everything else is refused with a security event and
the installed release stays what it was."""

from __future__ import annotations

import base64
import errno
import hashlib
import io
import os
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from homeflex.edge.update import UpdateRefused, install_bundle, installed_version
from homeflex.pki.bundle import Credentials, issue_credentials
from homeflex.pki.ca import FleetCA
from homeflex.pki.identity import Identity, Role
from homeflex.pki.keys import generate_key
from homeflex.pki.release import Manifest, sign_bundle
from homeflex.pki.trust import TrustStore
from homeflex.security import SecurityLog, read_events
from tests.pki_fixtures import CredsFactory, make_fleet

RELEASE = Identity("release-2026", Role.RELEASE)


@pytest.fixture
def release(creds: CredsFactory) -> Credentials:
    return creds(RELEASE)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "bin").mkdir(parents=True)
    (src / "bin" / "homeflex-gateway").write_bytes(b"#!/bin/sh\necho gateway\n")
    (src / "VERSION").write_text("release notes\n")
    return src


def signed(source: Path, version: str, signer: Credentials, out: Path) -> Path:
    sign_bundle(source, version, signer, out)
    return out


class Box:
    def __init__(self, tmp_path: Path, fleet_ca: FleetCA) -> None:
        self.data = tmp_path / "box"
        self.log = SecurityLog(tmp_path / "box-security.log")
        self.trust = TrustStore.load(fleet_ca.dir / "ca.pem", fleet_ca.dir / "crl.pem")

    def install(self, bundle: Path) -> str:
        return install_bundle(bundle, self.data, self.trust, self.log).version

    def refuses(self, bundle: Path, reason: str) -> None:
        before, version = len(read_events(self.log.path)), installed_version(self.data)
        with pytest.raises(UpdateRefused, match=reason):
            self.install(bundle)
        events = read_events(self.log.path)
        assert len(events) == before + 1
        assert events[-1].kind == "update-refused" and reason in events[-1].detail
        assert events[-1].source == str(bundle)
        assert installed_version(self.data) == version


@pytest.fixture
def box(tmp_path: Path, fleet_ca: FleetCA) -> Box:
    return Box(tmp_path, fleet_ca)


def rewrite(bundle: Path, out: Path, change: dict[str, bytes | None]) -> Path:
    """A copy of `bundle` with members replaced (bytes) or left out (None)."""
    with tarfile.open(bundle) as src, tarfile.open(out, "w") as dst:
        for m in src.getmembers():
            f = src.extractfile(m)
            assert f is not None
            data = change.get(m.name, f.read())
            if data is None:
                continue
            m.size = len(data)
            dst.addfile(m, io.BytesIO(data))
    return out


def hand_signed(
    signer: Credentials,
    files: dict[str, bytes],
    out: Path,
    *,
    version: str = "1.0.0",
    sizes: dict[str, int] | None = None,
    unlisted: dict[str, bytes] | None = None,
) -> Path:
    """A bundle assembled by hand, signed with any key: what sign_bundle would refuse to make."""
    listed = {
        rel: (hashlib.sha256(data).hexdigest(), (sizes or {}).get(rel, len(data)))
        for rel, data in files.items()
    }
    body = Manifest(version, 1_700_000_000, listed).canonical()
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in signer.chain())
    members = {
        "manifest.json": body,
        "manifest.sig": signer.key().sign(body, ec.ECDSA(hashes.SHA256())),
        "signer.pem": chain,
        **{f"files/{rel}": data for rel, data in {**files, **(unlisted or {})}.items()},
    }
    with tarfile.open(out, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out


def expired_release(fleet: FleetCA, directory: Path) -> Credentials:
    """A release certificate of our fleet CA whose validity ended yesterday (the CA itself
    never issues one like it, so it is made here with the CA's key)."""
    directory.mkdir()
    key = generate_key(directory / "key.pem")
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(RELEASE.subject())
        .issuer_name(fleet.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=31))
        .not_valid_after(now - timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .sign(fleet.key, hashes.SHA256())
    )
    creds = Credentials(directory)
    creds.install([cert, *fleet.chain], fleet.root, (fleet.dir / "crl.pem").read_bytes())
    return creds


def test_a_signed_bundle_installs_and_the_next_replaces_it(
    box: Box, release: Credentials, source: Path, tmp_path: Path
) -> None:
    assert box.install(signed(source, "1.0.0", release, tmp_path / "a.tar")) == "1.0.0"
    assert (box.data / "current" / "bin" / "homeflex-gateway").read_bytes().endswith(b"gateway\n")
    (source / "VERSION").write_text("1.1\n")
    assert box.install(signed(source, "1.1.0", release, tmp_path / "b.tar")) == "1.1.0"
    assert (box.data / "current" / "VERSION").read_text() == "1.1\n"
    assert (box.data / "releases" / "1.0.0" / "VERSION").read_text() == "release notes\n"
    assert read_events(box.log.path) == []


def test_an_older_or_the_same_version_is_refused(
    box: Box, release: Credentials, source: Path, tmp_path: Path
) -> None:
    box.install(signed(source, "2.0.0", release, tmp_path / "new.tar"))
    box.refuses(signed(source, "1.9.9", release, tmp_path / "old.tar"), "not newer")
    box.refuses(tmp_path / "new.tar", "not newer")  # the same bundle again


def test_unsigned_and_tampered_bundles_are_refused(
    box: Box, release: Credentials, source: Path, tmp_path: Path
) -> None:
    good = signed(source, "1.0.0", release, tmp_path / "good.tar")
    box.refuses(rewrite(good, tmp_path / "u.tar", {"manifest.sig": None}), "unsigned")
    box.refuses(
        rewrite(good, tmp_path / "f.tar", {"files/VERSION": b"release notez\n"}),
        "does not match its hash",
    )
    with tarfile.open(good) as t:
        manifest = t.extractfile("manifest.json").read()  # type: ignore[union-attr]
    box.refuses(
        rewrite(good, tmp_path / "m.tar", {"manifest.json": manifest.replace(b"1.0.0", b"9.0.0")}),
        "bad signature",
    )
    box.refuses(
        rewrite(good, tmp_path / "x.tar", {"files/VERSION": None}), "files and manifest disagree"
    )
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all")
    box.refuses(tmp_path / "junk.tar", "not an update bundle")
    assert box.install(good) == "1.0.0"


def test_cut_short_or_garbled_bundles_are_refused_never_crash(
    box: Box, release: Credentials, source: Path, tmp_path: Path
) -> None:
    """A bundle cut off anywhere in its members, or with a signer.pem that is not a
    certificate, is one refusal each (tarfile and the X.509 parser raise their own errors)."""
    good = signed(source, "1.0.0", release, tmp_path / "good.tar")
    with tarfile.open(good) as t:
        last = t.getmembers()[-1]
        end = last.offset_data + last.size
        der = t.extractfile("signer.pem").read()  # type: ignore[union-attr]
    raw = good.read_bytes()
    # the reason depends on where it stops: inside a member, or between two (fewer files)
    stops = ("not an update bundle", "unsigned", "files and manifest disagree")
    for n, cut in enumerate(range(0, end, 200)):
        (tmp_path / f"cut{n}.tar").write_bytes(raw[:cut])
        with pytest.raises(UpdateRefused) as refused:
            box.install(tmp_path / f"cut{n}.tar")
        assert str(refused.value).split(": ", 1)[1].startswith(stops), (cut, refused.value)
        assert len(read_events(box.log.path)) == n + 1
    leaf = x509.load_pem_x509_certificates(der)[0].public_bytes(serialization.Encoding.DER)
    assert leaf.count(b"\xa0\x03\x02\x01\x02") == 1  # [0] EXPLICIT version v3
    bad_version = leaf.replace(b"\xa0\x03\x02\x01\x02", b"\xa0\x03\x02\x01\x12")
    pem = b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(bad_version)
    pem += b"-----END CERTIFICATE-----\n"
    box.refuses(rewrite(good, tmp_path / "v.tar", {"signer.pem": pem}), "signer refused")
    box.refuses(rewrite(good, tmp_path / "e.tar", {"signer.pem": b""}), "signer refused")
    assert read_events(box.log.path)[0].detail.startswith("not an update bundle")
    assert installed_version(box.data) is None and not (box.data / "current").exists()


def test_signers_that_are_not_our_release_key_are_refused(
    box: Box, creds: CredsFactory, source: Path, tmp_path: Path
) -> None:
    home = creds(Identity("box-0001", Role.HOME))
    with pytest.raises(ValueError, match="not a release certificate"):
        sign_bundle(source, "1.0.0", home, tmp_path / "h.tar")
    # a HOME key signing a well-formed manifest itself: a valid certificate, the wrong role
    box.refuses(hand_signed(home, {"VERSION": b"1\n"}, tmp_path / "hs.tar"), "not release")
    # a key of another CA with the same names: the root it chains to is not ours
    release_like = issue_credentials(make_fleet(tmp_path / "other"), RELEASE, tmp_path / "o")
    forged = signed(source, "1.0.0", release_like, tmp_path / "o.tar")
    box.refuses(forged, "unknown-ca")
    with tarfile.open(forged) as t:
        sig = t.extractfile("manifest.sig").read()  # type: ignore[union-attr]
    good = signed(source, "1.0.0", creds(RELEASE), tmp_path / "g.tar")
    # our signer's certificate, another key's signature
    box.refuses(rewrite(good, tmp_path / "s.tar", {"manifest.sig": sig}), "bad signature")
    # our HOME certificate in place of the signer's (its key did not sign)
    home_cert = rewrite(good, tmp_path / "hc.tar", {"signer.pem": home.cert_path.read_bytes()})
    box.refuses(home_cert, "not release")
    assert installed_version(box.data) is None


def test_an_expired_release_key_is_refused(
    box: Box, fleet_ca: FleetCA, source: Path, tmp_path: Path
) -> None:
    expired = expired_release(fleet_ca, tmp_path / "expired")
    box.refuses(signed(source, "1.0.0", expired, tmp_path / "e.tar"), "expired")


def test_a_signed_manifest_that_does_not_fit_its_files_is_refused(
    box: Box, release: Credentials, tmp_path: Path
) -> None:
    """The release key signed it, yet the files do not match: size, extras, unsafe names."""
    data = b"gateway\n"
    box.refuses(
        hand_signed(release, {"bin/gw": data}, tmp_path / "size.tar", sizes={"bin/gw": 3}),
        "does not match its hash or size",
    )
    box.refuses(
        hand_signed(release, {"bin/gw": data}, tmp_path / "extra.tar", unlisted={"bin/x": b"x"}),
        "files and manifest disagree: bin/x",
    )
    box.refuses(
        hand_signed(release, {"../../etc/cron.d/x": data}, tmp_path / "dots.tar"), "unsafe path"
    )
    box.refuses(hand_signed(release, {"bin/./gw": data}, tmp_path / "dot.tar"), "unsafe path")
    assert installed_version(box.data) is None


@pytest.mark.parametrize(
    "name,kind",
    [
        ("/etc/passwd", tarfile.REGTYPE),
        ("files/../../etc/passwd", tarfile.REGTYPE),
        ("files/bin/gw", tarfile.SYMTYPE),
        ("files/bin/gw", tarfile.LNKTYPE),
        ("files/dev/sda", tarfile.BLKTYPE),
        ("files/dev/mem", tarfile.CHRTYPE),
        ("files/run/fifo", tarfile.FIFOTYPE),
    ],
)
def test_unsafe_members_are_refused_before_anything_is_read(
    box: Box, release: Credentials, source: Path, tmp_path: Path, name: str, kind: bytes
) -> None:
    good = signed(source, "1.0.0", release, tmp_path / "good.tar")
    evil = tmp_path / "evil.tar"
    with tarfile.open(good) as src, tarfile.open(evil, "w") as dst:
        for m in src.getmembers():
            dst.addfile(m, src.extractfile(m))
        member = tarfile.TarInfo(name)
        member.type = kind
        if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
            member.linkname = "/etc/passwd"
        payload = b"root::0:0::/root:/bin/sh\n" if kind == tarfile.REGTYPE else b""
        member.size = len(payload)
        dst.addfile(member, io.BytesIO(payload))
    reason = "unsafe path" if kind == tarfile.REGTYPE else "not a regular file"
    box.refuses(evil, f"{name!r} {'has an' if kind == tarfile.REGTYPE else 'is'} {reason}")
    assert not (box.data / "releases").exists()


def test_a_bundle_changed_after_verification_leaves_current_alone(
    box: Box,
    release: Credentials,
    source: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bundle file is swapped between the check and the unpacking (a failure mid-way):
    nothing of it is installed, `current` still points at the release that ran before."""
    import homeflex.edge.update as update

    box.install(signed(source, "1.0.0", release, tmp_path / "a.tar"))
    bundle = signed(source, "1.1.0", release, tmp_path / "b.tar")
    verify = update.verify_bundle

    def verify_then_swap(*args: object, **kwargs: object) -> object:
        manifest = verify(*args, **kwargs)  # type: ignore[arg-type]
        rewrite(bundle, tmp_path / "swap.tar", {"files/VERSION": b"evil!!!!!!!!!!\n"})
        (tmp_path / "swap.tar").replace(bundle)
        return manifest

    monkeypatch.setattr(update, "verify_bundle", verify_then_swap)
    box.refuses(bundle, "changed after it was verified")
    assert (box.data / "current" / "VERSION").read_text() == "release notes\n"
    assert sorted(p.name for p in (box.data / "releases").iterdir()) == ["1.0.0"]


def test_a_disk_error_while_unpacking_leaves_current_alone(
    box: Box,
    release: Credentials,
    source: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    box.install(signed(source, "1.0.0", release, tmp_path / "a.tar"))
    bundle = signed(source, "1.1.0", release, tmp_path / "b.tar")
    real_fsync, calls = os.fsync, list[int]()

    def full_disk(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 2:  # the second file of the release
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)  # the disk fills while the files are written
    with pytest.raises(OSError, match="No space left"):
        box.install(bundle)
    monkeypatch.undo()
    assert installed_version(box.data) == "1.0.0"
    assert (box.data / "current" / "VERSION").read_text() == "release notes\n"
    assert sorted(p.name for p in (box.data / "releases").iterdir()) == ["1.0.0"]
    assert box.install(bundle) == "1.1.0"  # and the next attempt goes through


def test_the_replaced_release_is_kept_and_older_ones_removed(
    box: Box, release: Credentials, source: Path, tmp_path: Path
) -> None:
    for n, version in enumerate(["1.0.0", "1.0.1", "1.2.0"]):
        box.install(signed(source, version, release, tmp_path / f"{n}.tar"))
    assert sorted(p.name for p in (box.data / "releases").iterdir()) == ["1.0.1", "1.2.0"]
    assert os.readlink(box.data / "current") == "releases/1.2.0"


def test_a_revoked_release_key_is_refused(
    box: Box, release: Credentials, fleet_ca: FleetCA, source: Path, tmp_path: Path
) -> None:
    bundle = signed(source, "1.0.0", release, tmp_path / "r.tar")
    fleet_ca.revoke(release.certificate().serial_number, "key compromise")
    fleet_ca.publish_crl()
    box.refuses(bundle, "revoked")


def test_the_commands_sign_and_install(
    release: Credentials, fleet_ca: FleetCA, source: Path, tmp_path: Path
) -> None:
    """`homeflex pki sign-update` then `homeflex edge update` on a gateway configuration."""
    from click.testing import CliRunner

    from homeflex.cli import main

    creds = tmp_path / "box-creds"
    creds.mkdir()
    for name in ("ca.pem", "crl.pem"):
        (creds / name).write_bytes((fleet_ca.dir / name).read_bytes())
    config = tmp_path / "gateway.yaml"
    gateway = {
        "gateway_id": "box-0001",
        "data_dir": str(tmp_path / "gw"),
        "store": {"path": str(tmp_path / "s.db")},
        "devices": [],
        "credentials": str(creds),
    }
    config.write_text(yaml.safe_dump(gateway))
    runner = CliRunner()
    out = tmp_path / "r.tar"
    signed_run = runner.invoke(main, ["pki", "sign-update", "--signer", str(release.dir),
                                      "--version", "3.1.4", str(source), str(out)])  # fmt: skip
    assert signed_run.exit_code == 0, signed_run.output
    done = runner.invoke(main, ["edge", "update", "--config", str(config), str(out)])
    assert done.exit_code == 0, done.output
    assert "installed release 3.1.4" in done.output
    assert installed_version(tmp_path / "gw") == "3.1.4"
    again = runner.invoke(main, ["edge", "update", "--config", str(config), str(out)])
    assert again.exit_code == 1 and "not newer than the installed 3.1.4" in again.output
    events = read_events(tmp_path / "gw" / "security.log")
    assert [e.kind for e in events] == ["update-refused"]
