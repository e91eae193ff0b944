"""What the XMPP benches set up: a PKI, the embedded server's credentials and configuration, and
for each party its credentials (with its XMPP address) and its account; their passwords."""

from __future__ import annotations

from pathlib import Path

import yaml

from homeflex.cloud.xmpp.domain import new_password
from homeflex.cloud.xmpp.embedded import PyjabberAccounts
from homeflex.pki.bundle import issue_credentials
from homeflex.pki.ca import init_fleet, init_root
from homeflex.pki.identity import Identity, Role

DOMAIN = "xmpp.homeflex.test"


def xmpp_fleet(base: Path, parties: list[tuple[str, Role]]) -> dict[str, str]:
    """Credentials in `base/<name>`, the server's configuration in `base/xmpp.yaml`."""
    init_root(base / "root", b"bench root passphrase")
    fleet = init_fleet(base / "root", b"bench root passphrase", base / "fleet")
    issue_credentials(fleet, Identity("xmpp", Role.SERVICE, dns=(DOMAIN,)), base / "xmpp")
    accounts = PyjabberAccounts(base / "pyjabber.db", DOMAIN)
    passwords = {}
    for name, role in parties:
        issue_credentials(fleet, Identity(name, role, xmpp=f"{name}@{DOMAIN}"), base / name)
        passwords[name] = new_password()
        accounts.add_account(f"{name}@{DOMAIN}", passwords[name])
    config = {
        "domain": DOMAIN,
        "listen": "127.0.0.1",
        "port": 0,
        "credentials": str(base / "xmpp"),
        "database": str(base / "pyjabber.db"),
        "security_log": str(base / "xmpp.log"),
    }
    (base / "xmpp.yaml").write_text(yaml.safe_dump(config))
    return passwords
