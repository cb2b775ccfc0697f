"""A person connects an assistant in a real browser (Playwright driving Debian's Chromium): the
sign-in and consent pages of the control plane, with nothing but the official MCP client's
OAuth flow on the other side. The pages run no script of ours; a CSP violation or any other
console error fails the test (tests.browser_support.in_browser)."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page, Response, Route, expect

from controlplane import people
from controlplane.models import OAuthConnection, ToolCall, TrustedClientHost
from tests import browser_support, client_documents
from tests.calls import audited_calls
from tests.client_documents import DocumentHost
from tests.oauth_support import (
    REDIRECT_URI,
    MemoryStorage,
    RegisteredClient,
    call_tool,
    challenge_params,
    oauth_provider,
    pkce_pair,
    with_oauth_client,
)
from tests.servers import ControlPlaneServer

# The fixtures these tests use, made visible to pytest in this module.
chromium = browser_support.chromium
in_browser = browser_support.in_browser
document_host = client_documents.document_host
cimd_control_plane = client_documents.cimd_control_plane

PASSWORD = "a-long-person-password-42"

pytestmark = pytest.mark.timeout(900)  # the first run may install Chromium


def _back_at_the_client(page: Page) -> str:
    """Where the server sent the browser back to (see _answer_redirects)."""
    expect(page).to_have_url(re.compile("^" + re.escape(REDIRECT_URI)))
    return page.url


def _answer_redirects(page: Page) -> None:
    """Nothing listens on the client's loopback redirect URI: answer it here, as the desktop
    client's own listener would."""

    def answer(route: Route) -> None:
        route.fulfill(status=200, content_type="text/plain", body="You can close this tab.")

    page.route(re.compile("^" + re.escape(REDIRECT_URI)), answer)


def _sign_in(page: Page, username: str, password: str) -> None:
    expect(page.locator("h1")).to_have_text("Sign in")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")


def _in_a_tab(
    in_browser: Callable[..., Any], scenario: Callable[[Page, str], str]
) -> Callable[[str], Awaitable[str]]:
    """The SDK's redirect handler: the person's browser opens the authorization URL."""

    async def authorize(url: str) -> str:
        return str(await asyncio.to_thread(in_browser, lambda page: scenario(page, url)))

    return authorize


def test_a_person_in_two_tenants_picks_the_second_and_withholds_write_access(
    in_browser: Callable[..., Any],
    cimd_control_plane: ControlPlaneServer,
    document_host: DocumentHost,
    make_tenant: Any,
) -> None:
    alpha, beta = make_tenant("alpha"), make_tenant("beta")
    username = f"ana-{alpha.account}"
    people.member_add(tenant=alpha.tenant, username=username, password=PASSWORD)
    people.member_add(tenant=beta.tenant, username=username)
    TrustedClientHost.objects.create(host="localhost")
    client_id = document_host.publish(client_name="Browser Assistant")
    pages: dict[str, dict[str, str]] = {}  # the headers of each page shown, by path

    def consent(page: Page, url: str) -> str:
        def note_page(response: Response) -> None:
            if response.request.method == "GET" and response.status == 200:
                pages[urlsplit(response.url).path] = response.all_headers()

        page.on("response", note_page)
        _answer_redirects(page)
        page.goto(url)
        expect(page).to_have_url(re.compile("/accounts/login/"))
        _sign_in(page, username, PASSWORD)
        expect(page.locator("h1")).to_have_text("Browser Assistant wants to use your Qontak CRM")
        expect(page.locator(".host")).to_have_text("Verified host: localhost")
        expect(page.locator("ul.scopes li")).to_have_text(
            [people.SCOPE_WORDS["crm.read"], people.SCOPE_WORDS["crm.write"]]
        )
        expect(page.locator("#id_membership option")).to_have_text(
            sorted([alpha.tenant.name, beta.tenant.name])
        )
        page.select_option("#id_membership", label=beta.tenant.name)
        expect(page.locator("#id_write")).to_be_checked()
        page.uncheck("#id_write")
        page.click("button[name=allow]")
        return _back_at_the_client(page)

    storage = MemoryStorage()
    mcp_url = cimd_control_plane.mcp_url
    provider = oauth_provider(
        mcp_url, _in_a_tab(in_browser, consent), storage=storage, client_metadata_url=client_id
    )

    async def use(client: Any) -> Any:
        tools = await client.list_tools()
        return tools, await client.call_tool("list_contacts", {})

    tools, listed = asyncio.run(with_oauth_client(mcp_url, provider, use))
    names = {tool.name for tool in tools.tools}
    assert "list_contacts" in names
    assert not names & {"create_contact", "update_contact", "delete_contact"}
    assert not listed.is_error
    assert storage.tokens is not None and storage.tokens.scope == "crm.read"

    for path in ("/accounts/login/", "/oauth/authorize/"):  # never in another site's frame
        assert pages[path]["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in pages[path]["content-security-policy"]

    refused = call_tool(
        mcp_url, storage.tokens.access_token, "create_contact", {"first_name": "Eve"}
    )
    assert refused.status_code == 403
    assert challenge_params(refused)["error"] == "insufficient_scope"
    rows = audited_calls(beta.tenant, 2)
    assert [(row.tool, row.outcome, row.person) for row in rows] == [
        ("list_contacts", ToolCall.Outcome.OK, username),
        ("create_contact", ToolCall.Outcome.DENIED, username),
    ]
    assert not ToolCall.objects.filter(tenant=alpha.tenant).exists()
    (connection,) = OAuthConnection.objects.all()
    assert connection.membership.tenant == beta.tenant


def test_a_person_who_mistypes_the_password_and_then_denies_shares_nothing(
    in_browser: Callable[..., Any],
    cimd_control_plane: ControlPlaneServer,
    document_host: DocumentHost,
    make_tenant: Any,
) -> None:
    demo = make_tenant("deny")
    username = f"ana-{demo.account}"
    people.member_add(tenant=demo.tenant, username=username, password=PASSWORD)
    TrustedClientHost.objects.create(host="localhost")
    client_id = document_host.publish(client_name="Declined Assistant")
    state = secrets.token_urlsafe(8)

    def deny(page: Page, url: str) -> str:
        _answer_redirects(page)
        page.goto(url)
        _sign_in(page, username, "not-the-password")
        expect(page.locator(".error")).to_contain_text("didn't match")
        _sign_in(page, username, PASSWORD)
        expect(page.locator("strong.tenant")).to_have_text(demo.tenant.name)
        expect(page.locator("ul.scopes li")).to_have_text([people.SCOPE_WORDS["crm.read"]])
        expect(page.locator("#id_write")).to_have_count(0)  # nothing to withhold
        page.click("button:not([name=allow])")
        return _back_at_the_client(page)

    client = RegisteredClient(origin=cimd_control_plane.url, client_id=client_id)
    url = client.authorization_url(challenge=pkce_pair()[1], scope="crm.read", state=state)
    location = in_browser(lambda page: deny(page, url))
    assert location.startswith(REDIRECT_URI + "?")
    answer = parse_qs(urlsplit(location).query)
    assert (answer["error"], answer["state"]) == (["access_denied"], [state])
    assert answer["iss"] == [cimd_control_plane.url]  # RFC 9207, on a refusal as on a code
    assert "code" not in answer
    assert not OAuthConnection.objects.exists()
