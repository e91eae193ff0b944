"""`homeflex cloud xmpp`: run the embedded XMPP server until SIGTERM or Ctrl-C."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from homeflex.configfile import ConfigError


@click.command("xmpp")
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="server configuration (YAML: domain, listen, port, credentials, database, security_log)",
)
@click.option("-v", "--verbose", is_flag=True)
def xmpp(config_path: Path, verbose: bool) -> None:
    """The embedded XMPP server (pyjabber): STARTTLS required, accounts made at enrollment."""
    from homeflex.cloud.xmpp.embedded import run

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        run(config_path)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
