"""An operator's afternoon, in a real browser: Playwright driving Debian's Chromium against the
control plane served by uvicorn, with OpenBao and the Qontak simulator behind it.

The browser fixtures are in tests/browser_support.py. The dashboard screenshot is kept under
pytest's tmp dir and copied to /tmp/dashboard.png for people to look at.
"""

from __future__ import annotations

import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from mcp import Client as McpClient
from playwright.sync_api import Page, expect

from devtools.devstack import create_simulator_account
from tests import browser_support
from tests.browser_support import PASSWORD, log_in, messages
from tests.calls import with_mcp

# The fixtures these tests use, made visible to pytest in this module.
chromium = browser_support.chromium
in_browser = browser_support.in_browser

SCREENSHOT_COPY = Path("/tmp/dashboard.png")  # a fixed place to look at it

pytestmark = pytest.mark.timeout(900)  # the first run may install Chromium


def test_operator_sets_up_a_tenant_and_watches_its_tool_calls_live(
    in_browser, control_plane, simulator, openbao, transactional_db, tmp_path
):
    get_user_model().objects.create_superuser("ops", "ops@example.com", PASSWORD)
    slug = f"browser-{uuid.uuid4().hex[:6]}"
    screenshot = tmp_path / "dashboard.png"
    in_browser(
        lambda page: _operator_scenario(page, control_plane, simulator.url, slug, screenshot),
        viewport={"width": 1360, "height": 900},
    )
    shutil.copyfile(screenshot, SCREENSHOT_COPY)
    assert screenshot.stat().st_size > 10_000


def _operator_scenario(
    page: Page, control_plane: Any, simulator_url: str, slug: str, screenshot: Path
) -> None:
    base = control_plane.url
    log_in(page, base, "ops")

    # The admin index leads to the operator pages.
    expect(page.locator("#operator-module")).to_contain_text("Dashboard")

    # Create a legacy tenant; saving leads to its write-only refresh token form.
    page.goto(f"{base}/admin/controlplane/tenant/add/")
    page.fill("#id_name", "Browser Ltd")
    page.fill("#id_slug", slug)
    page.check("input[name=auth][value=qontak-oauth]")
    page.fill("#id_qontak_base_url", simulator_url)
    page.click("input[name=_save]")
    expect(messages(page)).to_contain_text(f"Added tenant {slug}")
    page.fill("#id_refresh_token", create_simulator_account(simulator_url, slug))
    page.click("input[type=submit]")
    expect(messages(page)).to_contain_text(f"Stored a validated refresh token for {slug}")
    expect(page.locator(".field-connection")).to_contain_text("Valid")

    # Set policies on the tenant page: 100 calls a minute, and no deleting contacts.
    page.locator("#rate_limits-group .add-row a").click()
    page.fill("#id_rate_limits-0-rate", "100/m")
    page.locator("#tool_policies-group .add-row a").click()
    page.fill("#id_tool_policies-0-tool", "delete_contact")
    page.select_option("#id_tool_policies-0-effect", "deny")
    page.click("input[name=_continue]")
    expect(messages(page)).to_contain_text("was changed successfully")

    # Issue a key from the tenant page; it is shown once.
    page.get_by_role("link", name="Issue an API key").click()
    page.fill("#id_label", "claude-in-browser")
    page.click("input[name=_save]")
    key = page.locator("#issued-key").inner_text().strip()
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
    expect(panel.locator(".legend .share-client_error strong")).to_have_text("1")
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
