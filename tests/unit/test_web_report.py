"""The installer's report: the setup code it prints claims the box (the same code on every run
until then), the fingerprint is the SHA-256 of the certificate's DER bytes, and once the box is
claimed no code is shown."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import yaml
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from homeflex.cli import main
from homeflex.edge.config import GatewayConfig
from homeflex.edge.web.accounts import Accounts
from homeflex.edge.web.report import installer_report
from homeflex.pki.identity import Identity, Role
from homeflex.security import SecurityLog
from tests.pki_fixtures import CredsFactory, creds, fleet_ca  # noqa: F401


def test_the_report_gives_a_code_that_claims_the_box_and_the_certificates_fingerprint(
    tmp_path: Path,
    creds: CredsFactory,  # noqa: F811
) -> None:
    box = creds(Identity("box-42", Role.HOME))
    raw = {"gateway_id": "box-42", "data_dir": str(tmp_path / "gw"),
           "store": {"path": str(tmp_path / "store.db")}, "credentials": str(box.dir),
           "web": {"listen": "192.168.1.20", "port": 8443}, "devices": []}  # fmt: skip
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(
        main, ["edge", "report", "--config", str(tmp_path / "gateway.yaml")]
    )
    assert result.exit_code == 0, result.output
    text = result.output
    assert "web page:     https://192.168.1.20:8443/" in text
    der = x509.load_pem_x509_certificate(box.cert_path.read_bytes()).public_bytes(Encoding.DER)
    digest = hashlib.sha256(der).hexdigest().upper()
    assert f"SHA-256:      {':'.join(digest[i : i + 2] for i in range(0, 64, 2))}" in text
    code = re.search(r"setup code:   (\S+)", text)
    assert code is not None and re.fullmatch(r"[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}", code[1])
    cfg = GatewayConfig.model_validate(raw)
    assert f"setup code:   {code[1]}" in installer_report(cfg)  # the same until claimed
    accounts = Accounts(cfg.data_dir / "web.db", SecurityLog(tmp_path / "security.log"))
    try:
        accounts.claim(code[1], "anna", "lentils-and-rice-42", "127.0.0.1")
    finally:
        accounts.close()
    assert "setup code:   none: the box is claimed already" in installer_report(cfg)
    bare = tmp_path / "bare.yaml"
    bare.write_text(yaml.safe_dump({**raw, "web": None}))
    refused = CliRunner().invoke(main, ["edge", "report", "--config", str(bare)])
    assert refused.exit_code == 1 and "has no `web:` section" in refused.output
