"""Every Qontak endpoint is a tool: checked against the Postman collection, then called over
real HTTP with the official mcp client, with the simulator recording what reached Qontak."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp_types import CallToolResult, TextContent

from devtools.simulator.collection import CollectionRequest, load_requests
from qontak.endpoints import ENDPOINTS, ENDPOINTS_BY_NAME, Endpoint, Kind, gateway_path
from tests.calls import GATEWAY_CRM_USER, audited_calls, with_mcp
from tests.servers import simulator_requests

OAUTH_ROUTE = "POST /oauth/token"
COLLECTION_ROUTES = {request.route_key for request in load_requests()}
API_PREFIX = "/api/v3.1/"
DISCOVERY_CONTEXT = {
    "get_required_fields_for_deal": {"pipeline_id": 2, "stage_id": 1},
    "get_required_fields_for_ticket": {"pipeline_id": 2},
}


def text_of(result: CallToolResult) -> str:
    content = result.content[0]
    assert isinstance(content, TextContent)
    return content.text


def route_of(endpoint: Endpoint) -> str:
    """The endpoint's route in the collection's spelling: ``GET /api/v3.1/deals/:id``."""
    return f"{endpoint.method} " + re.sub(r"\{(\w+)\}", r":\1", endpoint.path).rstrip("/")


def tools_for(route: str) -> list[Endpoint]:
    return [endpoint for endpoint in ENDPOINTS if route_of(endpoint) == route]


def requests_of(route: str) -> list[CollectionRequest]:
    return [request for request in load_requests() if request.route_key == route]


def documented_query(route: str) -> dict[str, str]:
    return {key: value for request in requests_of(route) for key, value in request.query}


def labels_an_id(key: str, body: dict[str, Any]) -> bool:
    """``creator_name`` beside ``creator_id``: a display name Qontak derives from the id."""
    for suffix in ("_full_name", "_name"):
        if key.endswith(suffix):
            stem = key.removesuffix(suffix)
            return f"{stem}_id" in body or f"{stem}_ids" in body
    return False


def example_arguments(body: dict[str, Any]) -> dict[str, Any]:
    """An example body as tool arguments, without nulls and display names of ids."""
    return {
        key: value
        for key, value in body.items()
        if value is not None and not labels_an_id(key, body)
    }


def existing_ids(route: str) -> list[int]:
    """Ids of the records the collection's list example shows for the route's resource."""
    resource = re.match(r"/api/v3\.1/(.+?)(?:/:\w+.*)?$", route.split(" ", 1)[1])
    assert resource is not None
    listing = f"GET /api/v3.1/{resource.group(1)}"
    example = requests_of(listing)[0].example
    return [int(record["id"]) for record in example["response"]]


@dataclass(frozen=True)
class Call:
    tool: str
    arguments: dict[str, Any]
    route: str

    @property
    def endpoint(self) -> Endpoint:
        return ENDPOINTS_BY_NAME[self.tool]

    def sent(self) -> tuple[str, dict[str, str], Any]:
        """Path, query and body Qontak must see: the validated arguments, path ids in the path,
        the rest in the query (GET, DELETE) or body (POST, PUT), presenter-only fields nowhere."""
        endpoint = self.endpoint
        values = endpoint.input_model.model_validate(self.arguments).model_dump(
            mode="json", exclude_none=True
        )
        path = endpoint.path.format(**{f: values.pop(f) for f in endpoint.path_fields})
        for name in endpoint.local_fields:
            values.pop(name)
        if endpoint.method in ("GET", "DELETE"):
            return path, {key: str(value) for key, value in values.items()}, None
        return path, {}, values


def collection_calls() -> list[Call]:
    """One call of each tool, with the collection's documented query or example body.

    Reads and writes use the first record of the resource's list example, deletes the second,
    and deletes run last, so every call finds the record it needs.
    """
    calls: list[Call] = []
    for route in sorted(COLLECTION_ROUTES - {OAUTH_ROUTE}):
        method = route.split(" ", 1)[0]
        body = next((r.body for r in requests_of(route) if r.body is not None), None)
        for endpoint in tools_for(route):
            arguments: dict[str, Any] = dict(DISCOVERY_CONTEXT.get(endpoint.name, {}))
            if endpoint.path_fields:
                record = existing_ids(route)[1 if method == "DELETE" else 0]
                arguments.update({name: record for name in endpoint.path_fields})
            if method in ("GET", "DELETE"):
                arguments.update(documented_query(route))
            elif isinstance(body, dict):
                arguments.update(example_arguments(body))
            calls.append(Call(endpoint.name, arguments, route))
    return sorted(calls, key=lambda call: call.route.startswith("DELETE"))


def test_every_collection_route_has_a_tool_and_every_tool_a_route():
    assert {route_of(e) for e in ENDPOINTS} == COLLECTION_ROUTES - {OAUTH_ROUTE}
    shared = {route for route in COLLECTION_ROUTES if len(tools_for(route)) > 1}
    assert all(route.endswith("/info") for route in shared)
    assert len(ENDPOINTS) == len(COLLECTION_ROUTES) - 1 + len(shared) == 72


def test_tool_names_follow_qontaks_nouns():
    names = {endpoint.name for endpoint in ENDPOINTS}
    for noun, plural in [
        ("contact", "contacts"),
        ("company", "companies"),
        ("deal", "deals"),
        ("ticket", "tickets"),
        ("task", "tasks"),
        ("note", "notes"),
        ("product", "products"),
        ("products_association", "products_associations"),
    ]:
        assert {f"list_{plural}", f"get_{noun}", f"create_{noun}", f"update_{noun}"} <= names
        assert f"delete_{noun}" in names
    for noun in ("contact", "company", "deal", "ticket", "task"):
        assert {f"get_{noun}_template", f"get_required_fields_for_{noun}"} <= names
    assert {"get_contact_timeline", "get_company_timeline", "get_deal_timeline"} <= names


def test_collection_example_bodies_and_queries_are_valid_tool_arguments():
    for call in collection_calls():
        call.endpoint.input_model.model_validate(call.arguments)


def test_annotations_follow_what_each_tool_does():
    for endpoint in ENDPOINTS:
        hints = endpoint.annotations
        verb = endpoint.name.split("_", 1)[0]
        if endpoint.kind is Kind.READ:
            assert endpoint.method == "GET" and verb in ("get", "list"), endpoint.name
            assert hints.read_only_hint is True
        else:
            assert hints.read_only_hint is False, endpoint.name
        assert hints.destructive_hint is (endpoint.kind in (Kind.DELETE, Kind.REPLACE))
        assert hints.idempotent_hint is (endpoint.kind is not Kind.CREATE)
        assert (verb == "delete") is (endpoint.kind is Kind.DELETE), endpoint.name
        assert (verb == "create") is (endpoint.kind is Kind.CREATE), endpoint.name
    # The collection's only permission call writes: it keeps its community name, not a read hint.
    assert ENDPOINTS_BY_NAME["get_deal_permissions"].kind is Kind.REPLACE


def test_tools_list_shows_every_tool_with_schemas_and_annotations(control_plane, make_tenant, era):
    demo = make_tenant()

    async def list_tools(client: Client) -> Any:
        return (await client.list_tools()).tools

    tools = {t.name: t for t in with_mcp(control_plane.mcp_url, demo.key, era, list_tools)}
    assert list(tools) == [endpoint.name for endpoint in ENDPOINTS]
    for name, tool in tools.items():
        assert len(tool.description) > 40, name
        assert tool.input_schema["additionalProperties"] is False, name
        assert tool.output_schema["required"] == ["response"], name
        assert tool.annotations.read_only_hint is not None, name
    assert tools["get_deal"].input_schema["properties"]["id"]["minimum"] == 1
    assert tools["list_deals"].input_schema["properties"]["per_page"]["maximum"] == 100
    assert tools["delete_deal"].annotations.destructive_hint is True
    assert "additional_fields" in tools["create_ticket"].input_schema["properties"]
    discovery = tools["get_required_fields_for_deal"].output_schema["properties"]["response"]
    assert {"required", "optional"} <= set(discovery["properties"])


@pytest.mark.parametrize("form", ["legacy", "gateway"])
def test_every_tool_reaches_its_collection_route_with_the_arguments_sent(
    control_plane, make_tenant, simulator, era, form
):
    """Legacy: /api/v3.1 with a bearer token. Gateway: the same resources under /qontak/crm,
    every request HMAC-signed (the simulator verifies each) and acting as the key's user."""
    gateway = form == "gateway"
    demo = make_tenant(gateway=gateway)
    calls = collection_calls()

    async def call_all(client: Client) -> list[Any]:
        return [await client.call_tool(call.tool, call.arguments) for call in calls]

    results = with_mcp(control_plane.mcp_url, demo.key, era, call_all)
    for call, result in zip(calls, results, strict=True):
        assert not result.is_error, (call.tool, result.content)
        assert "response" in result.structured_content, call.tool
        assert json.loads(result.content[0].text) == result.structured_content, call.tool

    recorded = simulator_requests(simulator, demo.account)
    prefix = "/qontak/crm" if gateway else API_PREFIX
    api_requests = [r for r in recorded if r["path"].startswith(prefix)]
    if gateway:  # storing the credential validated it with one signed read first
        probe, *api_requests = api_requests
        assert probe["path"] == "/qontak/crm/contacts/info" and probe["status"] == 200
    assert {r["route"] for r in api_requests} == COLLECTION_ROUTES - {OAUTH_ROUTE}
    assert len(api_requests) == len(calls)
    for call, request in zip(calls, api_requests, strict=True):
        path, query, body = call.sent()
        if gateway:
            path = "/qontak/crm" + gateway_path(path)
            assert request["sso_user"] == GATEWAY_CRM_USER, call.tool
        assert request["route"] == call.route, call.tool
        assert (request["method"], request["path"]) == (call.endpoint.method, path), call.tool
        assert request["query"] == query, call.tool
        assert request["body"] == body, call.tool
        assert request["status"] == 200, call.tool
        documented = documented_query(call.route)
        assert documented.items() <= request["query"].items(), call.tool
    outcomes = {row.outcome for row in audited_calls(demo.tenant, len(calls))}
    assert outcomes == {"ok"}


def test_upstream_errors_say_what_qontak_answered_and_what_to_do(
    control_plane, make_tenant, simulator
):
    demo = make_tenant()

    async def fail(client: Client) -> list[str]:
        calls = [
            ("get_deal", {"id": 424242}),
            ("list_pipeline_stages", {"pipeline_id": 999}),
            ("create_deal", {"crm_pipeline_id": 2, "crm_stage_id": 1}),
        ]
        results = [await client.call_tool(tool, arguments) for tool, arguments in calls]
        assert all(result.is_error for result in results)
        return [text_of(result) for result in results]

    missing_deal, missing_pipeline, invalid_deal = with_mcp(
        control_plane.mcp_url, demo.key, "2026-07-28", fail
    )
    assert missing_deal.startswith("Qontak answered HTTP 404: deal 424242 not found")
    assert "Deal with id 424242 not found" in missing_deal  # Qontak's developer_message
    assert missing_deal.endswith("Call list_deals to find a valid id.")
    assert missing_pipeline.startswith("Qontak answered HTTP 404: pipeline 999 not found")
    assert "list_pipelines" in missing_pipeline
    assert invalid_deal.startswith("Qontak answered HTTP 422: name can't be blank")
    assert "(Qontak says" not in invalid_deal  # the field problems already say it
    assert "call create_deal again" in invalid_deal
    assert "get_required_fields_for_deal" in invalid_deal
    rows = audited_calls(demo.tenant, 3)
    assert [(r.outcome, r.upstream_status) for r in rows] == [
        ("upstream_error", 404),
        ("upstream_error", 404),
        ("upstream_error", 422),
    ]


def test_qontak_failing_on_a_create_warns_the_record_may_exist(
    control_plane, make_tenant, simulator
):
    demo = make_tenant()
    fault = {"fail_next": {"status": 500, "count": 1, "path_prefix": "/api/v3.1/companies"}}
    httpx.post(f"{simulator.url}/_simulator/faults", json=fault).raise_for_status()
    try:

        async def create(client: Client) -> Any:
            return await client.call_tool("create_company", {"name": "Babbage & Co"})

        result = with_mcp(control_plane.mcp_url, demo.key, "2025-11-25", create)
    finally:
        httpx.delete(f"{simulator.url}/_simulator/faults").raise_for_status()
    assert result.is_error
    text = result.content[0].text
    assert text.startswith("Qontak answered HTTP 500")
    assert "may have been created anyway: check with list_companies" in text


INVALID_CALLS: list[tuple[str, dict[str, Any], str]] = [
    ("list_deals", {"per_page": 101}, "per_page"),
    ("get_ticket", {"id": 0}, "id"),
    ("create_product", {"colour": "red"}, "colour"),
    (
        "get_deal_permissions",
        {"id": 1, "permissions": [{"email": "a@b.io", "access_types": ["own"]}]},
        "permissions.0.access_types.0",
    ),
    ("get_deal_permissions", {"id": 1, "permissions": []}, "permissions"),
    ("create_geolocation", {"latitude": 200}, "latitude"),
    ("get_required_fields_for_deal", {"pipeline_id": 2}, "stage_id"),
    ("list_pipeline_stages", {"pipeline_id": "first"}, "pipeline_id"),
    ("create_task_category", {}, "name"),
    ("update_deal_owner", {"id": 3}, "creator_id"),
    ("create_company", {"name": "   "}, "name"),
    ("list_task_categories", {"page": 2}, "page"),
]


def test_invalid_arguments_name_the_field_and_never_reach_qontak(
    control_plane, make_tenant, simulator
):
    demo = make_tenant()

    async def call_all(client: Client) -> list[Any]:
        return [await client.call_tool(tool, arguments) for tool, arguments, _ in INVALID_CALLS]

    results = with_mcp(control_plane.mcp_url, demo.key, "2026-07-28", call_all)
    for (tool, _, field), result in zip(INVALID_CALLS, results, strict=True):
        assert result.is_error, tool
        assert result.content[0].text.startswith(f"invalid arguments for {tool}: {field}:"), (
            result.content[0].text
        )
    assert not [r for r in simulator_requests(simulator, demo.account) if "/api/" in r["path"]]
    outcomes = [row.outcome for row in audited_calls(demo.tenant, len(INVALID_CALLS))]
    assert outcomes == ["invalid_input"] * len(INVALID_CALLS)


@pytest.mark.parametrize("call", collection_calls(), ids=lambda call: call.tool)
def test_every_documented_example_response_passes_through_its_tool(call):
    """Qontak's own example answer for the route, as the tool would receive it: no error, and
    a result its declared outputSchema accepts (the client validates it)."""
    from jsonschema import validate

    from mcpserver import pipeline
    from qontak.client import QontakResponse

    example = requests_of(call.route)[0].example
    endpoint = call.endpoint
    data = endpoint.input_model.model_validate(call.arguments)
    completed = pipeline._completed(endpoint, data, QontakResponse(status=200, payload=example))
    assert not completed.result.is_error
    validate(completed.result.structured, endpoint.output_schema)
