"""The `homeflex` command. Subcommands grow with the project: `edge` (the gateway), `demo`."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import signal
import sys
from pathlib import Path

import click

from homeflex.configfile import ConfigError, load_config


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@click.group()
@click.version_option(package_name="homeflex")
def main() -> None:
    """Homeflex: the Energy Box gateway and the aggregator platform."""


@main.group()
def edge() -> None:
    """The gateway that runs on the Energy Box."""


@main.group()
def cloud() -> None:
    """The aggregator platform's services."""


@main.group()
def pki() -> None:
    """Certificates: the CAs, issuing, revoking, enrollment codes."""


def _gateway_config(path: Path):  # type: ignore[no-untyped-def]
    from homeflex.edge.config import GatewayConfig

    try:
        return load_config(path, GatewayConfig)
    except ConfigError as exc:
        raise click.ClickException(f"configuration error\n{exc}") from None


@edge.command("run")
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    required=True,
    help="gateway configuration (YAML)",
)
@click.option("-v", "--verbose", is_flag=True)
def edge_run(config_path: Path, verbose: bool) -> None:
    """Run the gateway daemon until SIGTERM or Ctrl-C."""
    from homeflex.edge.gateway import Gateway

    cfg = _gateway_config(config_path)
    _setup_logging(verbose)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Gateway(cfg).run(stop)

    asyncio.run(run())


def _fmt_time(ts: float | None) -> str:
    if ts is None:
        return "never"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@edge.command("report")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True)
def edge_report(config_path: Path) -> None:
    """The installer's report: the web page's address, the setup code and the fingerprint of
    the box's certificate, for the owner."""
    from homeflex.edge.web.report import installer_report

    try:
        click.echo(installer_report(_gateway_config(config_path)))
    except (OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None


@edge.command("status")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def edge_status(config_path: Path, as_json: bool) -> None:
    """Show the devices, their health and their last readings, and the plan being followed."""
    from homeflex.edge.gateway import read_status
    from homeflex.edge.store import Store, StoreError

    cfg = _gateway_config(config_path)
    status = read_status(cfg.data_dir) or {"devices": []}
    health = {d["device"]: d for d in status["devices"]}
    try:
        store = Store.open(cfg.store.path, read_only=True)
    except StoreError as exc:
        raise click.ClickException(f"{exc} (has the gateway run yet?)") from None
    try:
        latest = store.latest()
    finally:
        store.close()
    by_device: dict[str, list[dict[str, object]]] = {}
    for r in latest:
        by_device.setdefault(r.device, []).append(
            {"quantity": str(r.quantity), "value": r.value, "ts": r.ts}
        )
    devices = []
    for dev in cfg.devices:
        h = health.get(dev.id, {})
        devices.append(
            {
                "id": dev.id,
                "protocol": dev.protocol,
                "template": dev.template,
                "state": h.get("state", "unknown"),
                "last_error": h.get("last_error"),
                "readings": sorted(by_device.get(dev.id, []), key=lambda x: str(x["quantity"])),
            }
        )
    plan = status.get("plan")
    telemetry = status.get("telemetry")
    if as_json:
        out = {
            "gateway_id": cfg.gateway_id,
            "devices": devices,
            "plan": plan,
            "telemetry": telemetry,
        }
        click.echo(json.dumps(out, indent=1))
        return
    click.echo(f"gateway {cfg.gateway_id}   store {cfg.store.path}")
    if plan is not None:
        start = _fmt_time(plan["start"]) if plan["start"] is not None else "-"
        cost = f"{plan['cost_eur']:.2f} €" if plan["cost_eur"] is not None else "-"
        click.echo(f"plan   {plan['status']} from {start}, energy cost {cost}")
        for problem in (plan["last_error"], plan["price_error"]):
            if problem:
                click.echo(f"    {problem}")
    if telemetry is not None:
        link = "connected" if telemetry["connected"] else "not connected"
        click.echo(
            f"uplink {link}, outbox {telemetry['outbox']} items, {telemetry['items_acked']} "
            f"acknowledged, {telemetry['thinned']} thinned"
        )
        if telemetry["last_error"]:
            click.echo(f"    {telemetry['last_error']}")
    for d in devices:
        click.echo(f"\n{d['id']:<16} {d['protocol']:<7} {d['template']:<16} {d['state']}")
        if d["last_error"] and d["state"] != "ok":
            click.echo(f"    last error: {d['last_error']}")
        for r in d["readings"]:
            click.echo(f"    {r['quantity']:<16} {r['value']:>14.2f}   {_fmt_time(r['ts'])}")


@edge.command("quality")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True)
@click.option("--device", "device_id", default="meter", show_default=True)
@click.option(
    "--hours",
    type=float,
    default=24.0,
    show_default=True,
    help="how far back from the newest reading",
)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def edge_quality(config_path: Path, device_id: str, hours: float, as_json: bool) -> None:
    """Gaps, outliers and the effectiveness of the data path of one device (seed 004 UC1-S1)."""
    from homeflex.edge.devices.capabilities import Quantity
    from homeflex.edge.quality import quality_report
    from homeflex.edge.store import Store, StoreError

    cfg = _gateway_config(config_path)
    dev = next((d for d in cfg.devices if d.id == device_id), None)
    if dev is None:
        known = ", ".join(d.id for d in cfg.devices) or "none"
        raise click.ClickException(f"no device {device_id!r} in {config_path}; devices: {known}")
    try:
        store = Store.open(cfg.store.path, read_only=True)
    except StoreError as exc:
        raise click.ClickException(f"{exc} (has the gateway run yet?)") from None
    try:
        newest = max((r.ts for r in store.latest(device_id)), default=None)
        if newest is None:
            raise click.ClickException(f"no readings of {device_id} in {cfg.store.path} yet")
        start = newest - hours * 3600
        # the window starts with the device's first reading: before that it was not installed
        firsts = [rs[0].ts for q in Quantity if (rs := store.readings(device_id, q, start, newest))]
        report = quality_report(
            store, device_id, min(firsts, default=start), newest + 1, dev.poll_s
        )
    finally:
        store.close()
    click.echo(report.to_json() if as_json else report.render())


@edge.command("plan")
@click.option(
    "--inputs",
    "inputs_path",
    type=click.Path(path_type=Path),
    help="plan inputs (YAML or JSON): prices, forecasts, devices, requests",
)
@click.option(
    "--schema",
    type=click.Choice(["inputs", "plan"]),
    help="print the JSON Schema of the inputs or of the printed plan, and exit",
)
def edge_plan(inputs_path: Path | None, schema: str | None) -> None:
    """Plan one home and print the plan, its cost, its request outcomes and its KPIs per day
    (against a baseline without planner) as JSON."""
    from homeflex.edge.planner import schema as schemas
    from homeflex.edge.planner.inputs import PlanInputs
    from homeflex.edge.planner.kpi import report
    from homeflex.edge.planner.planner import NoPlan, plan_to_json, solve

    if schema:
        click.echo(json.dumps(schemas.schema(schema), indent=1))
        return
    if inputs_path is None:
        raise click.UsageError("give --inputs FILE (or --schema inputs|plan)")
    try:
        inputs = load_config(inputs_path, PlanInputs)
    except ConfigError as exc:
        raise click.ClickException(f"plan inputs error\n{exc}") from None
    try:
        plan = solve(inputs)
    except NoPlan as exc:
        raise click.ClickException(f"no plan: {exc}") from None
    except ValueError as exc:  # a device that cannot fit its window, for instance
        raise click.ClickException(f"{inputs_path}: {exc}") from None
    click.echo(plan_to_json(plan, report(inputs, plan)))


@edge.command("update")
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    required=True,
    help="gateway configuration (YAML): data_dir, credentials (ca.pem, crl.pem), security log",
)
@click.argument("bundle", type=click.Path(path_type=Path, dir_okay=False, exists=True))
def edge_update(config_path: Path, bundle: Path) -> None:
    """Install a signed update bundle: checked against the box's root and revocation list,
    refused (and logged as a security event) unless signed by our release key and newer."""
    from homeflex.edge.update import UpdateRefused, install_bundle
    from homeflex.pki.trust import TrustStore
    from homeflex.security import SecurityLog

    cfg = _gateway_config(config_path)
    if cfg.credentials is None:
        raise click.ClickException("the gateway has no `credentials:` directory to check with")
    try:
        trust = TrustStore.load(cfg.credentials / "ca.pem", cfg.credentials / "crl.pem")
    except (OSError, ValueError) as exc:
        raise click.ClickException(
            f"{cfg.credentials}: cannot load the trust anchors: {exc}"
        ) from None
    try:
        manifest = install_bundle(bundle, cfg.data_dir, trust, SecurityLog(cfg.security_log_path))
    except UpdateRefused as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"installed release {manifest.version}; restart the gateway to run it")


@main.command("demo")
@click.option("--homes", type=click.IntRange(2, 40), default=10, show_default=True)
@click.option(
    "--speed",
    type=click.FloatRange(60, 2000),
    default=500.0,
    show_default=True,
    help="simulated seconds per real second",
)
@click.option(
    "--workdir", type=click.Path(path_type=Path), default=Path("var/demo"), show_default=True
)
def demo(homes: int, speed: float, workdir: Path) -> None:
    """The neighbourhood: homes, their gateways, the aggregator and the DSO through a simulated
    day of the USEF cycle over XMPP with TLS; writes an HTML report."""
    from homeflex.neighbourhood.run import run

    _setup_logging(False)
    logging.getLogger().setLevel(logging.WARNING)  # the progress lines are the output
    try:
        report = run(homes, speed, workdir, say=lambda line: click.echo(line))
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"open {report.resolve().as_uri()} in a browser")
    sys.exit(0)


@main.command("demo-home")
@click.option(
    "--home",
    "home",
    type=click.Path(path_type=Path),
    default=None,
    help="home description for firmware-sim (default: the detached example home)",
)
@click.option(
    "--speed",
    type=float,
    default=720.0,
    show_default=True,
    help="simulated seconds per real second",
)
@click.option("--hours", type=float, default=24.0, show_default=True, help="simulated hours")
@click.option(
    "--workdir", type=click.Path(path_type=Path), default=Path("var/demo-home"), show_default=True
)
def demo_home(home: Path | None, speed: float, hours: float, workdir: Path) -> None:
    """One simulated home and its gateway for a simulated day; prints a summary."""
    from homeflex.demo import run_single_home

    _setup_logging(False)
    try:
        summary = run_single_home(home, speed=speed, hours=hours, workdir=workdir)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(summary)
    sys.exit(0)


# Subcommands that live with what they run; each module defines one click command or group.
# (one line per module, so that changes to one never touch another's)
from homeflex.cloud.enroll.cli import enroll_cmd as _cloud_enroll  # noqa: E402
from homeflex.cloud.events.command import events_cmd as _cloud_events  # noqa: E402
from homeflex.cloud.history.command import history as _cloud_history  # noqa: E402
from homeflex.cloud.market.command import market as _cloud_market  # noqa: E402
from homeflex.cloud.mqtt.command import mqtt as _cloud_mqtt  # noqa: E402
from homeflex.cloud.run import run_cmd as _cloud_run  # noqa: E402
from homeflex.cloud.xmpp.command import xmpp as _cloud_xmpp  # noqa: E402
from homeflex.edge.enroll import enroll_cmd as _edge_enroll  # noqa: E402
from homeflex.pki.cli import add_commands as _pki_commands  # noqa: E402

cloud.add_command(_cloud_mqtt)
cloud.add_command(_cloud_xmpp)
cloud.add_command(_cloud_enroll)
cloud.add_command(_cloud_events)
cloud.add_command(_cloud_history)
cloud.add_command(_cloud_market)
cloud.add_command(_cloud_run)
edge.add_command(_edge_enroll)
_pki_commands(pki)

if __name__ == "__main__":
    main()
