"""`homeflex cloud market clear` on the documented example instances, and on bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from homeflex.cli import main

EXAMPLES = Path(__file__).resolve().parents[3] / "docs" / "examples"


def clear(*args: str) -> tuple[int, str]:
    out = CliRunner().invoke(main, ["cloud", "market", "clear", *args])
    return out.exit_code, out.output


def test_the_lfm_example_clears_refuses_the_bad_bid_and_pays_by_shapley() -> None:
    code, output = clear(str(EXAMPLES / "market-lfm.yaml"))
    assert code == 0, output
    out = json.loads(output)
    refused = out["result"]["refused"]
    assert [(r["bid"], r["field"]) for r in refused] == [("bad-1", "blocks.0.quantity")]
    pays = out["payments"]["payments"]
    assert sum(pays.values()) == pytest.approx(0.0, abs=1e-9)  # Shapley is budget balanced
    assert out["payments"]["ir_violations"] == {}
    # by hand: the DSO's blocks by value (2.5 @ 0.9, 7 @ 0.2, 0.75 @ 0.1, 28.1 @ 0.03) meet the
    # sellers' by cost (fsp1 10 @ 0, fsp2 4 @ 0.05, ...): 10.25 kW, the last 0.25 from fsp2;
    # 28.1 @ 0.03 is worth less than any kW left
    awards = {a["bid"]: a["quantity"] for a in out["result"]["awards"]}
    assert awards == pytest.approx({"d0-17": 10.25, "f1-17": 10.0, "f2-17": 0.25, "f3-17": 0.0})
    assert out["result"]["welfare"] == pytest.approx(2.5 * 0.9 + 7 * 0.2 + 0.75 * 0.1 - 0.0125)
    assert 0.05 <= out["result"]["prices"]["17"] <= 0.1


def test_the_method_and_rule_can_be_chosen_on_the_command_line() -> None:
    code, output = clear(
        str(EXAMPLES / "market-lfm.yaml"), "--method", "lfm-probability", "--payment", "vcg"
    )
    assert code == 0, output
    out = json.loads(output)
    assert out["result"]["method"] == "lfm-probability" and out["payments"]["rule"] == "vcg"
    code, output = clear(str(EXAMPLES / "market-lfm.yaml"), "--payment", "nonsense")
    assert code == 1 and "no payment rule 'nonsense'" in output


def test_the_dso_example_is_met_where_it_can_be_and_reports_the_shortfall() -> None:
    code, output = clear(str(EXAMPLES / "market-dso.yaml"))
    assert code == 0, output
    out = json.loads(output)
    assert out["shortfall_kw"] == {"4": pytest.approx(2.0)}
    assert [r["bid"] for r in out["refused"]] == ["agr3-a"]  # above the max price
    after = out["prognosis_after_kw"]
    assert [round(kw, 6) for kw in after] == [250, 262, 275, 280, 282, 280, 279, 266]
    # the indivisible offer is taken whole, the divisible one only as far as needed
    assert out["accepted_kw"]["agr2-a"] == {"3": 6.0, "4": 10.0, "5": 10.0}
    assert out["cost_eur"]["agr1-a"] == pytest.approx(0.10 * (2 + 8 + 1) * 0.25)


def test_a_bad_instance_file_names_the_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: dso\nlimit_kw: -5\nmax_price: 0.2\noffers: []\n")
    code, output = clear(str(bad))
    assert code == 1 and "bad.yaml:2: limit_kw" in output
    bad.write_text("kind: auction\n")
    code, output = clear(str(bad))
    assert code == 1 and "`kind` must be one of bids, dso, system" in output


def test_the_system_example_runs_seed_001s_methods_against_the_optimum() -> None:
    runs = {}
    for method in ("co-optimization", "price-response", "market-auction"):
        code, output = clear(str(EXAMPLES / "market-system.yaml"), "--method", method)
        assert code == 0, output
        runs[method] = json.loads(output)
    best, pr, auction = runs["co-optimization"], runs["price-response"], runs["market-auction"]
    assert best["status"] == "optimal" and "gap_pct" not in best
    # the dispatch balances the system every hour: generation + prosumers' injection = demand
    passive = [20, 22, 30, 38, 34, 26]
    for h, demand in enumerate(passive):
        supply = sum(g[h] for g in best["dispatch"]["generators"].values())
        supply += sum(p[h] for p in best["dispatch"]["prosumers_net"].values())
        assert supply == pytest.approx(demand, abs=1e-3)
    assert pr["status"] == "converged"
    assert pr["co_optimization_cost_eur"] == pytest.approx(best["cost_eur"])
    assert abs(pr["gap_pct"]) <= 0.05  # the agreement, on this instance
    assert pr["prices"] == pytest.approx(best["prices"], abs=2e-3)
    assert pr["iterations"] > 1 and pr["messages"] > pr["iterations"]
    # the auction clears once an hour, without iterating; it cannot beat the optimum
    assert auction["iterations"] == 1 and auction["gap_pct"] >= -0.05
    assert auction["gap_pct"] == pytest.approx(
        (auction["cost_eur"] - best["cost_eur"]) / best["cost_eur"] * 100
    )


def test_a_bad_system_names_the_field_and_an_unknown_option_the_method(tmp_path: Path) -> None:
    text = (EXAMPLES / "market-system.yaml").read_text()
    bad = tmp_path / "system.yaml"
    bad.write_text(text.replace("p_max: [0, 8, 15, 12, 4, 0]", "p_max: [0, 8, 15, 12, 4]"))
    code, output = clear(str(bad))
    assert code == 1 and "pv-park.p_max has 5 values, need 6" in output, output
    bad.write_text(text.replace("options: {}", "options: {max_iterations: 5}"))
    code, output = clear(str(bad), "--method", "market-auction")
    assert code == 2 and "options for market-auction" in output and "max_iterations" in output
    code, output = clear(str(EXAMPLES / "market-system.yaml"), "--payment", "vcg")
    assert code == 2 and "no payment rule" in output
