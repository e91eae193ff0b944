"""The one way our agents connect to XMPP: STARTTLS with the server's certificate verified
against our root and revocation list and its name checked against the XMPP domain, then a
password login; never in-band registration, never plaintext.

SPADE 4 (`spade.agent.Agent`) builds its slixmpp client inside `start()`, and with the default
`verify_security=False` turns certificate checking off; it also connects to the JID's domain
name. `TlsAgent` is SPADE's agent with one method overridden (`_async_connect`) to hand the
client our TLS context and the server's address before SPADE connects. slixmpp checks the
server's name against the JID's domain (`server_hostname=default_domain` in its STARTTLS), so a
certificate for another name, or from another CA with the same names, is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import slixmpp
from spade.agent import Agent
from spade.message import Message

from homeflex.pki.bundle import Credentials
from homeflex.pki.trust import client_context
from homeflex.security import SecurityLog


def _drop_upload_dir() -> None:
    # `import spade` imports pyjabber's server, whose HTTP upload module makes a temporary
    # directory as it is imported; agents never use it, so it must not pile up in /tmp
    from pyjabber.plugins.xep_0363 import upload_server

    with contextlib.suppress(OSError):
        os.rmdir(upload_server.TEMP_DIR)


_drop_upload_dir()


@dataclass(frozen=True)
class XmppEndpoint:
    """Where the XMPP server of `domain` accepts clients (STARTTLS on this port)."""

    domain: str
    address: str
    port: int = 5222


def xmpp_tls_context(
    creds: Credentials | None = None, *, ca: Path | None = None, crl: Path | None = None
) -> ssl.SSLContext:
    """Our client context (root + CRL, hostname checked); our certificate is presented when
    `creds` are given, which servers asking for one can verify."""
    ctx = client_context(creds, ca=ca, crl=crl)
    assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED  # never weakened
    return ctx


def secure_client(
    client: slixmpp.ClientXMPP,
    tls: ssl.SSLContext,
    endpoint: XmppEndpoint,
    security: SecurityLog | None = None,
) -> None:
    """Make a slixmpp client connect only our way: STARTTLS with `tls` to `endpoint`."""
    if client.boundjid.domain != endpoint.domain:
        raise ValueError(f"{client.boundjid.bare} is not an address in {endpoint.domain}")
    if not (tls.check_hostname and tls.verify_mode == ssl.CERT_REQUIRED):
        raise ValueError("XMPP clients verify the server: use xmpp_tls_context()")
    client.ssl_context = tls
    client.ca_certs = None  # the context carries the root; slixmpp must not add to it
    client.enable_direct_tls = False  # our servers speak STARTTLS on the client port
    client.enable_starttls = True
    client.enable_plaintext = False  # no stream without STARTTLS offered
    # slixmpp's own rule, stated here so a future default cannot loosen it: no password on a
    # stream that is not encrypted
    client["feature_mechanisms"].unencrypted_plain = False
    client["feature_mechanisms"].unencrypted_scram = False

    def untrusted(exc: Any) -> None:
        if security is not None:
            security.record(
                "xmpp-server-untrusted",
                f"{endpoint.address}:{endpoint.port}",
                f"server for {endpoint.domain} refused: {exc}",
            )
        client.disconnect(wait=0)

    # handling the event keeps slixmpp from only logging it; we record it, then hang up
    client.add_event_handler("ssl_invalid_chain", untrusted)

    connect = client.connect

    def connect_to_endpoint(host: str | None = None, port: int | None = None) -> Any:
        # SPADE asks for the JID's domain name; we go to the configured address. The name
        # checked in TLS stays the domain (slixmpp's default_domain).
        return connect(endpoint.address, endpoint.port)

    client.connect = connect_to_endpoint  # type: ignore[method-assign]


class TlsAgent(Agent):  # type: ignore[misc]
    """A SPADE agent that connects with `secure_client`. Accounts exist beforehand (created at
    enrollment), so `start()` never registers."""

    def __init__(
        self,
        jid: str,
        password: str,
        endpoint: XmppEndpoint,
        tls: ssl.SSLContext,
        security: SecurityLog | None = None,
    ) -> None:
        super().__init__(jid, password, port=endpoint.port, verify_security=True)
        self.endpoint = endpoint
        self.tls = tls
        self.security = security

    @classmethod
    def from_credentials(
        cls,
        creds: Credentials,
        password: str,
        endpoint: XmppEndpoint,
        security: SecurityLog | None = None,
    ) -> TlsAgent:
        """The agent whose address is the one in its certificate."""
        jid = creds.identity().xmpp
        if jid is None:
            raise ValueError(f"{creds.cert_path}: the certificate carries no XMPP address")
        return cls(jid, password, endpoint, xmpp_tls_context(creds), security)

    async def start(self, auto_register: bool = False) -> None:
        if auto_register:
            raise ValueError("agents never self-register; accounts are made at enrollment")
        # SPADE gives each behaviour a fresh mailbox at the end of start(), after the session
        # is up: a message arriving in between (typically one held for us while we were
        # offline) would go into a mailbox that is then thrown away. We hold such messages
        # and hand them over once the behaviours are running.
        self._held: list[Message] | None = []
        await super().start(auto_register=False)
        held, self._held = self._held, None
        for msg in held or []:
            super().dispatch(msg)

    def dispatch(self, msg: Message) -> list[asyncio.Task[None]]:
        held = getattr(self, "_held", None)
        if held is not None:
            held.append(msg)
            return []
        tasks: list[asyncio.Task[None]] = super().dispatch(msg)
        return tasks

    async def _async_connect(self) -> None:
        # the one patch point into SPADE: its client exists now and has not connected yet
        secure_client(self.client, self.tls, self.endpoint, self.security)
        await super()._async_connect()
