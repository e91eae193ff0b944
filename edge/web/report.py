"""The installer's report (`homeflex edge report`): what the owner needs to take over the box's
web page. The address, the setup code (made here on a box that has never started; the same
code the box's first start writes to `setup-code.txt`), and the SHA-256 fingerprint of the box's
certificate. Browsers do not know the fleet CA, so they warn; the owner compares the
fingerprint the browser shows with the one printed here before going on."""

from __future__ import annotations

import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from homeflex.edge.config import GatewayConfig
from homeflex.edge.web.accounts import Accounts
from homeflex.edge.web.server import SETUP_CODE_FILE, write_setup_code
from homeflex.security import SecurityLog


def fingerprint(cert_pem: Path) -> str:
    """SHA-256 of the certificate, as browsers show it: AB:CD:…"""
    cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def installer_report(cfg: GatewayConfig) -> str:
    if cfg.web is None or cfg.credentials is None:
        raise ValueError("the configuration has no `web:` section: the box serves no page")
    cert = x509.load_pem_x509_certificate((cfg.credentials / "cert.pem").read_bytes())
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    accounts = Accounts(cfg.data_dir / "web.db", SecurityLog(cfg.security_log_path))
    try:
        path = write_setup_code(accounts, cfg.data_dir)
        unclaimed = accounts.needs_claim()
    finally:
        accounts.close()
    if path is not None:
        code = path.read_text(encoding="utf-8").strip()
    elif unclaimed:  # made before, and its file removed: only the hash is left
        code = (f"lost: stop the box, remove {cfg.data_dir / 'web.db'} (nobody has claimed "
                "the box: it holds nothing else) and run this report again")  # fmt: skip
    else:
        code = "none: the box is claimed already (the owner signs in with their password)"
    host = socket.gethostname() if cfg.web.listen in ("0.0.0.0", "::") else cfg.web.listen
    lines = [
        f"Homeflex box {cfg.gateway_id}",
        f"  web page:     https://{host}:{cfg.web.port}/",
        f"  setup code:   {code}",
        f"  certificate:  {cert.subject.rfc4514_string()}, valid until "
        f"{cert.not_valid_after_utc:%Y-%m-%d}",
        f"  SHA-256:      {fingerprint(cfg.credentials / 'cert.pem')}",
        "",
        "The browser will warn that it does not know who issued the box's certificate. Go on",
        "only if the SHA-256 fingerprint it shows for the certificate is the one above.",
    ]
    if path is not None:
        lines.append(f"The setup code is also in {cfg.data_dir / SETUP_CODE_FILE} (mode 0600).")
    return "\n".join(lines)
