"""`homeflex cloud run`: the aggregator, DSO and forecaster agents (cloud/platform.py) until a
signal."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

import click

from homeflex.configfile import ConfigError


@click.command("run")
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="the platform's agents (YAML; the format is in cloud/platform.py)",
)
@click.option(
    "--open",
    "open_days",
    multiple=True,
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="open this day's round at start (repeatable), besides the daily day-ahead rounds",
)
@click.option("-v", "--verbose", is_flag=True)
def run_cmd(config_path: Path, open_days: tuple[datetime, ...], verbose: bool) -> None:
    """The aggregator, DSO and forecaster agents over XMPP with TLS, until SIGTERM or Ctrl-C."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from homeflex.cloud.platform import PlatformConfig, build_check, run
    from homeflex.configfile import load_config

    try:
        cfg = load_config(config_path, PlatformConfig)
        if not cfg.aggregators and cfg.dso is None and cfg.forecaster is None:
            raise ConfigError(
                f"{config_path}: no aggregators, no dso and no forecaster: nothing to run"
            )
        build_check(cfg)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    run(cfg, [d.date() for d in open_days])
