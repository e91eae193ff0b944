"""Fixtures of the end-to-end tests, each per test and in its event loop: `box` (a simulated
home and its box on first boot, tests/e2e/box.py), `browser` (Chromium pinned to that box's
certificate), `page` (a tab on the box's page, its `problems` checked at the end) and `shot`
(screenshots, tests/e2e/web.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Page,
    Playwright,
    Request,
    Response,
    async_playwright,
    expect,
)

from homeflex.pki.identity import Identity
from homeflex.pki.identity import Role as PkiRole
from tests.e2e.box import RunningBox, home_with_box, spki_pin
from tests.e2e.web import DESKTOP, Shots, chromium, screenshot_dir
from tests.pki_fixtures import CredsFactory

# a page's answer may wait on an argon2 hash (64 MiB, 3 passes) on a machine busy with the rest
# of the suite: a generous bound on every expect(...), which returns as soon as it holds
expect.set_options(timeout=20_000)


@pytest.fixture
async def box(tmp_path: Path, creds: CredsFactory) -> AsyncIterator[RunningBox]:
    async with home_with_box(tmp_path, creds(Identity("e2e-box", PkiRole.HOME))) as running:
        yield running


@pytest.fixture
async def pw() -> AsyncIterator[Playwright]:
    async with async_playwright() as p:
        yield p


@pytest.fixture
async def browser(pw: Playwright, box: RunningBox) -> AsyncIterator[Browser]:
    async with chromium(pw, [spki_pin(box.creds)]) as b:
        yield b


@pytest.fixture
def problems() -> list[str]:
    """What went wrong in the page's tab (filled in by `page`): a request to anywhere but the
    box (it may be offline), an answer >= 400, a console error (e.g. something the
    Content-Security-Policy blocked). A test may check it midway; it must be empty at the end
    (a step that expects a refusal takes it out)."""
    return []


@pytest.fixture
async def page(browser: Browser, box: RunningBox, problems: list[str]) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport=DESKTOP, base_url=box.url)
    tab = await context.new_page()

    def on_request(request: Request) -> None:
        if not request.url.startswith(box.url):
            problems.append(f"a request elsewhere: {request.url}")

    def on_response(response: Response) -> None:
        if response.status >= 400 and urlsplit(response.url).path != "/favicon.ico":
            problems.append(f"{response.status} {response.url}")  # the box has no icon (yet)

    def on_console(message: ConsoleMessage) -> None:
        # a failed load is reported by on_response, with its address
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            problems.append(f"console: {message.text}")

    tab.on("request", on_request)
    tab.on("response", on_response)
    tab.on("console", on_console)
    tab.on("pageerror", lambda exc: problems.append(f"script: {exc}"))
    try:
        yield tab
    finally:
        await context.close()
    assert not problems, problems


@pytest.fixture
def shot(request: pytest.FixtureRequest) -> Shots:
    return Shots(screenshot_dir() / request.node.name)
