"""A new operator onboards a company in the browser, without a terminal, and the admin's
screens fit a 1366x768 laptop.

Against the control plane served by uvicorn, OpenBao and the Qontak simulator's Mekari API
Gateway. Screenshots of every screen go to /tmp/issue16/ for people to look at.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from mcp import Client as McpClient
from playwright.sync_api import BrowserContext, Page, expect

from controlplane import policies, tenants
from controlplane.models import QontakCredential, ToolCall
from devtools.devstack import create_simulator_hmac_account
from tests import browser_support
from tests.browser_support import PASSWORD, log_in, messages, page_overflow
from tests.calls import GATEWAY_CRM_USER, audited_calls, with_mcp
from tests.servers import ControlPlaneServer, start_control_plane

chromium = browser_support.chromium
in_browser = browser_support.in_browser

SCREENSHOTS = Path("/tmp/issue16")

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def control_plane(
    django_db_setup: None, django_db_blocker: Any, log_dir: Path, openbao: Any, simulator: Any
) -> Iterator[ControlPlaneServer]:
    """A control plane of this module's own. The shared one keeps the content type ids it has
    seen, which the flush after an earlier test's transactional_db renews: its admin would
    then fail to log the additions these tests make."""
    with django_db_blocker.unblock():
        server = start_control_plane(log_dir, openbao.url, openbao.extra["token"], simulator.url)
    yield server
    server.process.stop()


def _shoot(page: Page, name: str, *, full_page: bool = True) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)


def _grant_clipboard(base: str) -> Any:
    def prepare(context: BrowserContext) -> None:
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)

    return prepare


def test_a_new_operator_onboards_a_company_and_its_assistant_calls_a_tool(
    in_browser, control_plane, simulator, openbao, transactional_db
):
    get_user_model().objects.create_superuser("newop", "newop@example.com", PASSWORD)
    slug = f"onboard-{uuid.uuid4().hex[:6]}"
    client_id, client_secret = create_simulator_hmac_account(simulator.url, slug)

    config = in_browser(
        lambda page: _onboarding(
            page, control_plane.url, f"{simulator.url}/qontak/crm", slug, client_id, client_secret
        ),
        prepare=_grant_clipboard(control_plane.url),
    )

    # What the operator pasted into Cursor is all the assistant needs.
    server = config["mcpServers"]["qontak"]
    key = server["headers"]["Authorization"].removeprefix("Bearer ")
    assert server["url"] == control_plane.mcp_url

    async def assistant(client: McpClient) -> Any:
        return await client.call_tool("list_contacts", {"per_page": 2})

    with ThreadPoolExecutor(max_workers=1) as pool:
        result = pool.submit(with_mcp, server["url"], key, "2026-07-28", assistant).result(
            timeout=120
        )
    assert not result.is_error, result
    tenant = tenants.tenant_get(slug=slug)
    (row,) = audited_calls(tenant, 1)
    assert (row.tool, row.outcome, row.qontak_user) == ("list_contacts", "ok", GATEWAY_CRM_USER)


def _onboarding(
    page: Page, base: str, gateway_url: str, slug: str, client_id: str, client_secret: str
) -> dict[str, Any]:
    log_in(page, base, "newop")
    page.locator(".app-controlplane .model-tenant .addlink").click()
    expect(page.locator("h1")).to_have_text("Add tenant")
    expect(page.locator("#id_auth")).to_contain_text("Mekari Developer Center")
    page.fill("#id_name", "Onboard Ltd")
    page.fill("#id_slug", slug)
    expect(page.locator("input[name=auth][value=mekari-hmac]")).to_be_checked()
    page.fill("#id_default_qontak_user", GATEWAY_CRM_USER)
    page.fill("#id_qontak_base_url", gateway_url)
    _shoot(page, "01-tenant-add")
    page.click("input[name=_save]")

    # Saving leads to the write-only credential form, which says where it comes from.
    expect(messages(page)).to_contain_text(f"Added tenant {slug}")
    expect(page.locator("#content-main")).to_contain_text("developers.mekari.com")
    page.fill("#id_client_id", client_id)
    page.fill("#id_client_secret", "not-the-secret")
    page.click("input[type=submit]")
    expect(page.locator(".errornote, .errorlist").first).to_contain_text("refused")
    expect(page.locator("#id_client_secret")).to_have_value("")  # never rendered back
    page.fill("#id_client_id", client_id)
    page.fill("#id_client_secret", client_secret)
    _shoot(page, "02-credential")
    page.click("input[type=submit]")
    expect(messages(page)).to_contain_text(f"Stored a validated HMAC credential for {slug}")
    expect(page.locator(".field-connection")).to_contain_text("Valid")
    expect(page.locator(".field-connection")).to_contain_text(client_id)

    # The tenant page tests the connection and answers in words.
    page.get_by_role("button", name="Test connection").click()
    expect(messages(page)).to_contain_text(
        f"Connection works. {slug}: Vault and the Mekari API Gateway answered"
    )
    assert "manage.py" not in page.content()
    _shoot(page, "03-tenant-page")

    # The first key, from the tenant page, shown once with what to paste.
    page.get_by_role("link", name="Issue an API key").click()
    expect(page.locator("#id_tenant")).to_have_value(page.url.rsplit("=", 1)[1])
    expect(page.locator(".field-expires_at")).to_contain_text("Expires at (UTC)")
    page.fill("#id_label", "Cursor, sales team")
    _shoot(page, "04-key-add")
    page.click("input[name=_save]")
    expect(page.locator(".issued-warning")).to_contain_text("shown only on this page")
    key = page.locator("#issued-key").inner_text().strip()
    assert key.startswith("qmcp_")
    for block in ("config-cursor", "config-vs-code", "config-claude-desktop", "config-oauth"):
        expect(page.locator(f"#{block} pre")).to_be_visible()
    expect(page.locator("#config-oauth pre")).to_have_text(f"{base}/mcp")
    expect(page.locator("#config-claude-desktop pre")).to_contain_text("mcp-remote")
    _shoot(page, "05-key-issued")

    page.get_by_role("button", name="Copy Cursor configuration").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    pasted = page.evaluate("navigator.clipboard.readText()")
    config: dict[str, Any] = json.loads(pasted)
    assert key in pasted
    page.get_by_role("button", name="Copy key").click()
    assert page.evaluate("navigator.clipboard.readText()") == key
    return config


def _busy_tenant(slug: str) -> None:
    """A tenant with everything the lists show: a long last error, keys, rules, calls."""
    tenant = tenants.tenant_create(
        slug=slug,
        name="PT Sumber Makmur Sejahtera Abadi Nusantara Tbk",
        auth="mekari-hmac",
        qontak_request_ceiling="600/m",
    )
    QontakCredential.objects.filter(tenant=tenant).update(
        status=QontakCredential.Status.ERROR,
        last_error="the Mekari API Gateway answered HTTP 503 to a signed read: upstream "
        "connect error or disconnect/reset before headers. reset reason: overflow",
    )
    keys = [
        tenants.api_key_issue(
            tenant=tenant,
            label=f"Claude Desktop for the {team} team in Jakarta",
            read_only=index % 2 == 0,
            expires_at=timezone.now() + timedelta(days=30) if index else None,
            qontak_user=GATEWAY_CRM_USER,
        ).api_key
        for index, team in enumerate(("sales", "support", "finance"))
    ]
    policies.rate_limit_set(tenant=tenant, rate="30/m", tool="get_required_fields_for_company")
    policies.rate_limit_set(tenant=tenant, rate="600/h", per_key=True)
    policies.tool_access_set(tenant=tenant, tool="delete_products_association", effect="deny")
    policies.tool_access_set(tenant=tenant, tool="*", effect="deny", api_key=keys[1])
    outcomes = [
        ("get_required_fields_for_company", "ok", 200, ""),
        ("update_products_association", "upstream_error", 502, "Qontak answered HTTP 502"),
        ("nope", "invalid_input", None, "unknown tool 'nope': call tools/list to see the tools"),
        ("delete_products_association", "denied", None, "this tool is denied for this key"),
        ("list_contacts", "unavailable", None, "the credential store is unavailable"),
    ]
    for index in range(25):
        tool, outcome, status, message = outcomes[index % len(outcomes)]
        ToolCall.objects.create(
            tenant=tenant,
            api_key=keys[index % 3],
            key_prefix=keys[index % 3].prefix,
            tool=tool,
            outcome=outcome,
            upstream_status=status,
            message=message,
            latency_ms=1234.567891 + index,
            arguments_digest="0" * 64,
            request_id=f"r{index}",
            created_at=timezone.now() - timedelta(minutes=index),
        )


LISTS = {
    "tenant": "06-tenant-list",
    "apikey": "07-key-list",
    "toolcall": "08-tool-call-list",
    "ratelimitpolicy": "09-rate-limit-list",
    "toolpolicy": "10-tool-rule-list",
}


def test_the_admin_lists_fit_a_laptop_and_one_tenant_is_shown_once(
    in_browser, control_plane, transactional_db
):
    get_user_model().objects.create_superuser("laptop", "laptop@example.com", PASSWORD)
    slug = f"sumber-makmur-{uuid.uuid4().hex[:6]}"
    _busy_tenant(slug)
    overflow = in_browser(lambda page: _measure(page, control_plane.url, slug))
    assert overflow == {model: {"page": 0, "table": 0, "results": 0} for model in LISTS} | {
        "dashboard": {"page": 0, "table": 0, "results": 0},
        "live-feed": {"page": 0, "table": 0, "results": 0},
    }


def _measure(page: Page, base: str, slug: str) -> dict[str, Any]:
    log_in(page, base, "laptop")
    _shoot(page, "00-admin-index")
    found = {}
    for model, shot in LISTS.items():
        page.goto(f"{base}/admin/controlplane/{model}/")
        expect(page.locator("#result_list")).to_be_visible()
        found[model] = page_overflow(page)
        _shoot(page, shot, full_page=False)

    page.goto(f"{base}/admin/controlplane/toolcall/")
    expect(page.locator("#changelist-filter")).to_contain_text("unknown tool")
    expect(page.locator("#changelist-filter")).not_to_contain_text("nope")
    page.goto(f"{base}/admin/controlplane/toolcall/?tool=unknown")
    expect(page.locator("#result_list tbody tr")).to_have_count(5)

    page.goto(f"{base}/admin/dashboard/")
    expect(page.locator("svg.chart.minutes")).to_have_count(1)  # one tenant: shown once
    expect(page.locator(f"#tenant-{slug}")).to_have_count(1)
    expect(page.locator(".toolbars")).to_contain_text("unknown tool")
    expect(page.locator(".toolbars")).not_to_contain_text("nope")
    expect(page.locator("#kpi-client-errors .kpi-value")).to_have_text("5")
    expect(page.locator("#kpi-qontak-errors .kpi-value")).to_have_text("5")
    found["dashboard"] = page_overflow(page)
    _shoot(page, "11-dashboard")

    page.goto(f"{base}/admin/live/?tenant={slug}")
    expect(page.locator("#live-feed-status")).to_have_text("Live")
    failed_row = page.locator("#live-feed-rows tr", has_text="unavailable").first
    expect(failed_row.locator("td.reason")).to_contain_text("the credential store is unavailable")
    found["live-feed"] = page_overflow(page)
    _shoot(page, "12-live-feed")
    failed_row.locator("a").first.click()
    expect(page.locator("h1")).to_contain_text("tool call")
    expect(page.locator(".field-latency")).not_to_contain_text("1234.567891")
    _shoot(page, "13-audit-row")
    return found
