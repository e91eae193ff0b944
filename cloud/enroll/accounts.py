"""The XMPP accounts boxes log in with: enrollment creates one per box, revocation removes it.

The account store belongs to the XMPP server (cloud/xmpp); enrollment only needs the two calls
of `XmppAccounts`. Stores are looked up by name in `ACCOUNT_STORES` so the commands can be
pointed at one with `--xmpp-accounts NAME[=ARGUMENT]`.
PENDING: no store is registered here yet; the XMPP server's store is wired in by one line."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Protocol


class XmppAccounts(Protocol):
    def add(self, jid: str, password: str) -> None:
        """Create account `jid` (a bare address) with `password`; raise if it exists."""

    def remove(self, jid: str) -> bool:
        """Delete account `jid`; whether it existed."""


# name -> factory taking the text after "=" (a database path, say; "" when none was given)
ACCOUNT_STORES: dict[str, Callable[[str], XmppAccounts]] = {}


class AccountStoreError(Exception):
    """No such account store, or it cannot be opened."""


def open_accounts(spec: str) -> XmppAccounts:
    """The store named by `spec` (`NAME` or `NAME=ARGUMENT`)."""
    name, _, argument = spec.partition("=")
    factory = ACCOUNT_STORES.get(name)
    if factory is None:
        known = ", ".join(sorted(ACCOUNT_STORES)) or "none is wired in yet"
        raise AccountStoreError(f"no XMPP account store {name!r} (known: {known})")
    return factory(argument)


def new_password() -> str:
    """An account password made at enrollment: 192 random bits, URL-safe text."""
    return secrets.token_urlsafe(24)
