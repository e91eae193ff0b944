"""The XMPP accounts boxes log in with: enrollment creates one per box, revocation removes it.

The account store belongs to the XMPP server (cloud/xmpp); enrollment only needs the two calls
of `XmppAccounts`. Stores are looked up by name in `ACCOUNT_STORES` so the commands can be
pointed at one with `--xmpp-accounts NAME[=ARGUMENT]`.
Stores: `pyjabber=CONFIG` (the embedded server's configuration file) and `prosody=CONFIG` (a
Prosody configuration file; accounts are made with prosodyctl)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from homeflex.configfile import ConfigError


class XmppAccounts(Protocol):
    def add_account(self, jid: str, password: str, *, replace: bool = False) -> None:
        """Create account `jid` (a bare address) with `password`; `replace`: set a new
        password on an existing one. Raises if it exists and `replace` is false."""

    def remove_account(self, jid: str) -> bool:
        """Delete account `jid`; whether it existed."""


def _pyjabber(config: str) -> XmppAccounts:
    from homeflex.cloud.xmpp.embedded import PyjabberAccounts, load

    cfg = load(Path(config))
    return PyjabberAccounts(cfg.database, cfg.domain)


def _prosody(config: str) -> XmppAccounts:
    from homeflex.cloud.xmpp.prosody import ProsodyAccounts

    return ProsodyAccounts(Path(config))


# name -> factory taking the text after "=" (a configuration file)
ACCOUNT_STORES: dict[str, Callable[[str], XmppAccounts]] = {
    "pyjabber": _pyjabber,
    "prosody": _prosody,
}


class AccountStoreError(Exception):
    """No such account store, or it cannot be opened."""


def open_accounts(spec: str) -> XmppAccounts:
    """The store named by `spec` (`NAME` or `NAME=ARGUMENT`)."""
    name, _, argument = spec.partition("=")
    factory = ACCOUNT_STORES.get(name)
    if factory is None:
        known = ", ".join(sorted(ACCOUNT_STORES)) or "none is wired in yet"
        raise AccountStoreError(f"no XMPP account store {name!r} (known: {known})")
    try:
        return factory(argument)
    # a missing or invalid configuration file (ConfigError), an unreadable one (OSError), or
    # Prosody's sidecar missing (ProsodyError, a RuntimeError): one clear message for the CLI
    except (ConfigError, OSError, ValueError, RuntimeError) as exc:
        raise AccountStoreError(f"--xmpp-accounts {spec}: {exc}") from None
