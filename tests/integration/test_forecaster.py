"""The forecaster in `homeflex cloud run` over XMPP with TLS and envelopes, through the embedded
server: a home gets its own site's forecast (the values the forecast functions give), the home's
aggregator, a reader of the site, gets it too, and another home asking for it is refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

from homeflex.cloud.forecast.load_profile import load_kw
from homeflex.cloud.forecast.pv import pv_kw
from homeflex.cloud.forecast.site import Site
from homeflex.cloud.xmpp.domain import TEST_DOMAIN, new_password
from homeflex.pki.identity import Identity, Role
from tests.integration.test_xmpp_tls import SERVICE, Party, embedded_server, jid

ASKER = str(Path(__file__).with_name("forecast_agent.py"))
DAY = date(2026, 6, 21)
SITE = {"latitude": 52.09, "longitude": 5.12, "kwp": 4.0, "annual_kwh": 3500,
        "utc_offset_h": 2, "readers": ["fc-agr"]}  # fmt: skip


def test_the_platform_forecaster_answers_over_xmpp(tmp_path: Path, creds: Any) -> None:
    roles = {"fc-forecaster": Role.FORECASTER, "fc-home-1": Role.HOME, "fc-home-2": Role.HOME,
             "fc-agr": Role.AGGREGATOR}  # fmt: skip
    parties = {
        n: Party(creds(Identity(n, r, xmpp=jid(n))), new_password()) for n, r in roles.items()
    }
    fc = parties["fc-forecaster"]
    (fc.creds.dir / "xmpp-password").write_text(fc.password)
    with embedded_server(tmp_path / "xmpp", creds(SERVICE), parties) as server:
        config = {
            "xmpp": {"domain": TEST_DOMAIN, "address": "127.0.0.1", "port": server.port},
            "state_dir": str(tmp_path / "state"),
            "forecaster": {"credentials": str(fc.creds.dir),
                           "password_file": str(fc.creds.dir / "xmpp-password"),
                           "sites": {"fc-home-1": SITE}},
        }  # fmt: skip
        (tmp_path / "agents.yaml").write_text(json.dumps(config))
        platform = subprocess.Popen(
            [sys.executable, "-m", "homeflex.cli", "cloud", "run", "--config",
             str(tmp_path / "agents.yaml")],
            stdout=subprocess.PIPE, stderr=(tmp_path / "platform.log").open("wb"),
        )  # fmt: skip
        try:
            assert platform.stdout is not None
            ready = platform.stdout.readline().decode()
            assert ready.startswith("READY fc-forecaster"), (tmp_path / "platform.log").read_text()
            where = ["--address", "127.0.0.1", "--port", str(server.port), "--domain", TEST_DOMAIN]
            common = ["--forecaster-cert", str(fc.creds.cert_path), *where, "--day", str(DAY)]
            asks = {
                "own": ("fc-home-1", ["--series", "pv", "--series", "load"]),
                "reader": ("fc-agr", ["--series", "load", "--site", "fc-home-1"]),
                "other": ("fc-home-2", ["--series", "load", "--site", "fc-home-1"]),
            }
            procs = {  # the three ask at once, each its own process
                k: subprocess.Popen(
                    [sys.executable, ASKER, "--creds", str(parties[who].creds.dir), *common, *more],
                    stdout=subprocess.PIPE,
                    stderr=(tmp_path / f"{k}.log").open("wb"),
                    env={**os.environ, "XMPP_PASSWORD": parties[who].password},
                )
                for k, (who, more) in asks.items()
            }
            got = {}
            for k, p in procs.items():
                out, _ = p.communicate(timeout=60)
                assert p.returncode == 0, (tmp_path / f"{k}.log").read_text()[-3000:]
                got[k] = json.loads(out.decode().strip().splitlines()[-1])
        finally:
            platform.send_signal(signal.SIGTERM)
            platform.communicate(timeout=30)
    site = Site.model_validate(SITE)
    assert got["own"]["ack"]["status"] == "ok"
    assert got["own"]["forecast"]["pv_kw"] == pv_kw(site, DAY)
    assert got["own"]["forecast"]["load_kw"] == load_kw(site, DAY)
    assert got["reader"]["forecast"] == {"day": DAY.isoformat(), "first_ptu": 0, "pv_kw": None,
                                         "load_kw": load_kw(site, DAY)}  # fmt: skip
    assert got["other"]["ack"]["status"] == "refused" and got["other"]["forecast"] is None
    assert "unknown site 'fc-home-1' for fc-home-2" in got["other"]["ack"]["detail"]
    assert platform.returncode == 0
