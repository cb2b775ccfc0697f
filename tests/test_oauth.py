"""Assistants that only speak OAuth (claude.ai, ChatGPT): the official MCP client connects with
nothing but the /mcp URL, a person consents, and every call is made and audited as them; and
every way a token should stop working does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from oauth2_provider.models import AccessToken, Application

from controlplane import people
from controlplane.models import ToolCall, TrustedClientHost
from tests import client_documents
from tests.calls import audited_calls
from tests.client_documents import DocumentHost
from tests.oauth_support import (
    REDIRECT_URI,
    MemoryStorage,
    Person,
    RegisteredClient,
    call_tool,
    challenge_params,
    code_result,
    list_tools,
    oauth_provider,
    person_browser,
    pkce_pair,
    register_client,
    registered_client,
    tool_names,
    with_oauth_client,
)
from tests.servers import ControlPlaneServer, dedicated_control_plane, simulator_requests

# The fixtures these tests use, made visible to pytest in this module.
document_host = client_documents.document_host
cimd_control_plane = client_documents.cimd_control_plane

PASSWORD = "a-long-person-password-42"
ACCESS_TOKEN_SECONDS = 3
# The scope of the RFC 7592 token a DCR client manages its registration with.
REGISTRATION_SCOPE = "oauth2_provider:registration"

# Enough separate connections that both workers of a two-worker server answer some.
CALLS_PER_CHECK = 12

pytestmark = pytest.mark.timeout(120)


def _statuses(server: ControlPlaneServer, token: str) -> set[int]:
    """The statuses of tools/list with `token`, each request on a connection of its own."""
    return {list_tools(server.mcp_url, token).status_code for _ in range(CALLS_PER_CHECK)}


@pytest.fixture(scope="module")
def short_lived_tokens(request: pytest.FixtureRequest) -> Iterator[ControlPlaneServer]:
    """A control plane whose access tokens last ACCESS_TOKEN_SECONDS."""
    with dedicated_control_plane(
        request, OAUTH_ACCESS_TOKEN_SECONDS=str(ACCESS_TOKEN_SECONDS)
    ) as server:
        yield server


@pytest.fixture
def member(make_tenant: Any) -> tuple[Any, Person]:
    demo = make_tenant("oauth")
    people.member_add(tenant=demo.tenant, username=f"ana-{demo.account}", password=PASSWORD)
    return demo, Person(username=f"ana-{demo.account}", password=PASSWORD)


def test_an_oauth_only_client_connects_with_the_mcp_url_and_calls_as_the_person(
    control_plane: Any, member: tuple[Any, Person]
) -> None:
    demo, person = member
    provider = oauth_provider(control_plane.mcp_url, person_browser(person))

    async def use(client: Any) -> Any:
        tools = await client.list_tools()
        result = await client.call_tool("list_contacts", {})
        return tools, result

    tools, result = asyncio.run(with_oauth_client(control_plane.mcp_url, provider, use))
    names = {tool.name for tool in tools.tools}
    assert "list_contacts" in names and "create_contact" in names
    assert "delete_contact" not in names  # crm.delete was not asked for
    assert not result.is_error
    (row,) = audited_calls(demo.tenant, 1)
    assert (row.person, row.oauth_client, row.key_prefix) == (person.username, "Test Assistant", "")
    assert row.outcome == ToolCall.Outcome.OK


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_discovery_names_the_resource_the_client_reached_and_its_authorization_server(
    control_plane: Any, transactional_db: None, host: str
) -> None:
    origin = control_plane.url.replace("127.0.0.1", host)
    unauthenticated = httpx.post(
        f"{origin}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"}
    )
    assert unauthenticated.status_code == 401
    challenge = challenge_params(unauthenticated)
    assert challenge["resource_metadata"] == f"{origin}/.well-known/oauth-protected-resource/mcp"
    assert challenge["scope"] == "crm.read crm.write"
    assert "error" not in challenge  # no token was sent (RFC 6750 3.1)

    resource = httpx.get(challenge["resource_metadata"]).json()
    assert resource["resource"] == f"{origin}/mcp"
    assert resource["authorization_servers"] == [origin]
    server = httpx.get(f"{origin}/.well-known/oauth-authorization-server").json()
    assert server["issuer"] == origin
    assert server["authorization_endpoint"] == f"{origin}/oauth/authorize/"
    assert server["code_challenge_methods_supported"] == ["S256"]
    assert set(server["grant_types_supported"]) == {"authorization_code", "refresh_token"}
    assert server["response_types_supported"] == ["code"]
    assert server["registration_endpoint"] == f"{origin}/oauth/register/"
    assert server["client_id_metadata_document_supported"] is True
    assert server["authorization_response_iss_parameter_supported"] is True


def test_a_client_named_by_its_metadata_document_connects_without_registering(
    cimd_control_plane: ControlPlaneServer, document_host: DocumentHost, member: tuple[Any, Person]
) -> None:
    demo, person = member
    TrustedClientHost.objects.create(host="localhost", note="the tests' document host")
    client_id = document_host.publish(client_name="Metadata Assistant")
    mcp_url = cimd_control_plane.mcp_url
    provider = oauth_provider(mcp_url, person_browser(person), client_metadata_url=client_id)

    async def use(client: Any) -> Any:
        return await client.list_tools(), await client.call_tool("list_contacts", {})

    tools, result = asyncio.run(with_oauth_client(mcp_url, provider, use))
    assert "list_contacts" in {tool.name for tool in tools.tools}
    assert not result.is_error
    assert client_id.removeprefix(document_host.origin) in document_host.fetched
    (application,) = Application.objects.all()  # nothing registered by DCR
    assert (application.client_id, application.name) == (client_id, "Metadata Assistant")
    (consent_page,) = person.consent_pages
    assert "Metadata Assistant" in consent_page
    assert "Verified host: <strong>localhost</strong>" in consent_page
    (row,) = audited_calls(demo.tenant, 1)
    assert (row.person, row.oauth_client) == (person.username, "Metadata Assistant")


def test_a_metadata_document_from_a_host_not_on_the_list_is_refused(
    cimd_control_plane: ControlPlaneServer, document_host: DocumentHost, member: tuple[Any, Person]
) -> None:
    _, person = member
    client_id = document_host.publish(client_name="Unlisted Assistant")
    client = RegisteredClient(origin=cimd_control_plane.url, client_id=client_id)
    _, challenge = pkce_pair()
    location = person.authorize(client.authorization_url(challenge=challenge, scope="crm.read"))
    assert location == "status:400"  # an error page, and no way back to the client
    assert not person.consent_pages
    assert client_id.removeprefix(document_host.origin) not in document_host.fetched
    assert not Application.objects.exists()


def test_a_code_exchanged_with_the_wrong_pkce_verifier_gets_no_token(
    control_plane: Any, member: tuple[Any, Person]
) -> None:
    _, person = member
    client = registered_client(control_plane.url)
    _, challenge = pkce_pair()
    location = person.authorize(client.authorization_url(challenge=challenge, scope="crm.read"))
    assert location.startswith(REDIRECT_URI)
    wrong_verifier, _ = pkce_pair()
    answer = client.exchange(code_result(location).code, wrong_verifier)
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_grant"
    assert not AccessToken.objects.exclude(scope=REGISTRATION_SCOPE).exists()


@pytest.mark.parametrize(
    ("pkce", "says"),
    [
        ({"code_challenge": None, "code_challenge_method": None}, "Code challenge required"),
        ({"code_challenge_method": "plain"}, '"S256"'),
        ({"code_challenge_method": None}, '"S256"'),  # no method means plain (RFC 7636)
        ({"code_challenge": ""}, "43-character"),
        ({"code_challenge": "not-a-sha256-digest"}, "43-character"),
    ],
    ids=["none", "plain", "method-missing", "empty", "not-a-digest"],
)
def test_an_authorization_without_s256_pkce_is_sent_back_before_the_consent_page(
    control_plane: Any, member: tuple[Any, Person], pkce: dict[str, Any], says: str
) -> None:
    _, person = member
    client = registered_client(control_plane.url)
    _, challenge = pkce_pair()
    location = person.authorize(
        client.authorization_url(challenge=challenge, scope="crm.read", **pkce)
    )
    assert not person.consent_pages  # nobody is asked to consent to what cannot work
    assert location.startswith(REDIRECT_URI)
    answer = parse_qs(urlsplit(location).query)
    assert answer["error"] == ["invalid_request"]
    assert says in answer["error_description"][0]
    assert (answer["state"], answer["iss"]) == (["s-1"], [control_plane.url])
    assert "code" not in answer


def test_a_redirect_uri_the_client_did_not_register_is_never_used(
    control_plane: Any, member: tuple[Any, Person]
) -> None:
    _, person = member
    client = registered_client(control_plane.url)
    client.redirect_uri = "http://127.0.0.1:8765/elsewhere"
    _, challenge = pkce_pair()
    location = person.authorize(client.authorization_url(challenge=challenge, scope="crm.read"))
    assert location == "status:400"
    assert not person.consent_pages


@pytest.mark.parametrize(
    "redirect_uri", ["http://assistant.example/callback", "javascript:alert(1)"]
)
def test_registration_refuses_a_redirect_uri_that_is_neither_https_nor_loopback(
    control_plane: Any, transactional_db: None, redirect_uri: str
) -> None:
    answer = register_client(control_plane.url, redirect_uri=redirect_uri)
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_redirect_uri"
    assert not Application.objects.exists()


def test_a_token_for_another_resource_is_refused(
    control_plane: Any, member: tuple[Any, Person]
) -> None:
    _, person = member
    tokens = registered_client(control_plane.url).connect(person)
    assert list_tools(control_plane.mcp_url, tokens.access).status_code == 200
    elsewhere = control_plane.mcp_url.replace("127.0.0.1", "localhost")
    refused = list_tools(elsewhere, tokens.access)
    assert refused.status_code == 401
    challenge = challenge_params(refused)
    assert challenge["error"] == "invalid_token"
    assert "another resource" in challenge["error_description"]
    assert challenge["resource_metadata"].startswith(elsewhere.removesuffix("/mcp"))


def test_a_revoked_access_token_is_refused_on_the_next_call_by_every_worker(
    cimd_control_plane: ControlPlaneServer, member: tuple[Any, Person]
) -> None:
    _, person = member
    client = registered_client(cimd_control_plane.url)
    tokens = client.connect(person)
    assert _statuses(cimd_control_plane, tokens.access) == {200}  # every worker holds it now
    revoked = httpx.post(
        f"{cimd_control_plane.url}/oauth/revoke/",
        data={"token": tokens.access, "client_id": client.client_id},
    )
    assert revoked.status_code == 200
    assert _statuses(cimd_control_plane, tokens.access) == {401}
    refused = list_tools(cimd_control_plane.mcp_url, tokens.access)
    assert challenge_params(refused)["error"] == "invalid_token"


def test_reusing_a_rotated_refresh_token_revokes_the_whole_family(
    cimd_control_plane: ControlPlaneServer, member: tuple[Any, Person]
) -> None:
    _, person = member
    client = registered_client(cimd_control_plane.url)
    first = client.connect(person)
    rotated = client.refresh(first.refresh)
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()
    assert second["refresh_token"] != first.refresh
    assert second["refresh_token"].startswith(people.REFRESH_TOKEN_SCHEME)
    assert second["scope"] == first.scope
    assert _statuses(cimd_control_plane, second["access_token"]) == {200}

    reused = client.refresh(first.refresh)  # as someone who copied the old one would
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"
    assert _statuses(cimd_control_plane, second["access_token"]) == {401}
    assert client.refresh(second["refresh_token"]).json()["error"] == "invalid_grant"


def test_insufficient_scope_gets_403_with_a_step_up_challenge_and_a_denied_audit_row(
    control_plane: Any, simulator: Any, member: tuple[Any, Person]
) -> None:
    demo, person = member
    tokens = registered_client(control_plane.url).connect(person, scope="crm.read")
    assert tokens.scope == "crm.read"
    names = tool_names(list_tools(control_plane.mcp_url, tokens.access))
    assert "list_contacts" in names and "create_contact" not in names

    refused = call_tool(
        control_plane.mcp_url, tokens.access, "create_contact", {"first_name": "Eve"}
    )
    assert refused.status_code == 403
    challenge = challenge_params(refused)
    assert challenge["error"] == "insufficient_scope"
    assert challenge["scope"].split() == ["crm.read", "crm.write"]
    assert challenge["resource_metadata"] == (
        f"{control_plane.url}/.well-known/oauth-protected-resource/mcp"
    )
    (row,) = audited_calls(demo.tenant, 1)
    assert (row.tool, row.outcome, row.person) == (
        "create_contact",
        ToolCall.Outcome.DENIED,
        person.username,
    )
    routes = [r["route"] for r in simulator_requests(simulator, demo.account)]
    assert "POST /api/v3.1/contacts" not in routes


def test_a_registration_management_token_is_not_an_mcp_token(
    control_plane: Any, transactional_db: None
) -> None:
    registration = register_client(control_plane.url).json()
    refused = list_tools(control_plane.mcp_url, registration["registration_access_token"])
    assert refused.status_code == 401
    assert challenge_params(refused)["error"] == "invalid_token"


def test_a_person_of_tenant_a_never_reaches_tenant_b(
    control_plane: Any, simulator: Any, make_tenant: Any
) -> None:
    alpha, beta = make_tenant("alpha"), make_tenant("beta")
    people.member_add(tenant=alpha.tenant, username=f"ana-{alpha.account}", password=PASSWORD)
    bob, _ = people.member_add(
        tenant=beta.tenant, username=f"bob-{beta.account}", password=PASSWORD
    )
    client = registered_client(control_plane.url)
    _, challenge = pkce_pair()
    url = client.authorization_url(challenge=challenge, scope="crm.read crm.write")

    tamperer = Person(f"ana-{alpha.account}", PASSWORD, membership=bob.pk)
    assert tamperer.authorize(url) == "status:200"  # the form again: no code
    form_again = tamperer.consent_pages[-1]
    assert "Choose the Qontak account the assistant may use." in form_again
    assert "Direct Client</span> wants to use your Qontak CRM" in form_again
    assert people.SCOPE_WORDS["crm.write"] in form_again

    ana = Person(f"ana-{alpha.account}", PASSWORD)
    tokens = client.connect(ana)
    listed = call_tool(control_plane.mcp_url, tokens.access, "list_contacts", {})
    created = call_tool(
        control_plane.mcp_url, tokens.access, "create_contact", {"first_name": "Ana"}
    )
    assert listed.status_code == created.status_code == 200
    assert [row.person for row in audited_calls(alpha.tenant, 2)] == [ana.username] * 2
    assert not ToolCall.objects.filter(tenant=beta.tenant).exists()
    alpha_routes = [r["route"] for r in simulator_requests(simulator, alpha.account)]
    assert "POST /api/v3.1/contacts" in alpha_routes
    beta_routes = [r["route"] for r in simulator_requests(simulator, beta.account)]
    assert not any("/contacts" in route for route in beta_routes)


def test_an_expired_access_token_is_refused_and_the_client_rotates_its_refresh_token(
    short_lived_tokens: ControlPlaneServer, member: tuple[Any, Person]
) -> None:
    demo, person = member
    mcp_url = short_lived_tokens.mcp_url
    storage = MemoryStorage()
    provider = oauth_provider(mcp_url, person_browser(person), storage=storage)

    async def use(client: Any) -> Any:
        await client.list_tools()
        first = storage.tokens
        assert first is not None and first.expires_in == ACCESS_TOKEN_SECONDS
        refused = await asyncio.to_thread(_wait_until_refused, mcp_url, first.access_token)
        result = await client.call_tool("list_contacts", {})  # the SDK refreshes first
        return first, refused, result

    first, refused, result = asyncio.run(with_oauth_client(mcp_url, provider, use))
    assert challenge_params(refused)["error"] == "invalid_token"
    assert not result.is_error
    assert storage.tokens is not None
    assert storage.tokens.access_token != first.access_token
    assert storage.tokens.refresh_token not in (None, first.refresh_token)
    assert len(person.consent_pages) == 1  # refreshed, not authorized again
    (row,) = audited_calls(demo.tenant, 1)
    assert (row.tool, row.person, row.outcome) == ("list_contacts", person.username, "ok")


def _wait_until_refused(mcp_url: str, token: str) -> httpx.Response:
    """The first 401 for `token` once it expires (within 5 s of its lifetime), plus a moment for
    the client's own clock to agree that it has expired."""
    deadline = time.monotonic() + ACCESS_TOKEN_SECONDS + 5
    while (answer := list_tools(mcp_url, token)).status_code == 200:
        assert time.monotonic() < deadline, "the access token outlived its lifetime"
        time.sleep(0.2)
    time.sleep(0.5)
    return answer


def test_a_removed_member_is_refused_on_the_next_call_by_every_worker(
    cimd_control_plane: ControlPlaneServer, member: tuple[Any, Person]
) -> None:
    demo, person = member
    client = registered_client(cimd_control_plane.url)
    tokens = client.connect(person)
    assert _statuses(cimd_control_plane, tokens.access) == {200}
    assert people.member_remove(tenant=demo.tenant, username=person.username) == 1
    assert _statuses(cimd_control_plane, tokens.access) == {401}
    refused = list_tools(cimd_control_plane.mcp_url, tokens.access)
    assert challenge_params(refused)["error"] == "invalid_token"
    assert client.refresh(tokens.refresh).json()["error"] == "invalid_grant"


def test_a_disabled_client_is_refused_on_the_next_call_by_every_worker(
    cimd_control_plane: ControlPlaneServer, member: tuple[Any, Person]
) -> None:
    _, person = member
    client = registered_client(cimd_control_plane.url)
    tokens = client.connect(person)
    assert _statuses(cimd_control_plane, tokens.access) == {200}
    people.client_disable(application=Application.objects.get(client_id=client.client_id))
    assert _statuses(cimd_control_plane, tokens.access) == {401}
    refused = list_tools(cimd_control_plane.mcp_url, tokens.access)
    assert "disabled this assistant client" in challenge_params(refused)["error_description"]
    assert client.refresh(tokens.refresh).status_code in (400, 401)
    _, challenge = pkce_pair()
    again = Person(person.username, PASSWORD)
    assert again.authorize(client.authorization_url(challenge=challenge, scope="crm.read")) == (
        "status:400"
    )
    assert not again.consent_pages
