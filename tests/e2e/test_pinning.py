"""The e2e browser trusts a box by its pinned key, not by ignoring certificate errors: two boxes
of the same fleet, each browser opens the page of the box it pins and refuses the other's."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.async_api import Browser, Error, Playwright

from homeflex.pki.identity import Identity
from homeflex.pki.identity import Role as PkiRole
from tests.e2e.box import bare_box, spki_pin
from tests.e2e.web import chromium
from tests.pki_fixtures import CredsFactory


async def opens(browser: Browser, url: str) -> str:
    """The page's title, or the browser's refusal (its net:: error code)."""
    page = await browser.new_page()
    try:
        await page.goto(url)
        return await page.title()
    except Error as exc:
        found = re.search(r"net::ERR_\w+", exc.message)
        assert found is not None, exc.message
        return found.group()
    finally:
        await page.close()


async def test_the_browser_opens_only_the_box_whose_key_it_pins(
    pw: Playwright, creds: CredsFactory, tmp_path: Path
) -> None:
    a = creds(Identity("box-a", PkiRole.HOME))
    b = creds(Identity("box-b", PkiRole.HOME))  # the same fleet CA, another key
    assert spki_pin(a) != spki_pin(b)
    async with bare_box(tmp_path / "a", a) as box_a, bare_box(tmp_path / "b", b) as box_b:
        async with chromium(pw, [spki_pin(a)]) as browser:
            # the first boot's page (the claim) of box-a
            assert await opens(browser, box_a.url) == f"Set up · {box_a.gw.cfg.gateway_id}"
            assert await opens(browser, box_b.url) == "net::ERR_CERT_AUTHORITY_INVALID"
        async with chromium(pw, [spki_pin(b)]) as browser:
            assert await opens(browser, box_a.url) == "net::ERR_CERT_AUTHORITY_INVALID"
            assert await opens(browser, box_b.url) == f"Set up · {box_b.gw.cfg.gateway_id}"
