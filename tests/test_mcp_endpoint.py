"""End to end over real HTTP: uvicorn serving the ASGI app, OpenBao, the simulator, and the
official mcp client in both protocol eras."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from mcp import Client

from controlplane.tenants import PREFIX_LENGTH, api_key_revoke
from tests.calls import audited_calls, with_mcp
from tests.servers import simulator_requests

CONTACT_TOOLS = {
    "list_contacts",
    "get_contact",
    "create_contact",
    "update_contact",
    "delete_contact",
}


def test_client_lists_contact_tools_with_annotations(control_plane, make_tenant, era):
    demo = make_tenant()

    async def list_tools(client: Client) -> Any:
        return (await client.list_tools()).tools

    tools = {tool.name: tool for tool in with_mcp(control_plane.mcp_url, demo.key, era, list_tools)}
    assert set(tools) >= CONTACT_TOOLS
    assert tools["list_contacts"].annotations.read_only_hint is True
    assert tools["delete_contact"].annotations.destructive_hint is True
    assert tools["get_contact"].input_schema["properties"]["id"]["minimum"] == 1
    assert tools["list_contacts"].output_schema is not None


def test_a_tenants_key_never_reaches_another_tenants_account(control_plane, make_tenant, simulator):
    alpha = make_tenant("alpha")
    beta = make_tenant("beta")

    async def create(client: Client) -> Any:
        return await client.call_tool("create_contact", {"first_name": "Only-Alpha"})

    async def search(client: Client) -> Any:
        return await client.call_tool("list_contacts", {"name": "Only-Alpha"})

    with_mcp(control_plane.mcp_url, alpha.key, "2026-07-28", create)
    seen_by_beta = with_mcp(control_plane.mcp_url, beta.key, "2026-07-28", search)
    assert seen_by_beta.structured_content["response"] == []
    beta_routes = [r["route"] for r in simulator_requests(simulator, beta.account)]
    assert "POST /api/v3.1/contacts" not in beta_routes
    alpha_routes = [r["route"] for r in simulator_requests(simulator, alpha.account)]
    assert "GET /api/v3.1/contacts" not in alpha_routes


def _post_mcp(url: str, key: str | None, body: Any, **headers: str) -> httpx.Response:
    all_headers = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2025-11-25",
        **headers,
    }
    if key:
        all_headers["Authorization"] = f"Bearer {key}"
    content = body if isinstance(body, bytes | str) else json.dumps(body)
    return httpx.post(url, content=content, headers=all_headers, timeout=30)


LIST_TOOLS = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer qmcp_not-a-real-key", "Basic dXNlcjpwYXNz", "Bearer"],
    ids=["missing", "unknown", "wrong-scheme", "empty"],
)
def test_requests_without_a_valid_key_get_401_with_www_authenticate(
    control_plane, transactional_db, authorization
):
    headers = {"Authorization": authorization} if authorization else {}
    response = _post_mcp(control_plane.mcp_url, None, LIST_TOOLS, **headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["error"]["message"].startswith("Unauthorized")


def test_revoked_key_gets_401(control_plane, make_tenant):
    demo = make_tenant()
    assert _post_mcp(control_plane.mcp_url, demo.key, LIST_TOOLS).status_code == 200
    api_key_revoke(prefix=demo.key[:PREFIX_LENGTH])
    response = _post_mcp(control_plane.mcp_url, demo.key, LIST_TOOLS)
    assert response.status_code == 401
    assert "revoked" in response.headers["www-authenticate"]


def test_official_client_surfaces_401_as_an_error(control_plane, transactional_db, era):
    async def list_tools(client: Client) -> Any:
        return await client.list_tools()

    with pytest.raises(BaseException) as raised:
        with_mcp(control_plane.mcp_url, "qmcp_wrong", era, list_tools)
    assert "Unauthorized" in repr(raised.value) or "401" in repr(raised.value)


def test_mcp_path_is_exact_without_redirects(control_plane, make_tenant):
    demo = make_tenant()
    response = _post_mcp(control_plane.url + "/mcp/", demo.key, LIST_TOOLS)
    assert response.status_code == 404
    assert "location" not in response.headers


BAD_ARGUMENTS = [
    ("get_contact", {"id": "abc"}, "id"),
    ("get_contact", {"id": -3}, "id"),
    ("get_contact", {}, "id: Field required"),
    ("create_contact", {"last_name": "NoFirst"}, "first_name"),
    ("list_contacts", {"per_page": 1000}, "per_page"),
    ("list_contacts", {"page": 0}, "page"),
    ("list_contacts", {"created_after": "2024-07-15"}, "created_after"),
    ("list_contacts", {"colour": "blue"}, "colour"),
]


@pytest.mark.parametrize(("tool", "arguments", "named"), BAD_ARGUMENTS)
def test_invalid_arguments_get_a_clear_error_and_never_reach_qontak(
    control_plane, make_tenant, simulator, tool, arguments, named
):
    demo = make_tenant()

    async def call(client: Client) -> Any:
        return await client.call_tool(tool, arguments)

    result = with_mcp(control_plane.mcp_url, demo.key, "2026-07-28", call)
    assert result.is_error
    assert named in result.content[0].text
    assert not [r for r in simulator_requests(simulator, demo.account) if "/api/" in r["path"]]
    rows = audited_calls(demo.tenant, 1)
    assert [(row.tool, row.outcome) for row in rows] == [(tool, "invalid_input")]


def test_unknown_tool_is_an_error_result_and_audited(control_plane, make_tenant, era):
    demo = make_tenant()

    async def call(client: Client) -> Any:
        return await client.call_tool("drop_database", {})

    result = with_mcp(control_plane.mcp_url, demo.key, era, call)
    assert result.is_error
    assert "unknown tool 'drop_database'" in result.content[0].text
    assert [row.outcome for row in audited_calls(demo.tenant, 1)] == ["invalid_input"]


@pytest.mark.parametrize(
    ("body", "expected_code"),
    [
        (b"{not json", -32700),
        ([1, 2, 3], None),
        ({"jsonrpc": "2.0", "id": 5, "method": "tools/call"}, -32602),
        ({"jsonrpc": "2.0", "id": 6, "method": "no/such/method", "params": {}}, -32601),
    ],
    ids=["not-json", "not-an-object", "call-without-params", "unknown-method"],
)
def test_malformed_json_rpc_gets_a_json_rpc_error_not_a_500(
    control_plane, make_tenant, body, expected_code
):
    demo = make_tenant()
    response = _post_mcp(control_plane.mcp_url, demo.key, body)
    assert response.status_code < 500
    error = response.json()["error"]
    assert error["message"]
    if expected_code is not None:
        assert error["code"] == expected_code


def test_oversized_body_is_refused_with_413(control_plane, make_tenant):
    demo = make_tenant()
    huge = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "create_contact", "arguments": {"first_name": "x" * 2_000_000}},
    }
    response = _post_mcp(control_plane.mcp_url, demo.key, huge)
    assert response.status_code == 413


def test_tool_error_from_a_tool_name_in_a_bad_call_is_audited_with_the_tool(
    control_plane, make_tenant
):
    demo = make_tenant()
    body = {
        "jsonrpc": "2.0",
        "id": 9,
        "method": "tools/call",
        "params": {"name": "get_contact", "arguments": {"id": [1, 2]}},
    }
    response = _post_mcp(control_plane.mcp_url, demo.key, body)
    assert response.status_code == 200
    assert response.json()["result"]["isError"] is True
    assert [row.tool for row in audited_calls(demo.tenant, 1)] == ["get_contact"]


def test_readyz_reports_database_cache_and_vault_to_a_loopback_client(
    control_plane, transactional_db
):
    body = httpx.get(control_plane.url + "/readyz").json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "cache", "vault"}
    assert all(check["ok"] for check in body["checks"].values())
    assert body["checks"]["vault"]["detail"].startswith("token")
    assert httpx.get(control_plane.url + "/healthz").json() == {"status": "ok"}


def test_django_admin_is_served_beside_mcp(control_plane, transactional_db):
    response = httpx.get(control_plane.url + "/admin/login/")
    assert response.status_code == 200
    assert "Django" in response.text or "csrfmiddlewaretoken" in response.text


@pytest.mark.django_db
def test_database_outage_during_authentication_is_a_503_not_a_500(monkeypatch):
    import asyncio

    from django.db import OperationalError

    from controlplane import tenants
    from mcpserver import server

    def unreachable(*, key: str) -> None:
        raise OperationalError("connection refused")

    monkeypatch.setattr(tenants, "api_key_authenticate", unreachable)

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=server.mcp_endpoint)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return await client.post(
                "/mcp", json=LIST_TOOLS, headers={"Authorization": "Bearer qmcp_whatever"}
            )

    response = asyncio.run(post())
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert "cannot reach its database" in response.json()["error"]["message"]


def test_a_request_without_credentials_gets_a_challenge_without_an_error_code(
    control_plane, transactional_db
):
    """RFC 6750 3.1: no error code when the client sent no credentials at all; RFC 9728: the
    challenge says where the protected-resource metadata of /mcp is, for OAuth clients."""
    response = _post_mcp(control_plane.mcp_url, None, LIST_TOOLS)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == (
        f'Bearer realm="qontak-mcp", resource_metadata="{control_plane.url}'
        '/.well-known/oauth-protected-resource/mcp", scope="crm.read crm.write"'
    )
    unknown = _post_mcp(control_plane.mcp_url, "qmcp_unknown", LIST_TOOLS)
    assert 'error="invalid_token"' in unknown.headers["www-authenticate"]


def _post_in_process(headers: dict[str, str]) -> httpx.Response:
    import asyncio

    from mcpserver import server

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=server.mcp_endpoint)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return await client.post("/mcp", json=LIST_TOOLS, headers=headers)

    return asyncio.run(post())


@pytest.mark.parametrize(
    ("allowed", "headers", "status"),
    [
        ([".example.com"], {"Host": "mcp.example.com"}, 401),
        ([".example.com"], {"Host": "example.com:8443"}, 401),
        ([".example.com"], {"Host": "example.com.evil.test"}, 421),
        (["*"], {"Host": "anything.test"}, 421),
        (["127.0.0.1"], {"Origin": "http://evil.test"}, 403),
        (["127.0.0.1"], {"Origin": "http://127.0.0.1:8000"}, 401),
    ],
    ids=["subdomain", "domain-with-port", "lookalike", "star-refused", "foreign-origin", "origin"],
)
def test_mcp_checks_host_and_origin_with_djangos_rules(settings, allowed, headers, status):
    settings.ALLOWED_HOSTS = allowed
    response = _post_in_process(headers)
    assert response.status_code == status
