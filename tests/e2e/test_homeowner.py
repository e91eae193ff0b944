"""The homeowner's page in a real browser (Chromium), on a box running a simulated detached home:
the first boot's claim with the setup code, the Now page's live values, logging out and in.
Each page visited is saved as a screenshot (tests/e2e/web.py: screenshot_dir)."""

from __future__ import annotations

import json
import re

from playwright.async_api import Page, expect

from tests.e2e.box import FLOWS, RunningBox
from tests.e2e.web import DESKTOP, PHONE, Shots, claim, login, logout

OWNER, PASSWORD = "anna", "lentils-and-rice-42"
LIVE_MOVES_MS = 30_000  # bound on the wait for a refresh (every 3 s) that shows other values
WATTS = re.compile(r"^-?\d+$")


async def ev_kwh(page: Page) -> float:
    """The car's energy in the Plan page's table of runs, kWh."""
    cells = page.locator('#runs tr[data-device="ev"] td:nth-child(4)')
    return sum(float(t) for t in await cells.all_inner_texts())


async def flows_shown(page: Page) -> dict[str, str]:
    """The Now page's table: flow name → the text of its cell (W)."""
    cells = page.locator("[data-flow]")
    shown: dict[str, str] = await cells.evaluate_all(
        "cells => Object.fromEntries(cells.map(c => [c.dataset.flow, c.textContent]))"
    )
    return shown


def assert_adds_up(shown: dict[str, str]) -> None:
    """Every flow of the box is shown in whole watts, and the rest of the house is the meter less
    the devices (each figure rounded on its own: within half a watt each)."""
    assert set(FLOWS) <= set(shown), shown
    assert all(WATTS.match(w) for w in shown.values()), shown
    w = {name: int(text) for name, text in shown.items()}
    devices = sum(v for name, v in w.items() if name not in ("grid", "house"))
    assert abs(w["house"] - (w["grid"] - devices)) <= 0.5 * len(w), shown


async def test_the_owner_claims_the_box_sees_its_power_and_logs_out_and_in(
    box: RunningBox, page: Page, shot: Shots, problems: list[str]
) -> None:
    h1 = page.get_by_role("heading", level=1)

    # first boot: every page leads to the claim
    await page.goto("/")
    await expect(page).to_have_url(box.url + "claim")
    await expect(h1).to_have_text("Welcome: make this box yours")
    await shot(page, "claim")
    await claim(page, box.setup_code, OWNER, PASSWORD)

    # the Now page, its values refreshed while it is open
    await expect(page).to_have_url(box.url)
    await expect(h1).to_have_text("Now")
    await page.wait_for_load_state()  # its stylesheet and script too
    assert not problems, problems
    first = await flows_shown(page)
    assert_adds_up(first)
    await shot(page, "now")
    cells = page.locator("[data-flow]")
    await expect(cells).not_to_have_text(list(first.values()), timeout=LIVE_MOVES_MS)
    later = await flows_shown(page)
    assert later.keys() == first.keys() and later != first
    assert_adds_up(later)
    await page.set_viewport_size(PHONE)
    await shot(page, "now-phone")
    await page.set_viewport_size(DESKTOP)

    # the plan, then more charge for the car: the home is planned again and the page shows it
    await page.get_by_role("link", name="Plan", exact=True).click()
    await expect(h1).to_have_text("Plan")
    await shot(page, "plan")
    charged_before = await ev_kwh(page)
    await page.get_by_role("link", name="Preferences").click()
    await expect(h1).to_have_text("Preferences")
    await shot(page, "preferences")
    field = page.get_by_label("Charge to put in the car (kWh)")
    wanted = float(await field.input_value()) + 10
    await field.fill(f"{wanted:g}")
    await page.get_by_role("button", name="Save and plan again").click()
    await expect(page).to_have_url(box.url + "plan?changed=yes")
    await expect(page.get_by_role("status")).to_contain_text("planned again with your change")
    await shot(page, "plan-changed")
    await page.set_viewport_size(PHONE)
    await shot(page, "plan-phone")
    await page.set_viewport_size(DESKTOP)
    assert box.gw.control is not None and box.gw.control.current is not None
    (ev,) = [d for d in box.gw.control.current[1].devices if d.id == "ev"]
    # what the car still needs: the new target less what it took since it was plugged in
    assert ev.energy_needed_wh is not None and wanted * 1000 - 2000 < ev.energy_needed_wh
    assert ev.energy_needed_wh <= wanted * 1000
    # 10 kWh more into the car at 90 % efficiency: about 11.1 kWh more from the grid (each row
    # rounded to 0.1 kWh, and a few seconds of charging went by)
    assert 10.5 < await ev_kwh(page) - charged_before < 11.7

    # opting out of the neighbourhood, kept on the box
    await page.get_by_role("link", name="Neighbourhood").click()
    await expect(h1).to_have_text("Neighbourhood")
    await page.get_by_label("No, not until I change this").check()
    await page.get_by_role("button", name="Save").click()
    await expect(page.get_by_label("No, not until I change this")).to_be_checked()
    assert not box.gw.preferences.neighbourhood.take_part
    kept = json.loads((box.data_dir / "preferences.json").read_text())
    assert kept["neighbourhood"]["take_part"] is False
    assert kept["devices"]["ev"]["energy_needed_wh"] == wanted * 1000
    await shot(page, "neighbourhood")
    for name, heading in (("History", "History"), ("Devices", "Devices"),
                          ("Suggestions", "Suggestions"), ("Security", "Security")):  # fmt: skip
        await page.get_by_role("link", name=name, exact=True).click()
        await expect(h1).to_have_text(heading)
        await shot(page, name.lower())
    assert not problems, problems

    # logged out, the session is gone: the page asks to log in again
    await logout(page, OWNER)
    await expect(page).to_have_url(box.url + "login")
    await expect(h1).to_have_text("Log in")
    await shot(page, "login")
    await page.goto("/")
    await expect(page).to_have_url(box.url + "login")

    await login(page, OWNER, PASSWORD)
    await expect(page).to_have_url(box.url)
    await expect(h1).to_have_text("Now")
    await shot(page, "now-again")
    await logout(page, OWNER)
    await expect(page).to_have_url(box.url + "login")
