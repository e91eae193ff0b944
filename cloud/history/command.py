"""`homeflex cloud history ...`: run the ingest, check integrity, report on the data path.

The data directory's layout is cloud/history/layout.py. The check reads the whole history, so
it runs as a process of its own (`check --every`), never in the ingest.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import click

from homeflex.cloud.history.layout import HistoryDir

DATA = click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="the history's data directory",
)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _time(text: str) -> float:
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected ISO 8601, e.g. 2026-06-21T00:00Z") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.timestamp()


@click.group("history")
def history() -> None:
    """The historical data service: telemetry ingest, integrity, data-path report."""


@history.command("ingest")
@DATA
@click.option(
    "--creds",
    "creds_dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="the ingest's credentials (a `service` certificate named in the broker's ACL)",
)
@click.option("--broker", required=True, help="mqtts://host:port")
@click.option(
    "--retention-every", default=3600.0, show_default=True, help="seconds between retention runs"
)
@click.option("--raw-days", default=30.0, show_default=True, help="keep raw readings this long")
@click.option("--ptu-days", default=730.0, show_default=True, help="keep PTU energies this long")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=os.cpu_count() or 1,
    show_default="the machine's cores",
    help="processes that verify and store batches side by side",
)
def ingest_cmd(
    data_dir: Path,
    creds_dir: Path,
    broker: str,
    retention_every: float,
    raw_days: float,
    ptu_days: float,
    workers: int,
) -> None:
    """Take telemetry off the broker into the history until SIGTERM or Ctrl-C."""
    from homeflex.cloud.history.ingest import Ingest
    from homeflex.cloud.history.keys import HistoryKeys
    from homeflex.cloud.history.sqlite import SqliteHistory
    from homeflex.cloud.history.workers import WorkerError, WorkerProcess
    from homeflex.mqtt_client import MqttError, MqttLink
    from homeflex.pki.bundle import Credentials
    from homeflex.security import SecurityLog

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not broker.startswith("mqtts://") or ":" not in broker[8:]:
        raise click.BadParameter(f"{broker!r}: expected mqtts://host:port", param_hint="--broker")
    host, _, port = broker[8:].rpartition(":")
    data_dir.mkdir(parents=True, exist_ok=True)
    data = HistoryDir(data_dir)
    try:
        creds = Credentials.load(creds_dir)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    # the front's own connection, for retention only; the keys exist before workers start
    store = SqliteHistory(data.db, HistoryKeys.load(data.keys).integrity)
    security = SecurityLog(data.security_log)
    pool = [WorkerProcess(data, creds_dir, f"ingest-worker-{n + 1}") for n in range(workers)]
    try:
        for worker in pool:
            worker.start()
    except WorkerError as exc:
        for worker in pool:
            worker.close()
        raise click.ClickException(str(exc)) from None
    ingest = Ingest(pool, security)
    stop = _stop_on_signals()
    last_retention = 0.0
    try:
        while not stop.is_set():
            link = MqttLink(creds, host, int(port), security=security, max_inflight=0)
            try:
                link.connect()
                ingest.attach(link)
                click.echo(f"ingesting from {broker} into {data.db} with {workers} workers")
                while not stop.is_set() and link.connected:
                    if time.monotonic() - last_retention >= retention_every:
                        store.apply_retention(time.time(), raw_days, ptu_days)
                        last_retention = time.monotonic()
                    stop.wait(1.0)
            except MqttError as exc:
                logging.getLogger(__name__).warning("ingest: %s; retrying in 5 s", exc)
            finally:
                link.close()
            stop.wait(5.0)
    finally:
        ingest.close()
        store.close()


@history.command("check")
@DATA
@click.option(
    "--every",
    type=float,
    default=None,
    help="check again every this many seconds until SIGTERM (a watcher process); "
    "each new finding is raised once",
)
def check_cmd(data_dir: Path, every: float | None) -> None:
    """Check every row against its MAC and the totals; list what was changed (exit 1), each
    finding a `history-tampered` event in integrity.log."""
    from homeflex.cloud.history.ingest import IntegrityWatch
    from homeflex.cloud.history.keys import HistoryKeys
    from homeflex.cloud.history.sqlite import SqliteHistory
    from homeflex.security import SecurityLog

    data = HistoryDir(data_dir)
    store = SqliteHistory(data.db, HistoryKeys.load(data.keys).integrity)
    watch = IntegrityWatch(store, SecurityLog(data.integrity_log), str(data.db))
    stop = _stop_on_signals()
    try:
        while True:
            found = watch.check()
            for t in found:
                click.echo(f"TAMPERED {t.table} {t.key} of {t.pid}: {t.detail}")
            if every is None or stop.wait(every):
                break
    finally:
        store.close()
    if found:
        raise SystemExit(1)
    click.echo("history intact")


@history.command("report")
@DATA
@click.option("--start", required=True, help="ISO 8601 (UTC unless an offset is given)")
@click.option("--end", required=True, help="ISO 8601, exclusive")
@click.option("--box", "boxes", multiple=True, help="pseudonymous id; default all boxes")
@click.option("--json", "as_json", is_flag=True, help="JSON for the aggregator's views")
def report_cmd(data_dir: Path, start: str, end: str, boxes: tuple[str, ...], as_json: bool) -> None:
    """Expected against received readings, gaps, outliers, latency and effectiveness."""
    from homeflex.cloud.history.keys import HistoryKeys
    from homeflex.cloud.history.report import fleet_report
    from homeflex.cloud.history.sqlite import SqliteHistory

    t0, t1 = _time(start), _time(end)
    if t1 <= t0:
        raise click.BadParameter("--end must be after --start")
    data = HistoryDir(data_dir)
    store = SqliteHistory(data.db, HistoryKeys.load(data.keys).integrity)
    try:
        report = fleet_report(store, t0, t1, list(boxes) or None)
    finally:
        store.close()
    click.echo(report.to_json() if as_json else report.render())


@history.command("who")
@DATA
@click.argument("pid")
def who_cmd(data_dir: Path, pid: str) -> None:
    """The box behind a pseudonymous id (needs read access to keys/identities.db)."""
    from homeflex.cloud.history.keys import Identities

    path = HistoryDir(data_dir).identities
    if not path.is_file():
        raise click.ClickException(f"{path}: no identity map here (or no access to it)")
    box = Identities(path).box(pid)
    if box is None:
        raise click.ClickException(f"{pid}: no box with this id in {path}")
    click.echo(box)
