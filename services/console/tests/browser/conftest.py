"""Browser tests of the console's dashboard: Debian's Chromium (``/usr/bin/chromium``, installed
by the test set-up; never a downloaded browser) driven by Playwright, against the real console
process on a real nats-server (and, for the SMTP test, the whole stack).

Screenshots go to ``<pytest tmp>/screens`` and, when ``CONSOLE_SCREENSHOTS`` names a folder,
there too, so a person can look at what the tests saw."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright

# importlib mode: the tests import the helpers next to this file
sys.path.insert(0, str(Path(__file__).parent))

from dashboard_helpers import CHROMIUM, CHROMIUM_ARGS, UI_TIMEOUT_MS, VIEWPORT


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: the API tests cover PostgreSQL; the dashboard is the same either way."""
    return f"sqlite+aiosqlite:///{tmp_path}/console.db"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240 - one stat before the browser starts
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (scripts/test-deps.sh)")
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


class PageProblems:
    """Script errors and CSP violations seen by a page: a dashboard that needs an inline
    script or style, or throws, fails its test."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def watch(self, page: Page) -> None:
        page.on("pageerror", lambda exc: self.items.append(f"pageerror: {exc}"))
        page.on("console", self._console)

    def _console(self, message: Any) -> None:
        text = message.text
        if message.type == "error" and ("Content Security Policy" in text
                                        or "Uncaught" in text):
            self.items.append(f"console: {text}")


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    context.set_default_timeout(UI_TIMEOUT_MS)
    p = await context.new_page()
    problems = PageProblems()
    problems.watch(p)
    p.problems = problems  # type: ignore[attr-defined]
    try:
        yield p
    finally:
        await context.close()
    assert problems.items == [], problems.items


def copy_to(folder: str, path: Path, name: str) -> None:
    Path(folder).mkdir(parents=True, exist_ok=True)
    shutil.copy(path, Path(folder) / f"{name}.png")


@pytest.fixture
def screenshot(tmp_path_factory: pytest.TempPathFactory,
               request: pytest.FixtureRequest) -> Callable[..., Any]:
    """``await screenshot(page, "name")``: a PNG under the run's tmp dir (and
    $CONSOLE_SCREENSHOTS); returns its path."""
    base = tmp_path_factory.getbasetemp() / "screens"
    base.mkdir(exist_ok=True)
    extra = os.environ.get("CONSOLE_SCREENSHOTS")

    async def take(p: Page, name: str, *, full_page: bool = False) -> Path:
        path = base / f"{request.node.name}-{name}.png"
        await p.screenshot(path=str(path), full_page=full_page)
        if extra:
            copy_to(extra, path, name)
        return path

    return take
