"""An operator's afternoon, in a real browser: Playwright driving Debian's Chromium against the
control plane served by uvicorn, with OpenBao and the Qontak simulator behind it.

Chromium comes from apt (`/usr/bin/chromium`), installed here when missing; Playwright's own
browser download is never used. The dashboard screenshot is kept under pytest's tmp dir and
copied to /tmp/dashboard.png for people to look at.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from django.contrib.auth import get_user_model
from mcp import Client as McpClient
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from devtools.devstack import create_simulator_account
from tests.calls import with_mcp

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
T = TypeVar("T")
SCREENSHOT_COPY = Path("/tmp/dashboard.png")  # a fixed place to look at it

pytestmark = pytest.mark.timeout(900)  # the first run may install Chromium


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


Scenario = Callable[[Page], T]


def _note_console_error(message: ConsoleMessage, problems: list[str]) -> None:
    """Keep console errors, except the browser's own request for /favicon.ico (none here)."""
    where = message.location.get("url", "")
    if message.type == "error" and not where.endswith("/favicon.ico"):
        problems.append(f"{message.text} ({where})")


@pytest.fixture(scope="session")
def in_browser(chromium: str) -> Iterator[Callable[[Scenario[Any]], Any]]:
    """Runs a scenario in a fresh browser tab, on a thread of its own.

    Playwright's sync API keeps an event loop running on the thread that uses it, and Django
    refuses ORM calls on such a thread; so the browser lives on its own thread and the test's
    database work stays on the main one. Console errors (CSP violations among them) fail the
    scenario.
    """
    thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="browser")
    started: dict[str, Any] = {}

    def start() -> None:
        started["playwright"] = sync_playwright().start()
        started["browser"] = started["playwright"].chromium.launch(
            executable_path=chromium, args=CHROMIUM_ARGS
        )

    def run_in_tab(scenario: Scenario[Any]) -> Any:
        browser: Browser = started["browser"]
        context = browser.new_context(viewport={"width": 1360, "height": 900})
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
    yield lambda scenario: thread.submit(run_in_tab, scenario).result()
    thread.submit(stop).result()
    thread.shutdown()


def _messages(page: Page) -> Any:
    return page.locator("ul.messagelist")


def _log_in(page: Page, base: str, username: str) -> None:
    page.goto(f"{base}/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page.locator("#site-name")).to_contain_text("Qontak MCP control plane")


def test_operator_sets_up_a_tenant_and_watches_its_tool_calls_live(
    in_browser, control_plane, simulator, openbao, transactional_db, tmp_path
):
    get_user_model().objects.create_superuser("ops", "ops@example.com", PASSWORD)
    slug = f"browser-{uuid.uuid4().hex[:6]}"
    screenshot = tmp_path / "dashboard.png"
    in_browser(
        lambda page: _operator_scenario(page, control_plane, simulator.url, slug, screenshot)
    )
    shutil.copyfile(screenshot, SCREENSHOT_COPY)
    assert screenshot.stat().st_size > 10_000


def _operator_scenario(
    page: Page, control_plane: Any, simulator_url: str, slug: str, screenshot: Path
) -> None:
    base = control_plane.url
    _log_in(page, base, "ops")

    # The admin index leads to the operator pages.
    expect(page.locator("#operator-module")).to_contain_text("Dashboard")

    # Create the tenant, with a rate limit added through the inline's "Add another" row.
    page.goto(f"{base}/admin/controlplane/tenant/add/")
    page.fill("#id_slug", slug)
    page.fill("#id_name", "Browser Ltd")
    page.fill("#id_qontak_base_url", simulator_url)
    page.locator("#rate_limits-group .add-row a").click()
    page.fill("#id_rate_limits-0-rate", "100/m")
    page.click("input[name=_continue]")
    expect(_messages(page)).to_contain_text("was added successfully")

    # Give it a Qontak refresh token through the write-only form.
    page.get_by_role("link", name="Replace refresh token").click()
    page.fill("#id_refresh_token", create_simulator_account(simulator_url, slug))
    page.click("input[type=submit]")
    expect(_messages(page)).to_contain_text(f"Stored a validated refresh token for {slug}")
    expect(page.locator(".inline-group").first).to_contain_text("Valid")

    # Set a policy on the tenant page: assistants may not delete contacts.
    page.locator("#tool_policies-group .add-row a").click()
    page.fill("#id_tool_policies-0-tool", "delete_contact")
    page.select_option("#id_tool_policies-0-effect", "deny")
    page.click("input[name=_continue]")
    expect(_messages(page)).to_contain_text("was changed successfully")

    # Issue a key; it is shown once.
    page.goto(f"{base}/admin/controlplane/apikey/add/")
    page.select_option("#id_tenant", label=slug)
    page.fill("#id_label", "claude-in-browser")
    page.click("input[name=_save]")
    shown = _messages(page).locator(".warning").inner_text()
    key = shown.split()[-1]
    assert key.startswith("qmcp_")

    # Watch the live feed for this tenant while an assistant calls two tools.
    page.goto(f"{base}/admin/live/?tenant={slug}")
    expect(page.locator("#live-feed-status")).to_have_text("Live")

    async def assistant(client: McpClient) -> list[Any]:
        calls = [("list_contacts", {"per_page": 5})] * 3 + [
            ("list_companies", {"per_page": 5}),
            ("get_contact", {"id": 0}),  # invalid input: an error outcome
            ("delete_contact", {"id": 1}),  # denied by the policy set above
        ]
        return [await client.call_tool(tool, arguments) for tool, arguments in calls]

    with ThreadPoolExecutor(max_workers=1) as pool:  # Playwright's loop runs on this thread
        results = pool.submit(with_mcp, control_plane.mcp_url, key, "2026-07-28", assistant).result(
            timeout=120
        )
    assert [result.is_error for result in results] == [False] * 4 + [True] * 2

    ok_row = page.locator("#live-feed-rows tr.live-row", has_text="list_companies")
    expect(ok_row).to_contain_text(slug)
    expect(ok_row.locator(".outcome")).to_have_text("ok")
    denied_row = page.locator("#live-feed-rows tr.live-row", has_text="delete_contact")
    expect(denied_row.locator(".outcome")).to_have_text("denied")
    expect(page.locator("#live-feed-rows tr.live-row")).to_have_count(6)
    page.screenshot(path=str(screenshot.with_name("live-feed.png")))

    # The dashboard counts both calls for the tenant and draws them.
    page.goto(f"{base}/admin/dashboard/")
    panel = page.locator(f"#tenant-{slug}")
    expect(panel).to_be_visible()
    expect(panel.locator(".kpis .kpi-value").first).to_have_text("6")
    expect(panel.locator(".toolbars tr").first).to_contain_text("list_contacts")
    expect(panel.locator(".toolbars")).to_contain_text("delete_contact")
    expect(panel.locator(".legend .share-ok strong")).to_have_text("4")
    expect(panel.locator(".legend .share-denied strong")).to_have_text("1")
    expect(panel.locator(".legend .share-error strong")).to_have_text("1")
    expect(panel).to_contain_text("Token: Valid")
    expect(panel.locator(".keys")).to_contain_text("claude-in-browser")
    assert panel.locator("svg.minutes rect.seg-denied").count() == 1

    page.screenshot(path=str(screenshot), full_page=True)


def test_a_non_staff_user_cannot_open_the_dashboard_or_the_feed(
    in_browser, control_plane, transactional_db
):
    get_user_model().objects.create_user("customer", password=PASSWORD)
    in_browser(lambda page: _customer_scenario(page, control_plane.url))


def _customer_scenario(page: Page, base: str) -> None:
    page.goto(f"{base}/admin/login/?next=/admin/dashboard/")
    page.fill("#id_username", "customer")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page.locator(".errornote")).to_be_visible()  # staff only: the login is refused
    page.goto(f"{base}/admin/live/")
    expect(page).to_have_url(f"{base}/admin/login/?next=/admin/live/")
    expect(page.locator("#live-feed")).to_have_count(0)
