"""`homeflex cloud events`: run the security event receiver until SIGTERM or Ctrl-C."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import click


@click.command("events")
@click.option(
    "--creds",
    "creds_dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="the receiver's credentials (a `service` certificate)",
)
@click.option(
    "--listen", default="127.0.0.1:8444", show_default=True, help="HOST:PORT (port 0: any)"
)
@click.option(
    "--db",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="SQLite file holding the events",
)
@click.option(
    "--security-log",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="the receiver's own refusals  [default: next to --db]",
)
def events_cmd(creds_dir: Path, listen: str, db: Path, security_log: Path | None) -> None:
    """Receive the security events boxes forward (mutual TLS; the sender is its certificate)."""
    from homeflex.cloud.events.receiver import EventStore, Receiver, serve
    from homeflex.pki.bundle import Credentials
    from homeflex.security import SecurityLog

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise click.BadParameter(f"{listen!r}: expected HOST:PORT", param_hint="--listen")
    try:
        creds = Credentials.load(creds_dir)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    store = EventStore(db)
    receiver = Receiver(creds, store, SecurityLog(security_log or db.with_suffix(".security.log")))

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(receiver, host, int(port), stop,
                    lambda h, p: click.echo(f"listening on https://{h}:{p}", nl=True))  # fmt: skip

    try:
        asyncio.run(run())
    finally:
        store.close()
