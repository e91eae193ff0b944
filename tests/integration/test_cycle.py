"""Plan and Validate over XMPP with TLS, every party its own process (tests/integration/
cycle_agent.py): four homes planned by the real planner, their aggregator and the DSO, through
the embedded server. The homes' evening peak is over the transformer limit (the limit is set
1 kW below the sum of the homes' own plans); after the cycle no PTU is over it, the DSO bought
what it asked for, the homes hold the orders that cover it, and the DSO never saw a home's data.
The same holds when the aggregator is killed mid-round, when a home answers twice (counted
once), and when a home is offline for the whole round (the round closes without it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from homeflex.agents.messages import DPrognosis, FlexOffer, FlexOrder, Payload, PPlan, Prices
from homeflex.agents.rounds import RoundStore
from homeflex.cloud.aggregator.brain import AggregatorBrain
from homeflex.cloud.dso.brain import CongestionPoint, DsoBrain
from homeflex.cloud.xmpp.domain import TEST_DOMAIN, new_password
from homeflex.edge.planner.planner import solve
from homeflex.pki.identity import Identity, Role
from tests.integration.cycle_agent import EVENING, home_inputs, prices
from tests.integration.test_xmpp_tls import SERVICE, Party, embedded_server, jid

AGENT = str(Path(__file__).with_name("cycle_agent.py"))
DAY = date(2026, 1, 15)
EVENING_KW = {"cyc-home-0": 3.0, "cyc-home-1": 3.5, "cyc-home-2": 4.0, "cyc-home-3": 4.5}


def planned_peak_kw(homes: Iterable[str] = tuple(EVENING_KW)) -> tuple[float, int]:
    """The homes' own plans summed: the peak (kW) and its PTU, as the homes will plan them."""
    p = prices(DAY)
    msg = Prices(round="x", day=DAY, import_eur_kwh=p.import_eur_kwh,
                 export_eur_kwh=p.export_eur_kwh, answer_by=0)  # fmt: skip
    total = [0.0] * 96
    for kw in (EVENING_KW[h] for h in homes):
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


# --- the parties as processes over one embedded server, and what the tests read from them -----

ROUND = f"cyc-agr.{DAY.isoformat()}"  # the aggregator's day-ahead round (AggregatorBrain.round_id)
ANSWER_S = 14.0  # the offline-home test's answer window: the others answer some 4 s into it


class Neighbourhood:
    """The four homes, their aggregator and the DSO as processes of their own over one embedded
    XMPP server with TLS; each is started when the test says, and `stop` ends them all
    (SIGTERM) and collects the summary each prints (cycle_agent.py's `summary`)."""

    def __init__(self, tmp_path: Path, parties: dict[str, Party], port: int) -> None:
        self.tmp_path = tmp_path
        self.parties = parties
        self.common = ["--address", "127.0.0.1", "--port", str(port), "--domain", TEST_DOMAIN]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def _start(self, key: str, *args: str) -> None:
        party = self.parties[key]
        self.procs[key] = subprocess.Popen(
            [sys.executable, AGENT, "--creds", str(party.creds.dir), *self.common, *args],
            stdout=subprocess.PIPE,
            stderr=(self.tmp_path / f"{key}.log").open("ab"),
            env={**os.environ, "XMPP_PASSWORD": party.password},
        )

    def dso(self, limit_kw: float) -> None:
        self._start("dso", "--aggregator-of", "cyc-agr", "--peer", cert(self.parties["agg"]),
                    "--limit-kw", str(limit_kw), "--max-price", "0.5", "dso")  # fmt: skip

    def aggregator(self, answer_s: float) -> None:
        homes = [a for h in EVENING_KW for a in ("--home", h, "--peer", cert(self.parties[h]))]
        self._start("agg", *homes, "--dso", "cyc-dso", "--peer", cert(self.parties["dso"]),
                    "--answer-s", str(answer_s), "--start-after", "3", "aggregator")  # fmt: skip

    def home(self, h: str, *options: str) -> None:
        self._start(h, "--aggregator", "cyc-agr", "--peer", cert(self.parties["agg"]),
                    "--evening-kw", str(EVENING_KW[h]), *options, "home")  # fmt: skip

    def wait(self, what: str, done: Callable[[], bool], timeout_s: float = 90) -> None:
        """Until `done`; fails naming `what` when it does not come, or a process stopped."""
        deadline = time.monotonic() + timeout_s
        while not done():
            dead = [k for k, p in self.procs.items() if p.poll() is not None]
            assert not dead, f"{dead} stopped: {(self.tmp_path / f'{dead[0]}.log').read_text()}"
            assert time.monotonic() < deadline, f"no {what}; see the logs in {self.tmp_path}"
            time.sleep(0.3)

    def stop(self) -> dict[str, dict[str, Any]]:
        for p in self.procs.values():
            p.send_signal(signal.SIGTERM)
        results: dict[str, Any] = {}
        for key, p in self.procs.items():
            out, _ = p.communicate(timeout=30)
            lines = [json.loads(x) for x in out.decode().splitlines() if x.startswith("{")]
            results[key] = next((x for x in lines if x["event"] == "summary"), None)
            log = (self.tmp_path / f"{key}.log").read_text()[-3000:]
            assert results[key] is not None, f"{key}: no summary; {log}"
        return results


@contextmanager
def neighbourhood(tmp_path: Path, creds: Any) -> Iterator[Neighbourhood]:
    ids = {
        "dso": Identity("cyc-dso", Role.DSO, xmpp=jid("cyc-dso")),
        "agg": Identity("cyc-agr", Role.AGGREGATOR, xmpp=jid("cyc-agr")),
        **{h: Identity(h, Role.HOME, xmpp=jid(h)) for h in EVENING_KW},
    }
    parties = {k: Party(creds(i), new_password()) for k, i in ids.items()}
    with embedded_server(tmp_path / "xmpp", creds(SERVICE), parties) as server:
        n = Neighbourhood(tmp_path, parties, server.port)
        try:
            yield n
        finally:
            for p in n.procs.values():  # a failed test leaves nothing running
                if p.poll() is None:
                    p.kill()
                    p.wait()


def prognoses(dso: dict[str, Any]) -> list[DPrognosis]:
    """The D-prognoses among the messages the DSO received, as it received them."""
    texts = [json.loads(t) for t in dso["received"]]
    return [DPrognosis.model_validate(t) for t in texts if "congestion_point" in t and "homes" in t]


def first_plan_kw(home: dict[str, Any]) -> list[float]:
    """The P-plan a home answered the round with (revision 0), kW per PTU of the day."""
    plan = PPlan.model_validate(home["answers"][f"plan:{ROUND}:0"])
    return (
        [0.0] * plan.first_ptu
        + list(plan.net_kw)
        + [0.0] * (96 - plan.first_ptu - len(plan.net_kw))
    )


def assert_grid_safe(results: dict[str, Any], limit: float) -> None:
    """The DSO asked, bought, and after its orders no PTU is over the limit; the homes hold
    orders covering the request PTU by PTU."""
    (check,) = results["dso"]["checks"]
    assert check["request_kw"] and check["orders"] and check["safe"] is True
    assert check["after_max_kw"] <= limit + 1e-6
    held: dict[int, float] = {}
    for h in EVENING_KW:
        for t, kw in results[h]["ordered_kw"].items():
            held[int(t)] = held.get(int(t), 0.0) + kw
    for t, kw in check["request_kw"].items():
        assert held.get(int(t), 0.0) >= kw - 1e-6, (t, kw, held)


def cleared_once(
    tmp_path: Path, homes: dict[str, dict[str, Any]], limit: float
) -> tuple[DPrognosis, dict[str, list[dict[str, Any]]]]:
    """What the aggregator's and the DSO's brains make of the homes' first answers taken once
    each, in this process and without XMPP: the D-prognosis and each home's orders, as the
    cycle would have given them without a repeat."""
    agg = AggregatorBrain("cyc-agr", frozenset(EVENING_KW), "cyc-dso", "trafo-1",
                          RoundStore(tmp_path / "once.db"), prices, answer_window_s=60)  # fmt: skip
    point = CongestionPoint("trafo-1", limit, frozenset(["cyc-agr"]))
    brains: dict[str, Any] = {"cyc-agr": agg, "cyc-dso": DsoBrain("cyc-dso", [point], 0.5)}
    now = time.time()
    assert agg.open_round(DAY, now) and agg.round_id(DAY) == ROUND
    for h, home in homes.items():
        answers = home["answers"]
        plan = PPlan.model_validate(answers[f"plan:{ROUND}:0"])
        offer = FlexOffer.model_validate(answers[f"offer:{ROUND}"])
        for message in (plan, offer):
            ack, _ = agg.on_message(h, message, now)
            assert ack.status == "ok", ack.detail
    queue = [("cyc-agr", o) for o in agg.on_tick(now)]
    sent: list[tuple[str, Payload]] = []
    while queue:
        sender, o = queue.pop(0)
        sent.append((o.to, o.message))
        if o.to in brains:
            ack, out = brains[o.to].on_message(sender, o.message, now)
            assert ack.status == "ok", ack.detail
            queue += [(o.to, x) for x in out]
    (prognosis,) = [m for to, m in sent if isinstance(m, DPrognosis)]
    orders: dict[str, list[dict[str, Any]]] = {}
    for to, m in sent:
        if to in EVENING_KW and isinstance(m, FlexOrder):
            orders.setdefault(to, []).append(m.model_dump(mode="json"))
    return prognosis, orders


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
    late = "cyc-home-3" if trouble == "aggregator-killed" else None
    with neighbourhood(tmp_path, creds) as n:
        for h in EVENING_KW:
            if h != late:
                n.home(h)
        n.dso(limit)
        n.aggregator(answer_s=60)
        if late is not None:
            others = sorted(h for h in EVENING_KW if h != late)
            n.wait("the other three's answers", lambda: round_answers(n.parties) == others, 60)
            n.procs["agg"].kill()
            n.procs["agg"].wait()
            n.aggregator(answer_s=60)
            n.home(late)
        # the cycle: prices, plans and offers, the round closes when all answered, the
        # D-prognosis, the request, the offer, the orders, the homes re-plan and ack
        n.wait("the cycle", lambda: cycle_done(n.parties), 120)
        time.sleep(2.0)  # the last acknowledgements
        results = n.stop()
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


def test_a_home_answering_twice_is_counted_once(tmp_path: Path, creds: Any) -> None:
    """cyc-home-0 sends its P-plan and offer again, in new envelopes, once the first ones are
    acknowledged, while the round is still open (cyc-home-3 comes online only after that).
    The repeats are acknowledged as taken before; the D-prognosis is the sum of the four
    P-plans, each once; every home holds exactly the orders the same answers taken once give."""
    peak_kw, _ = planned_peak_kw()
    limit = peak_kw - 1.0
    twice, last = "cyc-home-0", "cyc-home-3"
    again = [f"again:plan:{ROUND}:0", f"again:offer:{ROUND}"]
    with neighbourhood(tmp_path, creds) as n:
        n.dso(limit)
        n.aggregator(answer_s=60)
        for h in EVENING_KW:
            if h != last:
                n.home(h, *(["--answer-twice"] if h == twice else []))
        n.wait(
            "repeat acknowledged",
            lambda: set(again) <= set((status(n.parties[twice]) or {}).get("acks", {})),
        )
        # the round is open (cyc-home-3 has not answered) and holds cyc-home-0's answer
        n.wait("round with the repeating home", lambda: twice in round_answers(n.parties))
        assert last not in round_answers(n.parties)
        n.home(last)
        n.wait("the cycle", lambda: cycle_done(n.parties))
        time.sleep(2.0)  # the last acknowledgements
        results = n.stop()
    acks = results[twice]["acks"]
    assert acks[again[0]] == {"status": "ok", "detail": "revision 0 was taken"}
    assert acks[again[1]] == {"status": "ok", "detail": f"offer {twice}.{ROUND} was taken"}
    assert not any(
        k.startswith("again:") for h in EVENING_KW if h != twice for k in results[h]["acks"]
    )
    # counted once: the D-prognosis is the four P-plans summed, each once, PTU by PTU
    (prognosis,) = prognoses(results["dso"])
    assert prognosis.round == ROUND and prognosis.homes == 4
    expected = [
        sum(kw) for kw in zip(*(first_plan_kw(results[h]) for h in EVENING_KW), strict=True)
    ]
    assert prognosis.net_kw == pytest.approx(expected, abs=1e-9)
    assert max(prognosis.net_kw) == pytest.approx(peak_kw, abs=1e-3)
    # the orders: what the same answers taken once give, home by home, and each one held
    once, orders = cleared_once(tmp_path, {h: results[h] for h in EVENING_KW}, limit)
    assert once.net_kw == pytest.approx(prognosis.net_kw, abs=1e-9)
    assert orders  # the DSO bought from the homes
    for h in EVENING_KW:
        got = sorted(results[h]["accepted"].values(), key=lambda o: o["id"])
        assert got == sorted(orders.get(h, []), key=lambda o: o["id"]), h
    assert_grid_safe(results, limit)
    assert all(results[k]["failed"] == 0 for k in results)


def test_a_home_offline_during_the_round_is_left_out(tmp_path: Path, creds: Any) -> None:
    """cyc-home-3 is not running while the round is open; the round closes at its deadline
    with the other three, whose flexibility meets the DSO's request. When cyc-home-3 comes
    online afterwards the server hands it the prices it held for it: they are past their
    round's deadline, and the home does not answer them; it holds no order."""
    away = "cyc-home-3"
    online = [h for h in EVENING_KW if h != away]
    peak_kw, _ = planned_peak_kw(online)
    limit = peak_kw - 1.0
    with neighbourhood(tmp_path, creds) as n:
        n.dso(limit)
        n.aggregator(answer_s=ANSWER_S)
        for h in online:
            n.home(h)
        n.wait("the cycle without the offline home", lambda: cycle_done(n.parties))
        n.home(away)
        n.wait("the held prices", lambda: bool((status(n.parties[away]) or {}).get("got")))
        time.sleep(2.0)  # all the held attempts, and the last acknowledgements
        results = n.stop()
    # the round closed without the offline home: its sum covers the three others, each once
    (prognosis,) = prognoses(results["dso"])
    assert prognosis.round == ROUND and prognosis.homes == 3
    expected = [sum(kw) for kw in zip(*(first_plan_kw(results[h]) for h in online), strict=True)]
    assert prognosis.net_kw == pytest.approx(expected, abs=1e-9)
    assert max(prognosis.net_kw) == pytest.approx(peak_kw, abs=1e-3)
    # the prices to it expired unacknowledged, and that is the aggregator's one failure
    assert results["agg"]["failed"] == 1
    assert all(results[k]["failed"] == 0 for k in results if k != "agg")
    # the DSO's request met by the three
    assert_grid_safe(results, limit)
    # the late home: the held prices reached it and were refused as too late, nothing answered
    late = results[away]
    assert late["got"] and all(g["type"] == "prices" and g["about"] == ROUND for g in late["got"])
    assert all(g["status"] == "refused" for g in late["got"]), late["got"]
    assert late["rounds"] == [] and late["answers"] == {} and late["acks"] == {}
    assert late["accepted"] == {} and late["orders"] == {} and late["ordered_kw"] == {}
