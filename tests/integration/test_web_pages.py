"""The owner's pages on a real gateway planning a simulated home (firmware-sim over Modbus on
loopback, the planner, uvicorn over TLS): the plan with its reasons, a preference that plans the
home again, form errors that change nothing, the Modbus connection test, history as CSV, and
the neighbourhood choices kept on disk."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from homeflex.edge.gateway import Gateway
from homeflex.pki.identity import Identity
from homeflex.pki.identity import Role as PkiRole
from tests.integration.simhome import SimHome
from tests.integration.test_gateway_control import T0, running
from tests.pki_fixtures import CredsFactory, creds, fleet_ca  # noqa: F401

PASSWORD = "lentils-and-rice-42"


async def signed_in(gw: Gateway, ca: Path) -> httpx.AsyncClient:
    """A client of the gateway's page, claimed as the owner; its CSRF token in `headers`."""
    for _ in range(400):  # until the page listens and a plan is in force
        if gw.web_url and gw.control is not None and gw.control.plan is not None:
            break
        await asyncio.sleep(0.05)
    assert gw.web_url is not None and gw.control is not None and gw.control.plan is not None
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.check_hostname = False  # the box is reached by address; the chain is checked
    c = httpx.AsyncClient(base_url=gw.web_url, verify=ctx)
    form = await c.get("/claim")
    pre = re.search(r'name="pre" value="([^"]+)"', form.text)
    assert pre is not None
    code = (gw.cfg.data_dir / "setup-code.txt").read_text().strip()
    data = {"code": code, "user": "anna", "password": PASSWORD, "again": PASSWORD,
            "pre": pre.group(1)}  # fmt: skip
    assert (await c.post("/claim", data=data)).status_code == 303
    c.headers["X-CSRF-Token"] = (await c.get("/api/session")).json()["csrf"]
    return c


@pytest.fixture
async def home(
    tmp_path: Path,
    creds: CredsFactory,  # noqa: F811
) -> AsyncIterator[tuple[SimHome, Gateway, httpx.AsyncClient]]:
    box = creds(Identity("planned-box", PkiRole.HOME))
    async with running(tmp_path, credentials=box.dir) as (sim, gw):
        c = await signed_in(gw, box.ca_path)
        try:
            yield sim, gw, c
        finally:
            await c.aclose()


async def test_the_plan_page_gives_each_run_its_reason_and_the_cost_against_the_baseline(
    home: tuple[SimHome, Gateway, httpx.AsyncClient],
) -> None:
    _, gw, c = home
    answer = (await c.get("/api/plan")).json()
    assert gw.control is not None and gw.control.current is not None
    plan, inputs = gw.control.current
    shown = answer["plan"]
    assert shown["start"] == plan.start and shown["cost_eur"] == pytest.approx(plan.energy_cost_eur)
    # the test home's prices: 00:00-01:00 0.05 €/kWh, 01:00-02:00 0.60, then 0.25 flat
    dear = round((T0 + 3600 - plan.start) / 900)  # the plan's PTU at 01:00
    battery = [r for r in shown["runs"] if r["device"] == "battery"]
    charge = [r for r in battery if r["mean_w"] > 0 and r["first"] < dear]
    give = [r for r in battery if r["mean_w"] < 0 and dear <= r["first"] < dear + 4]
    assert charge and give, battery

    def mean_price(run: dict[str, Any]) -> str:
        prices = inputs.import_price[run["first"] : run["end"]]
        return f"{sum(prices) / len(prices):.2f}"

    # each reason names the run's own mean price, against the plan's mean (the battery may
    # move at any time of the plan)
    average = f"{sum(inputs.import_price) / inputs.ptus:.2f}"
    assert charge[0]["reason"] == (
        f"cheaper power: {mean_price(charge[0])} €/kWh against {average} on average over the "
        "hours it could run"
    )
    assert (
        give[0]["reason"]
        == f"power is dear then: {mean_price(give[0])} €/kWh against {average} on average"
    )
    assert float(mean_price(charge[0])) < 0.1 and float(mean_price(give[0])) > 0.4
    page = await c.get("/plan")
    assert page.status_code == 200 and charge[0]["reason"] in page.text
    assert f"{plan.energy_cost_eur:.2f} €" in page.text and "<svg" in page.text
    # the baseline: what the home would pay with no planner (the battery idle)
    assert shown["baseline_eur"] > shown["cost_eur"]
    assert shown["saving_eur"] == pytest.approx(shown["baseline_eur"] - shown["cost_eur"])


async def test_a_new_battery_reserve_plans_the_home_again_and_a_bad_one_changes_nothing(
    home: tuple[SimHome, Gateway, httpx.AsyncClient],
) -> None:
    _, gw, c = home
    assert gw.control is not None
    bad = await c.post("/preferences", data={"battery.soc_min_pct": "lots"})
    assert bad.status_code == 400
    assert "battery.soc_min_pct: &#39;lots&#39; is not a number" in bad.text
    assert 'value="lots"' in bad.text  # what was typed is shown again to be mended
    assert not (gw.cfg.data_dir / "preferences.json").exists()
    too_high = await c.post("/preferences", data={"battery.soc_min_pct": "101"})
    assert too_high.status_code == 400 and "101 is outside 0 to 100" in too_high.text

    saved = await c.post("/preferences", data={"battery.soc_min_pct": "60"})
    assert saved.status_code == 303 and saved.headers["location"] == "/plan?changed=yes"
    plan, inputs = gw.control.plan  # type: ignore[misc]
    assert [d.soc_min_pct for d in inputs.devices if d.kind == "battery"] == [60.0]
    soc = plan.device("battery").series["soc_pct"]
    # from 50 %, with a 60 % reserve the battery charges and never gives below it
    assert min(soc[1:]) >= 60.0 - 1e-6
    kept = json.loads((gw.cfg.data_dir / "preferences.json").read_text())
    assert kept["devices"] == {"battery": {"soc_min_pct": 60.0}}
    assert (gw.cfg.data_dir / "preferences.json").stat().st_mode & 0o777 == 0o600
    shown = await c.get("/preferences")
    assert (
        'name="battery.soc_min_pct" type="number" min="0" max="100" step="1" required value="60"'
        in shown.text
    )


async def test_the_connection_test_says_what_is_wrong_and_a_device_that_answers_is_added(
    home: tuple[SimHome, Gateway, httpx.AsyncClient],
) -> None:
    sim, gw, c = home
    meter = sim.endpoints["devices"]["meter"]
    form = {"id": "meter2", "template": "meter-3ph", "host": meter["host"],
            "port": str(meter["port"]), "unit": str(meter["unit"])}  # fmt: skip
    ok = await c.post("/devices/modbus", data=form)
    assert ok.status_code == 200
    assert f"{meter['host']}:{meter['port']} unit {meter['unit']} answers as a meter-3ph" in ok.text
    closed = await c.post("/devices/modbus", data={**form, "port": "1"})
    assert closed.status_code == 400
    assert "The connection test failed: 127.0.0.1:1: cannot connect" in closed.text
    wrong = await c.post("/devices/modbus", data={**form, "template": "no-such"})
    assert wrong.status_code == 400 and "template: no template &#39;no-such&#39;" in wrong.text
    taken = await c.post("/devices/modbus", data={**form, "id": "meter", "add": "yes"})
    assert taken.status_code == 400 and "already a device called &#39;meter&#39;" in taken.text

    added = await c.post("/devices/modbus", data={**form, "add": "yes"})
    assert added.status_code == 200 and "meter2 added" in added.text
    rows = json.loads((gw.cfg.data_dir / "devices-added.json").read_text())
    assert [(r["id"], r["port"]) for r in rows] == [("meter2", meter["port"])]
    for _ in range(200):  # its first poll
        states = {d["id"]: d["state"] for d in (await c.get("/api/devices")).json()}
        if states.get("meter2") == "ok":
            break
        await asyncio.sleep(0.05)
    assert states["meter2"] == "ok"


async def test_the_history_comes_as_csv_and_the_neighbourhood_choices_are_kept(
    home: tuple[SimHome, Gateway, httpx.AsyncClient],
) -> None:
    _, gw, c = home
    csv = await c.get("/history.csv", params={"period": "day", "count": 2})
    assert csv.headers["content-type"].startswith("text/csv")
    lines = csv.text.splitlines()
    assert lines[0].startswith("day_start,label,imported_kwh") and len(lines) == 3
    assert lines[2].startswith("2026-06-01,2026-06-01,")  # the simulated day, local time
    # each PTU's prices are kept as it begins (the test home's file: 0.05/0.00 €/kWh in the
    # first hour, 0.60/0.50 in the second, then the flat 0.25/0.02)
    assert gw.store is not None
    recorded = await gw._db(gw.store.prices, T0, T0 + 86400)
    assert recorded, "no PTU's prices recorded"
    for ms, pair in recorded.items():
        hour = (ms / 1000 - T0) // 3600
        assert pair == ((0.05, 0.0) if hour == 0 else (0.60, 0.50) if hour == 1 else (0.25, 0.02))
    bad = await c.get("/api/history", params={"period": "year"})
    assert bad.status_code == 422 and "period" in bad.json()["detail"]

    out = await c.post("/neighbourhood", data={"take_part": "not-today", "share_plan": "yes"})
    assert out.status_code == 303
    kept = json.loads((gw.cfg.data_dir / "preferences.json").read_text())["neighbourhood"]
    assert kept == {"take_part": True, "skip_days": ["2026-06-01"], "share_plan": True,
                    "share_telemetry": False}  # fmt: skip
    assert gw.preferences.neighbourhood.takes_part(gw.preferences.neighbourhood.skip_days[0]) == (
        "the owner does not take part on 2026-06-01"
    )
    page = await c.get("/neighbourhood")
    assert 'value="not-today" checked' in page.text
    wrong = await c.post("/neighbourhood", data={"take_part": "sometimes"})
    assert wrong.status_code == 400 and "take_part: &#39;sometimes&#39; is not one of" in wrong.text
    for path in ("/", "/history", "/devices", "/suggestions", "/security"):
        assert (await c.get(path)).status_code == 200, path
