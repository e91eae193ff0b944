"""Telemetry in the neighbourhood demo: the MQTT broker (Mosquitto, run by `homeflex cloud mqtt`)
and the history ingest (`homeflex cloud history ingest`), so that every home's gateway sends its
readings and PTU energies to the history and the aggregator settles its orders from it.

Names: a home sends with its own credentials (`pki/<home>`, role home, the ones its agent uses
for XMPP). The certificate's CN is the MQTT user name the broker's ACL confines to
`homeflex/box/<home>/`, and the box name the history keys the data by, so the aggregator finds a
home's meter under the same name as its agent (cloud/aggregator/meters.py). The broker and the
ingest get service certificates of the same fleet CA: the broker's names 127.0.0.1, where the
gateways connect (TLS checks the address against the certificate).

Order: the broker first, then the ingest, then the gateways. The broker keeps nothing (no
persistence) and delivers a batch only to a subscriber that is there: a batch published before
the ingest subscribed is lost on the broker and sent again by the box only after its
`ack_timeout_s`. The history directory exists once the ingest has started; the platform's
configuration check wants it to exist.

Clocks: the gateways' clock is simulated, but their telemetry timings (`every_s`,
`ack_timeout_s`) are real seconds (edge/config.py TelemetryConfig); the history keys PTUs by the
box's simulated time, so the aggregator reads the simulated day. The platform's agents run on
the wall clock, for which the demo's day is long past: `settle_after_s` delays nothing there, and
an order is settled at the first try (every `settle_retry_s`, 3 real seconds here) after its
PTUs are final in the history, i.e. once the history holds a later meter PTU of that home.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from homeflex.cloud.mqtt.broker import free_port
from homeflex.pki.bundle import issue_credentials
from homeflex.pki.ca import FleetCA
from homeflex.pki.identity import Identity, Role

HOST = "127.0.0.1"
BROKER = "mqtt"  # the broker's certificate name: pki/mqtt
INGEST = "history-ingest"  # the ingest's: pki/history-ingest, named in the broker's ACL
# The demo's day is simulated and months before the real date: with the ingest's default
# retention (raw readings kept 30 days by the wall clock, a pass at start and then hourly) a
# demo left running for an hour would lose the day's raw readings. The demo keeps everything;
# its work directory is removed on the next run.
KEEP_DAYS = 36_500.0
EVERY_S = 0.5  # real seconds between sending rounds: at 500x a PTU lasts 1.8 s
ACK_TIMEOUT_S = 10.0  # real seconds; a lost batch is sent again within ~1.4 simulated hours
READY_BROKER_S = 15.0
READY_INGEST_S = 60.0  # worker processes import the history code first


def broker_creds(pki_dir: Path) -> Path:
    return pki_dir / BROKER


def ingest_creds(pki_dir: Path) -> Path:
    return pki_dir / INGEST


def mqtt_dir(workdir: Path) -> Path:
    """The broker's work directory: mosquitto.conf, acl, mosquitto.log, security.jsonl."""
    return workdir / "mqtt"


def history_dir(workdir: Path) -> Path:
    """The ingest's data directory (cloud/history/layout.py): the aggregator's `history:`."""
    return workdir / "history"


def issue_telemetry_credentials(fleet: FleetCA, pki_dir: Path) -> None:
    """Credentials for the broker (a server on 127.0.0.1) and the ingest, from the fleet CA;
    call while it is open, next to the homes' credentials."""
    issue_credentials(
        fleet,
        Identity(BROKER, Role.SERVICE, dns=("localhost",), ips=(HOST,)),
        broker_creds(pki_dir),
    )
    issue_credentials(fleet, Identity(INGEST, Role.SERVICE), ingest_creds(pki_dir))


def pick_port() -> int:
    """A free TCP port on 127.0.0.1 for the broker: `cloud mqtt` takes a fixed port (1-65535)
    and prints no READY line with it. Another process may take it before mosquitto binds; then
    the broker exits with "Address already in use" (`wait_broker` says so) and a new port is
    the remedy."""
    return free_port(HOST)


def broker_command(pki_dir: Path, workdir: Path, port: int) -> list[str]:
    """`homeflex cloud mqtt` on 127.0.0.1:`port`, the ingest allowed to read every box. Run as
    root or not alike: the generated configuration names the current user, so mosquitto does
    not switch to the user `mosquitto` (which could not read the 0600 key)."""
    return [
        sys.executable, "-m", "homeflex.cli", "cloud", "mqtt",
        "--creds", str(broker_creds(pki_dir)),
        "--workdir", str(mqtt_dir(workdir)),
        "--host", HOST,
        "--port", str(port),
        "--service", INGEST,
    ]  # fmt: skip


def ingest_command(pki_dir: Path, workdir: Path, port: int, workers: int = 1) -> list[str]:
    """`homeflex cloud history ingest` from the broker into `history_dir(workdir)`. One worker:
    a few homes send a few batches a second, and the machine's cores are the homes'."""
    return [
        sys.executable, "-m", "homeflex.cli", "cloud", "history", "ingest",
        "--data", str(history_dir(workdir)),
        "--creds", str(ingest_creds(pki_dir)),
        "--broker", f"mqtts://{HOST}:{port}",
        "--workers", str(workers),
        "--raw-days", str(KEEP_DAYS),
        "--ptu-days", str(KEEP_DAYS),
    ]  # fmt: skip


def _wait_for_line(
    proc: subprocess.Popen[Any], log: Path, words: tuple[str, ...], what: str, timeout_s: float
) -> None:
    """Until a line of `log` holds all `words`; RuntimeError when `proc` exits or time is up."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = log.read_text(errors="replace") if log.is_file() else ""
        if any(all(w in line for w in words) for line in text.splitlines()):
            return
        if proc.poll() is not None or time.monotonic() >= deadline:
            state = "exited" if proc.poll() is not None else f"not ready in {timeout_s:.0f} s"
            tail = "\n".join(text.splitlines()[-15:]) or "(nothing logged)"
            raise RuntimeError(f"{what} {state}; {log} ends:\n{tail}")
        time.sleep(0.1)


def wait_broker(
    proc: subprocess.Popen[Any], workdir: Path, timeout_s: float = READY_BROKER_S
) -> None:
    """Return once mosquitto listens: it logs "mosquitto version ... running" after opening its
    listener (into mqtt/mosquitto.log, fresh in a new work directory); RuntimeError with the
    log's end when the broker exits or is not up in time."""
    log = mqtt_dir(workdir) / "mosquitto.log"
    _wait_for_line(proc, log, ("mosquitto version", " running"), "the MQTT broker", timeout_s)


def wait_ingest(proc: subprocess.Popen[Any], log: Path, timeout_s: float = READY_INGEST_S) -> None:
    """Return once the ingest is subscribed: it prints "ingesting from ..." on stdout then.
    `log` is the file its stdout goes to (run.py: logs/<name>.log when started without pipe)."""
    _wait_for_line(proc, log, ("ingesting from",), "the history ingest", timeout_s)


def telemetry_section(broker_port: int) -> dict[str, Any]:
    """The gateway configuration's `telemetry:` (edge/config.py TelemetryConfig). Its timings
    are real seconds, not simulated: every half second a round (about 4 simulated minutes at
    500x), a batch unanswered for 10 s sent again."""
    return {
        "broker": f"mqtts://{HOST}:{broker_port}",
        "every_s": EVERY_S,
        "ack_timeout_s": ACK_TIMEOUT_S,
    }


def settling_section(workdir: Path, meter_device: str = "meter") -> dict[str, Any]:
    """What the aggregator's entry in the platform configuration needs to settle from the
    history (cloud/platform.py AggregatorConfig)."""
    return {
        "history": str(history_dir(workdir)),
        "meter_device": meter_device,
        "settle_after_s": 1800.0,  # the agents' (wall) clock: past already for the demo's day
        "settle_retry_s": 3.0,  # real seconds: the demo's evening is over in half a minute
        "penalty_eur_kwh": 0.1,
    }
