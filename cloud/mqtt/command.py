"""`homeflex cloud mqtt`: run the broker until SIGTERM or Ctrl-C."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import click


@click.command("mqtt")
@click.option(
    "--creds",
    "creds_dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="the broker's credentials directory (a `service` certificate naming its host)",
)
@click.option(
    "--workdir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("var/mqtt"),
    show_default=True,
    help="generated mosquitto.conf, acl and mosquitto.log",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", type=click.IntRange(1, 65535), default=8883, show_default=True)
@click.option(
    "--service",
    "services",
    multiple=True,
    help="certificate name of a cloud service that may read every box (repeatable)",
)
@click.option(
    "--security-log",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="security event log  [default: WORKDIR/security.jsonl]",
)
@click.option(
    "--crl-check",
    type=click.FloatRange(min=0.5),
    default=10.0,
    show_default=True,
    help="seconds between checks of the revocation list file; a new one is loaded (SIGHUP)",
)
@click.option("-v", "--verbose", is_flag=True)
def mqtt(
    creds_dir: Path,
    workdir: Path,
    host: str,
    port: int,
    services: tuple[str, ...],
    security_log: Path | None,
    crl_check: float,
    verbose: bool,
) -> None:
    """Run the MQTT broker (mosquitto): TLS with client certificates of our root, the
    certificate's name as user, boxes confined to homeflex/box/<name>/, refusals recorded."""
    from homeflex.cloud.mqtt.broker import Broker, BrokerError, run_broker
    from homeflex.pki.bundle import Credentials
    from homeflex.security import SecurityLog

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        creds = Credentials.load(creds_dir)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    security = SecurityLog(security_log or workdir / "security.jsonl")
    broker = Broker(creds, workdir, host=host, port=port, services=services, security=security)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        run_broker(broker, stop, crl_check)
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from None
