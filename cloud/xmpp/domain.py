"""The XMPP domain and addresses in it: checking a bare address belongs to the domain, random
account passwords, and that the service certificate really names the domain."""

from __future__ import annotations

import re
import secrets

from homeflex.pki.bundle import Credentials
from homeflex.pki.identity import Role

TEST_DOMAIN = "xmpp.homeflex.test"
MIN_PASSWORD_LENGTH = 20
_LOCAL = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


class AccountError(ValueError):
    """An account that cannot be created: bad address, other domain, weak password, exists."""


def new_password() -> str:
    """A password for an account made at enrollment: 192 random bits, URL-safe text."""
    return secrets.token_urlsafe(24)


def local_part(jid: str, domain: str) -> str:
    """The user part of bare address `jid` in `domain`; AccountError naming what is wrong."""
    user, sep, dom = jid.partition("@")
    if not sep or "/" in jid:
        raise AccountError(f"XMPP address {jid!r}: expected a bare address user@{domain}")
    if dom != domain:
        raise AccountError(f"XMPP address {jid!r}: not in this server's domain {domain}")
    if not _LOCAL.match(user):
        raise AccountError(
            f"XMPP address {jid!r}: the user part must be 1-63 lower-case letters, digits, "
            "'.', '_' or '-'"
        )
    return user


def check_password(jid: str, password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(
            f"password for {jid}: at least {MIN_PASSWORD_LENGTH} characters "
            "(use new_password(); accounts never get default or chosen passwords)"
        )


def check_service_certificate(creds: Credentials, domain: str) -> None:
    """Refuse to serve `domain` with a certificate that does not name it: clients would refuse
    every connection, and the operator should hear why at start-up, not from each client."""
    identity = creds.identity()
    if identity.role is not Role.SERVICE:
        raise ValueError(
            f"{creds.cert_path}: the XMPP server needs a certificate of role 'service', "
            f"this one is {identity.role.value!r}"
        )
    if domain not in identity.dns:
        names = ", ".join(identity.dns) or "no DNS names"
        raise ValueError(
            f"{creds.cert_path}: certificate names {names}, not the XMPP domain {domain}; "
            "issue one with the domain as a DNS name"
        )
