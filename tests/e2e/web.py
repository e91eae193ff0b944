"""The browser side of the end-to-end tests: Debian's Chromium driven by Playwright (nothing
downloaded), the box's certificate pinned rather than errors ignored, screenshots of the pages
visited, and the page's forms filled in as a person would (by their labels and buttons)."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from playwright.async_api import Browser, Page, Playwright, ViewportSize

from tests.integration.simhome import REPO

CHROMIUM = "/usr/bin/chromium"  # Debian's package (dev.sh installs it)
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}


def screenshot_dir() -> Path:
    return Path(os.environ.get("HOMEFLEX_SCREENSHOTS") or REPO / "var" / "screenshots")


@asynccontextmanager
async def chromium(pw: Playwright, pins: Sequence[str]) -> AsyncIterator[Browser]:
    """Headless Chromium that trusts, besides its own roots, exactly the certificates whose
    public key is in `pins` (base64 SHA-256 of the SubjectPublicKeyInfo, box.spki_pin): the
    boxes' certificates come from the fleet CA, which no browser knows. Any other certificate
    error is still an error."""
    browser = await pw.chromium.launch(
        executable_path=CHROMIUM,
        args=[f"--ignore-certificate-errors-spki-list={','.join(pins)}"],
        # No sandbox (Playwright then passes --no-sandbox): Chromium refuses to start as root
        # with it, and its namespace sandbox needs user namespaces that containers (where the
        # tests run as root) seldom grant. It browses only the box's page on loopback.
        chromium_sandbox=False,
    )
    try:
        yield browser
    finally:
        await browser.close()


class Shots:
    """`await shot(page, "now")` saves a full-page screenshot as NN-now.png (NN: the order of
    the test's screenshots) in the test's own folder under screenshot_dir()."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("[0-9][0-9]-*.png"):  # an earlier run's, maybe more steps
            old.unlink()
        self.dir = directory
        self.taken: list[Path] = []

    async def __call__(self, page: Page, name: str) -> Path:
        path = self.dir / f"{len(self.taken) + 1:02d}-{name}.png"
        await page.screenshot(path=path, full_page=True)
        self.taken.append(path)
        return path


async def claim(page: Page, code: str, user: str, password: str) -> None:
    """Fill in and send the first-boot form (the claim page)."""
    await page.get_by_label("Setup code").fill(code)
    await page.get_by_label("Your name").fill(user)
    await page.get_by_label(re.compile(r"^Password \(")).fill(password)
    await page.get_by_label("Password again").fill(password)
    await page.get_by_role("button", name="Set the password").click()


async def login(page: Page, user: str, password: str) -> None:
    """Fill in and send the login form."""
    await page.get_by_label("Name", exact=True).fill(user)
    await page.get_by_label("Password", exact=True).fill(password)
    await page.get_by_role("button", name="Log in", exact=True).click()


async def logout(page: Page, user: str) -> None:
    """The header's button, which names who is logged in."""
    await page.get_by_role("button", name=f"Log out {user}", exact=True).click()
