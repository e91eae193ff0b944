"""Acceptance: a simulated day, firmware-sim and the gateway as two real processes (Modbus TCP and
the simulated Zigbee radio on loopback); the store's per-PTU import and export energies equal the
simulated meter's counters within 0.1 %."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from homeflex.demo import compare_meter, run_single_home
from homeflex.edge.devices.capabilities import Quantity
from homeflex.edge.store import Store

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_a_simulated_day_matches_the_meter(tmp_path: Path) -> None:
    summary = run_single_home(
        REPO / "firmware-sim" / "homes" / "detached.yaml", speed=1440, hours=24, workdir=tmp_path
    )
    cmp = compare_meter(tmp_path / "gateway" / "store.db", tmp_path / "sim" / "meter_ptu.csv")
    assert cmp.ptus >= 90, summary  # a day is 96 PTUs; start-up and shut-down may cost a few
    assert cmp.max_rel_error <= 0.001, summary
    assert cmp.store_import_wh == pytest.approx(cmp.sim_import_wh, rel=0.001)
    assert cmp.store_export_wh == pytest.approx(cmp.sim_export_wh, rel=0.001)
    assert cmp.sim_export_wh > 1000  # a June day with 8 kWp exports: both directions are checked

    store = Store.open(tmp_path / "gateway" / "store.db", read_only=True)
    try:
        devices = set(store.devices())
        # Zigbee devices came through zigpy over the simulated radio
        assert {"fridge-plug", "kettle-plug", "washer", "dishwasher"} <= devices
        fridge = store.readings("fridge-plug", Quantity.IMPORT_WH, 0, 1e12)
        assert fridge[-1].value - fridge[0].value > 100  # a fridge uses ~0.2-1 kWh a day
    finally:
        store.close()

    # the status command shows every device with its last readings
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "homeflex.cli",
            "edge",
            "status",
            "--config",
            str(tmp_path / "gateway.yaml"),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    status = json.loads(out.stdout)
    by_id = {d["id"]: d for d in status["devices"]}
    assert {q["quantity"] for q in by_id["meter"]["readings"]} >= {
        "import_wh",
        "export_wh",
        "power_l1_w",
        "voltage_l3_v",
    }
    assert by_id["washer"]["readings"], by_id["washer"]
