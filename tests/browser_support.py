"""Playwright driving Debian's Chromium, for the browser tests (tests/test_browser*.py).

Chromium comes from apt (`/usr/bin/chromium`), installed here when missing; Playwright's own
browser download is never used. Test modules import the fixtures from here.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    expect,
    sync_playwright,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "browser-operator-pw"
# The laptop the admin must fit, as issue 16 measured it.
LAPTOP = {"width": 1366, "height": 768}
T = TypeVar("T")
Scenario = Callable[[Page], T]


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium, installed through apt when missing; without it the run fails."""
    if not CHROMIUM.exists():
        if os.geteuid() != 0:
            pytest.fail(f"{CHROMIUM} is missing: run `apt-get install chromium` as root")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=800)
            if done.returncode != 0:
                pytest.fail(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
        if not CHROMIUM.exists():
            pytest.fail(f"apt-get installed chromium but {CHROMIUM} is still missing")
    return str(CHROMIUM)


def _note_console_error(message: ConsoleMessage, problems: list[str]) -> None:
    if message.type == "error":
        problems.append(f"{message.text} ({message.location.get('url', '')})")


@pytest.fixture(scope="session")
def in_browser(chromium: str) -> Iterator[Callable[..., Any]]:
    """Runs a scenario in a fresh browser tab (1366x768 unless `viewport` says otherwise), on
    a thread of its own; `prepare` may adjust the context first (e.g. grant the clipboard).

    Playwright's sync API keeps an event loop running on the thread that uses it, and Django
    refuses ORM calls on such a thread; so the browser lives on its own thread and the test's
    database work stays on the main one. Console errors (CSP violations, a missing favicon)
    fail the scenario.
    """
    thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="browser")
    started: dict[str, Any] = {}

    def start() -> None:
        started["playwright"] = sync_playwright().start()
        started["browser"] = started["playwright"].chromium.launch(
            executable_path=chromium, args=CHROMIUM_ARGS
        )

    def run_in_tab(
        scenario: Scenario[Any],
        viewport: dict[str, int],
        prepare: Callable[[BrowserContext], None] | None,
    ) -> Any:
        browser: Browser = started["browser"]
        context = browser.new_context(viewport=viewport)  # type: ignore[arg-type]
        if prepare is not None:
            prepare(context)
        page = context.new_page()
        page.set_default_timeout(20_000)
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.on("console", lambda message: _note_console_error(message, problems))
        try:
            result = scenario(page)
        finally:
            context.close()
        assert not problems, f"the browser reported errors (CSP violations?): {problems}"
        return result

    def stop() -> None:
        started["browser"].close()
        started["playwright"].stop()

    thread.submit(start).result()
    yield lambda scenario, viewport=LAPTOP, prepare=None: thread.submit(
        run_in_tab, scenario, viewport, prepare
    ).result()
    thread.submit(stop).result()
    thread.shutdown()


def messages(page: Page) -> Any:
    return page.locator("ul.messagelist")


def log_in(page: Page, base: str, username: str) -> None:
    page.goto(f"{base}/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page.locator("#site-name")).to_contain_text("Qontak MCP control plane")


def page_overflow(page: Page) -> dict[str, float]:
    """How far the page, and the admin's result table if any, reach past the window (px);
    0 when they fit without horizontal scrolling."""
    return page.evaluate(
        """() => {
          const width = window.innerWidth;
          const table = document.querySelector('#result_list');
          const box = table ? table.getBoundingClientRect() : null;
          const results = document.querySelector('.results');
          return {
            page: Math.max(0, document.documentElement.scrollWidth - width),
            table: box ? Math.max(0, box.right - width) : 0,
            // The admin wraps the table in .results, which scrolls sideways when it is too wide.
            results: results ? Math.max(0, results.scrollWidth - results.clientWidth) : 0,
          };
        }"""
    )
