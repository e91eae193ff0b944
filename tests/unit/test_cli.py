"""The `homeflex` command: a bad configuration is refused with file, line, field and remedy."""

from pathlib import Path

from click.testing import CliRunner

from homeflex.cli import main


def test_edge_run_refuses_a_bad_config(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(
        "gateway_id: box-1\ndata_dir: /tmp/x\nstore: {path: /tmp/x/s.db}\n"
        "devices:\n  - {protocol: modbus, id: meter, template: meter-3ph, host: h, port: 0}\n"
    )
    result = CliRunner().invoke(main, ["edge", "run", "--config", str(cfg)])
    assert result.exit_code == 1
    assert f"{cfg}:5: devices.0.port: Input should be greater than or equal to 1" in result.output
    assert "Traceback" not in result.output


def test_edge_status_without_store_says_what_to_do(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(f"gateway_id: box-1\ndata_dir: {tmp_path}\nstore: {{path: {tmp_path}/s.db}}\n")
    result = CliRunner().invoke(main, ["edge", "status", "--config", str(cfg)])
    assert result.exit_code == 1
    assert "no store file here" in result.output


REPO = Path(__file__).resolve().parents[2]


def test_edge_plan_plans_the_annex_d_example() -> None:
    import json

    result = CliRunner().invoke(
        main, ["edge", "plan", "--inputs", str(REPO / "docs/examples/plan-annex-d.yaml")]
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    washer = next(d for d in plan["devices"] if d["device"] == "washer")
    start = int(washer["series"]["start_ptu"][0])
    assert 44 <= start <= 52  # into the sunny hours, not the user's 15:00 (PTU 60)
    assert plan["requests"] == [{"id": "neighbourhood-1", "met": True, "reason": ""}]
    assert len(plan["net_w"]) == 96


def test_edge_plan_schema_is_json_schema() -> None:
    import json

    result = CliRunner().invoke(main, ["edge", "plan", "--schema"])
    schema = json.loads(result.output)
    assert schema["title"] == "PlanInputs"
    assert {"start", "import_price", "export_price", "base_load_w"} <= set(schema["required"])
