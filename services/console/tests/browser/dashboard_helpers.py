"""Helpers of the dashboard's browser tests (the fixtures are in conftest.py)."""

from __future__ import annotations

import os

from playwright.async_api import Page, expect

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
# A laptop screen: what an operator keeps the dashboard open on.
VIEWPORT = {"width": 1366, "height": 768}
# Generous bounds for a busy 2-core machine; every wait is for a condition.
UI_TIMEOUT_MS = 30_000

expect.set_options(timeout=UI_TIMEOUT_MS)



async def sign_in(page: Page, url: str, key: str) -> None:
    """Open the dashboard, sign in with ``key`` and wait until the live feed is connected."""
    await page.goto(f"{url}/")
    await page.fill("#signin-key", key)
    await page.click("#signin-submit")
    await expect(page.locator("#mail-table")).to_be_visible()
    await expect(page.locator("#live-status")).to_have_attribute("data-state", "open")


def count_loads(page: Page) -> list[str]:
    """Every full page load from now on (a live update must not cause one)."""
    loads: list[str] = []
    page.on("load", lambda: loads.append(page.url))
    return loads
