"""Signed updates (seed 004 TST-SEC#01): a bundle signed by a release certificate of our CA is
installed and `current` switches to it; everything else is refused with a security event and
the installed release stays what it was."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
import yaml

from homeflex.edge.update import UpdateRefused, install_bundle, installed_version
from homeflex.pki.bundle import Credentials, issue_credentials
from homeflex.pki.ca import FleetCA
from homeflex.pki.identity import Identity, Role
from homeflex.pki.release import sign_bundle
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


def test_a_bundle_with_an_unsafe_member_is_refused(
    box: Box, release: Credentials, source: Path, tmp_path: Path
) -> None:
    good = signed(source, "1.0.0", release, tmp_path / "good.tar")
    evil = tmp_path / "evil.tar"
    with tarfile.open(good) as src, tarfile.open(evil, "w") as dst:
        for m in src.getmembers():
            dst.addfile(m, src.extractfile(m))
        link = tarfile.TarInfo("files/../../etc/passwd")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        dst.addfile(link)
    box.refuses(evil, "not a regular file")


def test_signers_that_are_not_our_release_key_are_refused(
    box: Box, creds: CredsFactory, fleet_ca: FleetCA, source: Path, tmp_path: Path
) -> None:
    home = creds(Identity("box-0001", Role.HOME))
    with pytest.raises(ValueError, match="not a release certificate"):
        sign_bundle(source, "1.0.0", home, tmp_path / "h.tar")
    # a HOME key signing the manifest by hand: a valid certificate, the wrong role
    release_like = issue_credentials(make_fleet(tmp_path / "other"), RELEASE, tmp_path / "o")
    box.refuses(signed(source, "1.0.0", release_like, tmp_path / "o.tar"), "unknown-ca")
    forged = signed(source, "1.0.0", release_like, tmp_path / "f.tar")
    with tarfile.open(forged) as t:
        sig = t.extractfile("manifest.sig").read()  # type: ignore[union-attr]
    good = signed(source, "1.0.0", creds(RELEASE), tmp_path / "g.tar")
    # our signer's certificate, another key's signature
    box.refuses(rewrite(good, tmp_path / "s.tar", {"manifest.sig": sig}), "bad signature")
    home_signed = rewrite(good, tmp_path / "hs.tar", {"signer.pem": home.cert_path.read_bytes()})
    box.refuses(home_signed, "not release")


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
