"""Plan and Validate over XMPP with TLS, every party its own process (tests/integration/
cycle_agent.py): four homes planned by the real planner, their aggregator and the DSO, through
the embedded server. The homes' evening peak is over the transformer limit (the limit is set
1 kW below the sum of the homes' own plans); after the cycle no PTU is over it, the DSO bought
what it asked for, the homes hold the orders that cover it, and the DSO never saw a home's data.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from homeflex.agents.messages import Prices
from homeflex.cloud.xmpp.domain import TEST_DOMAIN, new_password
from homeflex.edge.planner.planner import solve
from homeflex.pki.identity import Identity, Role
from tests.integration.cycle_agent import EVENING, home_inputs, prices
from tests.integration.test_xmpp_tls import SERVICE, Party, embedded_server, jid

AGENT = str(Path(__file__).with_name("cycle_agent.py"))
DAY = date(2026, 1, 15)
EVENING_KW = {"cyc-home-0": 3.0, "cyc-home-1": 3.5, "cyc-home-2": 4.0, "cyc-home-3": 4.5}


def planned_peak_kw() -> tuple[float, int]:
    """The homes' own plans summed: the peak (kW) and its PTU, as the homes will plan them."""
    p = prices(DAY)
    msg = Prices(round="x", day=DAY, import_eur_kwh=p.import_eur_kwh,
                 export_eur_kwh=p.export_eur_kwh, answer_by=0)  # fmt: skip
    total = [0.0] * 96
    for kw in EVENING_KW.values():
        plan = solve(home_inputs(kw)(msg, []))
        total = [a + b / 1000 for a, b in zip(total, plan.net_w, strict=True)]
    peak = max(range(96), key=lambda t: total[t])
    return total[peak], peak


def cert(party: Party) -> str:
    return str(party.creds.cert_path)


def status(party: Party) -> dict[str, Any] | None:
    path = party.creds.dir / "status.json"
    return json.loads(path.read_text()) if path.exists() else None


def cycle_done(parties: dict[str, Party]) -> bool:
    """The DSO has bought, and every home the aggregator ordered holds its order."""
    dso, agg = status(parties["dso"]), status(parties["agg"])
    if not dso or not dso["checks"] or not dso["checks"][0]["orders"] or not agg:
        return False
    ordered = {h for f in agg["flex"].values() for o in f.values() for h in o}
    if not ordered:
        return False
    return all((status(parties[h]) or {}).get("orders") for h in ordered)


def round_answers(parties: dict[str, Party]) -> list[str]:
    """The homes whose P-plans the aggregator's open round holds."""
    agg = status(parties["agg"]) or {}
    return sorted(h for plans in agg.get("open_rounds", {}).values() for h in plans)


@pytest.mark.parametrize("trouble", ["none", "aggregator-killed"])
def test_the_cycle_over_xmpp_leaves_no_ptu_over_the_limit(
    tmp_path: Path, creds: Any, trouble: str
) -> None:
    """With `aggregator-killed`, one home is offline when the round opens; once the other
    three have answered, the aggregator is killed (SIGKILL) and started again; then the late
    home comes online. The restarted aggregator resumes the round from its store and the
    cycle completes with all four."""
    peak_kw, peak_ptu = planned_peak_kw()
    assert peak_ptu in EVENING
    limit = peak_kw - 1.0
    ids = {
        "dso": Identity("cyc-dso", Role.DSO, xmpp=jid("cyc-dso")),
        "agg": Identity("cyc-agr", Role.AGGREGATOR, xmpp=jid("cyc-agr")),
        **{h: Identity(h, Role.HOME, xmpp=jid(h)) for h in EVENING_KW},
    }
    parties = {k: Party(creds(i), new_password()) for k, i in ids.items()}
    late = "cyc-home-3" if trouble == "aggregator-killed" else None
    with embedded_server(tmp_path / "xmpp", creds(SERVICE), parties) as server:
        common = ["--address", "127.0.0.1", "--port", str(server.port), "--domain", TEST_DOMAIN]

        def start(key: str, *args: str) -> subprocess.Popen[bytes]:
            party = parties[key]
            return subprocess.Popen(
                [sys.executable, AGENT, "--creds", str(party.creds.dir), *common, *args],
                stdout=subprocess.PIPE,
                stderr=(tmp_path / f"{key}.log").open("ab"),
                env={**os.environ, "XMPP_PASSWORD": party.password},
            )

        agg_cert = cert(parties["agg"])

        def start_home(h: str) -> subprocess.Popen[bytes]:
            return start(h, "--aggregator", "cyc-agr", "--peer", agg_cert,
                         "--evening-kw", str(EVENING_KW[h]), "home")  # fmt: skip

        homes = [a for h in EVENING_KW for a in ("--home", h, "--peer", cert(parties[h]))]

        def start_aggregator() -> subprocess.Popen[bytes]:
            return start("agg", *homes, "--dso", "cyc-dso", "--peer", cert(parties["dso"]),
                         "--answer-s", "60", "--start-after", "3", "aggregator")  # fmt: skip

        procs = {h: start_home(h) for h in EVENING_KW if h != late}
        procs["dso"] = start("dso", "--aggregator-of", "cyc-agr", "--peer", agg_cert,
                             "--limit-kw", str(limit), "--max-price", "0.5", "dso")  # fmt: skip
        procs["agg"] = start_aggregator()
        try:
            if late is not None:
                others = sorted(h for h in EVENING_KW if h != late)
                deadline = time.monotonic() + 60
                while round_answers(parties) != others:
                    assert time.monotonic() < deadline, round_answers(parties)
                    time.sleep(0.2)
                procs["agg"].kill()
                procs["agg"].wait()
                procs["agg"] = start_aggregator()
                procs[late] = start_home(late)
            # the cycle: prices, plans and offers, the round closes when all answered, the
            # D-prognosis, the request, the offer, the orders, the homes re-plan and ack
            deadline = time.monotonic() + 120
            while not cycle_done(parties) and time.monotonic() < deadline:
                dead = [k for k, p in procs.items() if p.poll() is not None]
                assert not dead, f"{dead} stopped: {(tmp_path / f'{dead[0]}.log').read_text()}"
                time.sleep(0.5)
            time.sleep(2.0)  # the last acknowledgements
        finally:
            results = {}
            for p in procs.values():
                p.send_signal(signal.SIGTERM)
            for key, p in procs.items():
                out, _ = p.communicate(timeout=30)
                lines = [json.loads(x) for x in out.decode().splitlines() if x.startswith("{")]
                results[key] = next((x for x in lines if x["event"] == "summary"), None)
    for key, r in results.items():
        assert r is not None, f"{key}: no summary; {(tmp_path / f'{key}.log').read_text()[-3000:]}"
    (check,) = results["dso"]["checks"]
    assert check["before_max_kw"] == pytest.approx(peak_kw, abs=1e-3)
    assert check["request_kw"] and check["safe"] is True
    assert check["after_max_kw"] <= limit + 1e-6
    # the homes hold orders for what the DSO asked, PTU by PTU
    held: dict[int, float] = {}
    for orders in results["agg"]["flex"].values():
        for per_home in orders.values():
            for profile in per_home.values():
                for t, kw in profile.items():
                    held[int(t)] = held.get(int(t), 0.0) + kw
    for t, kw in check["request_kw"].items():
        assert held.get(int(t), 0.0) >= kw - 1e-6
    kept = sum(len(results[h]["orders"]) for h in EVENING_KW)
    assert kept == sum(len(o) for f in results["agg"]["flex"].values() for o in f.values())
    # the DSO's messages: sums only, not one home named
    assert results["dso"]["received"]
    for text in results["dso"]["received"]:
        assert not any(h in text for h in EVENING_KW), text
    assert all(results[k]["failed"] == 0 for k in results)
    if late is not None:  # the late home was heard: its plan is in the D-prognosis's sum
        assert results[late]["rounds"] and check["before_max_kw"] == pytest.approx(peak_kw, 1e-3)


def test_the_platform_command_runs_the_aggregator_and_the_dso(tmp_path: Path, creds: Any) -> None:
    """`homeflex cloud run` as the aggregator and the DSO (one process, from its configuration
    file), the four homes as above: the homes end up holding orders for the kW over the limit
    at the peak."""
    peak_kw, peak_ptu = planned_peak_kw()
    ids = {
        "dso": Identity("run-dso", Role.DSO, xmpp=jid("run-dso")),
        "agg": Identity("run-agr", Role.AGGREGATOR, xmpp=jid("run-agr")),
        **{h: Identity(f"run-{h}", Role.HOME, xmpp=jid(f"run-{h}")) for h in EVENING_KW},
    }
    parties = {k: Party(creds(i), new_password()) for k, i in ids.items()}
    for key in ("agg", "dso"):
        secret = parties[key].creds.dir / "xmpp-password"
        secret.write_text(parties[key].password)
        secret.chmod(0o600)
    homes = {f"run-{h}": cert(parties[h]) for h in EVENING_KW}
    with embedded_server(tmp_path / "xmpp", creds(SERVICE), parties) as server:
        config = {
            "xmpp": {"domain": TEST_DOMAIN, "address": "127.0.0.1", "port": server.port},
            "state_dir": str(tmp_path / "state"),
            "aggregators": [{
                "credentials": str(parties["agg"].creds.dir),
                "password_file": str(parties["agg"].creds.dir / "xmpp-password"),
                "congestion_point": "trafo-1",
                "dso": {"name": "run-dso", "certificate": cert(parties["dso"])},
                "homes": homes,
                "prices": {"import_eur_kwh": 0.28, "export_eur_kwh": 0.05},
                "answer_window_s": 60,
            }],
            "dso": {
                "credentials": str(parties["dso"].creds.dir),
                "password_file": str(parties["dso"].creds.dir / "xmpp-password"),
                "max_price": 0.5,
                "points": [{"name": "trafo-1", "limit_kw": peak_kw - 1.0,
                            "aggregators": {"run-agr": cert(parties["agg"])}}],
            },
        }  # fmt: skip
        (tmp_path / "agents.yaml").write_text(json.dumps(config))
        common = ["--address", "127.0.0.1", "--port", str(server.port), "--domain", TEST_DOMAIN]
        procs = {
            h: subprocess.Popen(
                [
                    sys.executable,
                    AGENT,
                    "--creds",
                    str(parties[h].creds.dir),
                    *common,
                    "--aggregator",
                    "run-agr",
                    "--peer",
                    cert(parties["agg"]),
                    "--evening-kw",
                    str(kw),
                    "home",
                ],
                stdout=subprocess.PIPE,
                stderr=(tmp_path / f"{h}.log").open("wb"),
                env={**os.environ, "XMPP_PASSWORD": parties[h].password},
            )
            for h, kw in EVENING_KW.items()
        }
        time.sleep(3.0)  # the homes are online
        procs["platform"] = subprocess.Popen(
            [sys.executable, "-m", "homeflex.cli", "cloud", "run", "--config",
             str(tmp_path / "agents.yaml"), "--open", DAY.isoformat()],
            stdout=subprocess.PIPE, stderr=(tmp_path / "platform.log").open("wb"),
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                held = sum((status(parties[h]) or {}).get("ordered_kw", {}).get(str(peak_ptu), 0.0)
                           for h in EVENING_KW)  # fmt: skip
                if held >= 1.0 - 1e-6:
                    break
                dead = [k for k, p in procs.items() if p.poll() is not None]
                assert not dead, f"{dead} stopped: {(tmp_path / f'{dead[0]}.log').read_text()}"
                time.sleep(0.5)
        finally:
            for p in procs.values():
                p.send_signal(signal.SIGTERM)
            for p in procs.values():
                p.communicate(timeout=30)
    log = (tmp_path / "platform.log").read_text()
    assert held >= 1.0 - 1e-6, log[-3000:]
    assert procs["platform"].returncode == 0, log[-3000:]
    # the platform kept its state where its configuration says
    assert (tmp_path / "state" / "run-agr" / "rounds.db").exists()
    assert (tmp_path / "state" / "run-dso" / "deliveries.db").exists()
