"""`homeflex cloud enroll`: run the enrollment service."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import click

from homeflex.cloud.enroll.accounts import AccountStoreError, open_accounts
from homeflex.cloud.enroll.registry import Registry, RegistryError
from homeflex.cloud.enroll.service import AttemptLimiter, EnrollmentService
from homeflex.pki.bundle import Credentials
from homeflex.pki.ca import CaError, FleetCA
from homeflex.security import SecurityLog


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise click.BadParameter(f"{text!r}: expected HOST:PORT, e.g. 127.0.0.1:8443")
    return host.strip("[]"), int(port)


@click.command("enroll")
@click.option(
    "--fleet",
    "fleet_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="the fleet CA's directory (its register of boxes lives there too)",
)
@click.option(
    "--creds",
    "creds_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="the service's own credentials (role service, named as boxes reach it)",
)
@click.option("--listen", required=True, help="HOST:PORT (port 0: any free port)")
@click.option("--xmpp-domain", required=True, help="boxes get the address <name>@DOMAIN")
@click.option(
    "--xmpp-accounts",
    "accounts_spec",
    required=True,
    help="the XMPP server's account store: NAME[=ARGUMENT]",
)
@click.option(
    "--security-log",
    type=click.Path(path_type=Path),
    default=None,
    help="security events (default: FLEET/security.log)",
)
@click.option(
    "--attempts-per-hour",
    type=click.IntRange(1, 1000),
    default=10,
    show_default=True,
    help="failed enrollment attempts allowed per client address",
)
@click.option("-v", "--verbose", is_flag=True)
def enroll_cmd(
    fleet_dir: Path,
    creds_dir: Path,
    listen: str,
    xmpp_domain: str,
    accounts_spec: str,
    security_log: Path | None,
    attempts_per_hour: int,
    verbose: bool,
) -> None:
    """Run the enrollment service boxes enroll and renew their certificates with."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    host, port = parse_listen(listen)
    try:
        creds = Credentials.load(creds_dir)
        fleet = FleetCA.open(fleet_dir)
        registry = Registry.open(fleet_dir)
        accounts = open_accounts(accounts_spec)
    except (FileNotFoundError, CaError, RegistryError, AccountStoreError) as exc:
        raise click.ClickException(str(exc)) from None
    service = EnrollmentService(
        fleet,
        registry,
        accounts,
        SecurityLog(security_log or fleet_dir / "security.log"),
        xmpp_domain,
        AttemptLimiter(attempts_per_hour, 3600.0),
    )

    def ready(bound_host: str, bound_port: int) -> None:
        # the first line on stdout: what scripts and tests wait for
        click.echo(f"enrollment service listening on https://{bound_host}:{bound_port}")

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await service.serve(creds, host, port, stop, ready)

    try:
        asyncio.run(run())
    except OSError as exc:  # address in use, for instance
        raise click.ClickException(f"cannot listen on {listen}: {exc}") from None
    finally:
        registry.close()
        fleet.close()
