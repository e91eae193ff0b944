"""The `homeflex` command: a bad configuration is refused with file, line, field and remedy."""

from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from homeflex.cli import main
from homeflex.edge.planner.schema import SCHEMAS


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
    assert plan["requests"] == [
        {"id": "neighbourhood-1", "met": True, "reason": "", "kind": "request"}
    ]
    assert len(plan["net_w"]) == 96
    jsonschema.validate(plan, json.loads((REPO / "docs/schema/plan.schema.json").read_text()))
    # KPIs against the baseline: the washer at 15:00 heats from the grid (2 × 2 kW − PV, 30 min)
    (day,) = plan["kpis"]["plan"]
    (base,) = plan["kpis"]["baseline"]
    assert day["bill_eur"] == pytest.approx(plan["energy_cost_eur"], abs=1e-4)
    assert day["bill_eur"] < base["bill_eur"]
    assert day["peak_import_w"] == 300.0  # the washer runs on the surplus alone
    assert base["peak_import_w"] == pytest.approx(800.0)


@pytest.mark.parametrize("name", ["inputs", "plan"])
def test_edge_plan_schemas_match_the_exported_files(name: str) -> None:
    import json

    result = CliRunner().invoke(main, ["edge", "plan", "--schema", name])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.output)
    jsonschema.Draft202012Validator.check_schema(schema)
    exported = REPO / "docs/schema" / SCHEMAS[name]
    # the files other tools read are the ones the planner uses: re-export when this fails with
    # `homeflex edge plan --schema NAME > docs/schema/FILE`
    assert json.loads(exported.read_text()) == schema
    if name == "inputs":
        assert {"start", "import_price", "export_price", "base_load_w"} <= set(schema["required"])
        example = yaml.safe_load((REPO / "docs/examples/plan-annex-d.yaml").read_text())
        jsonschema.validate(json.loads(json.dumps(example, default=str)), schema)
