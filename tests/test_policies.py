"""Policies on every tool call, in every worker, and the audit trail they leave."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import Client as DjangoClient
from django.test import override_settings
from django.utils import timezone
from mcp import Client

from controlplane import policies
from controlplane.models import Tenant, ToolCall
from controlplane.tenants import api_key_issue, tenant_create
from mcpserver import pipeline
from qontak import endpoints
from tests.calls import (
    audited_calls,
    in_process_caller,
    mcp_client,
    run_tool_call_and_drain,
    with_mcp,
)
from tests.servers import set_simulator_faults, simulator_requests, start_control_plane


def _api_requests(simulator, account: str) -> list[dict[str, Any]]:
    return [r for r in simulator_requests(simulator, account) if r["path"].startswith("/api/")]


def _call_many(url: str, key: str, tool: str, arguments: dict[str, Any], times: int) -> list[Any]:
    """Each call on its own connection, so a multi-worker server spreads them out."""

    async def one() -> Any:
        async with mcp_client(url, key, "2026-07-28") as client:
            return await client.call_tool(tool, arguments)

    async def all_calls() -> list[Any]:
        return [await one() for _ in range(times)]

    return asyncio.run(all_calls())


def test_a_new_tenant_gets_120_calls_per_minute():
    policy = policies.TenantPolicy(tool_rules=(), rate_rules=(), qontak_ceiling="600/m")
    assert [rule.rate for rule in policy.rates_for("get_contact")] == ["120/m"]


def test_rate_limit_holds_across_workers(log_dir, openbao, simulator, make_tenant):
    """N calls allowed, N+1 refused, with two workers sharing Redis (one worker without it)."""
    workers = 2 if settings.REDIS_URL else 1
    server = start_control_plane(
        log_dir, openbao.url, openbao.extra["token"], simulator.url, workers=workers
    )
    try:
        demo = make_tenant()
        call_command("set_rate_limit", demo.tenant.slug, "5/d", stdout=io.StringIO())
        results = _call_many(server.mcp_url, demo.key, "get_contact", {"id": 1}, 6)
    finally:
        server.process.stop()
    assert [r.is_error for r in results] == [False] * 5 + [True]
    message = results[-1].content[0].text
    assert "rate limit 5/d reached (all tools, this tenant)" in message
    assert "retry in" in message
    assert len(_api_requests(simulator, demo.account)) == 5
    outcomes = [row.outcome for row in audited_calls(demo.tenant, 6)]
    assert sorted(outcomes) == ["ok"] * 5 + ["rate_limited"]


def test_per_key_and_per_tool_limits_count_separately(control_plane, make_tenant):
    demo = make_tenant()
    other_key = api_key_issue(tenant=demo.tenant).key
    call_command("set_rate_limit", demo.tenant.slug, "2/d", "--per-key", stdout=io.StringIO())
    call_command(
        "set_rate_limit", demo.tenant.slug, "1/d", "--tool", "list_contacts", stdout=io.StringIO()
    )
    first_key = _call_many(control_plane.mcp_url, demo.key, "get_contact", {"id": 1}, 3)
    assert [r.is_error for r in first_key] == [False, False, True]
    assert "this API key" in first_key[-1].content[0].text
    listing = _call_many(control_plane.mcp_url, other_key, "list_contacts", {}, 2)
    assert [r.is_error for r in listing] == [False, True]
    assert "tool list_contacts" in listing[-1].content[0].text


def test_qontak_request_ceiling_counts_retries(control_plane, make_tenant, log_dir):
    from devtools.devstack import start_simulator

    qontak = start_simulator(log_dir)
    try:
        demo = make_tenant(qontak=qontak)
        Tenant.objects.filter(pk=demo.tenant.pk).update(qontak_request_ceiling="3/d")
        set_simulator_faults(qontak, fail_next={"status": 503, "count": 1})
        results = _call_many(control_plane.mcp_url, demo.key, "get_contact", {"id": 1}, 3)
    finally:
        qontak.stop()
    # First call: 503 then a retry (two requests), second call: one; the third would exceed.
    assert [r.is_error for r in results] == [False, False, True]
    assert "requests sent to this tenant's Qontak account" in results[-1].content[0].text


def _tool_names(url: str, key: str) -> set[str]:
    async def names(client: Client) -> set[str]:
        return {tool.name for tool in (await client.list_tools()).tools}

    return with_mcp(url, key, "2026-07-28", names)


def test_denied_tool_is_absent_from_tools_list_and_refused_and_allowing_it_needs_no_restart(
    control_plane, make_tenant, simulator
):
    demo = make_tenant()
    call_command(
        "set_tool_access", demo.tenant.slug, "delete_contact", "deny", stdout=io.StringIO()
    )
    assert "delete_contact" not in _tool_names(control_plane.mcp_url, demo.key)
    refused = _call_many(control_plane.mcp_url, demo.key, "delete_contact", {"id": 1}, 1)[0]
    assert refused.is_error
    assert refused.content[0].text == "tool 'delete_contact' is not available to this API key"
    assert _api_requests(simulator, demo.account) == []
    assert [row.outcome for row in audited_calls(demo.tenant, 1)] == ["denied"]

    call_command(
        "set_tool_access", demo.tenant.slug, "delete_contact", "allow", stdout=io.StringIO()
    )
    assert "delete_contact" in _tool_names(control_plane.mcp_url, demo.key)  # the next call
    allowed = _call_many(control_plane.mcp_url, demo.key, "delete_contact", {"id": 1}, 1)[0]
    assert not allowed.is_error


def test_deny_all_with_an_exception_and_per_key_rules(control_plane, make_tenant):
    demo = make_tenant()
    narrow = api_key_issue(tenant=demo.tenant)
    out = io.StringIO()
    call_command("set_tool_access", demo.tenant.slug, "*", "deny", stdout=out)
    call_command("set_tool_access", demo.tenant.slug, "get_contact", "allow", stdout=out)
    call_command(
        "set_tool_access",
        demo.tenant.slug,
        "list_contacts",
        "allow",
        "--key",
        narrow.api_key.prefix,
        stdout=out,
    )
    assert _tool_names(control_plane.mcp_url, demo.key) == {"get_contact"}
    assert _tool_names(control_plane.mcp_url, narrow.key) == {"get_contact", "list_contacts"}


def test_read_only_key_sees_and_calls_only_read_only_tools(control_plane, make_tenant, simulator):
    demo = make_tenant()
    reader = api_key_issue(tenant=demo.tenant, read_only=True)
    names = _tool_names(control_plane.mcp_url, reader.key)
    read_only = {e.name for e in endpoints.ENDPOINTS if e.annotations.read_only_hint}
    assert names == read_only
    assert "create_contact" not in names and "list_contacts" in names
    refused = _call_many(
        control_plane.mcp_url, reader.key, "create_contact", {"first_name": "X"}, 1
    )
    assert refused[0].is_error
    assert _api_requests(simulator, demo.account) == []


def test_every_outcome_leaves_exactly_one_audit_row_and_export_round_trips(
    control_plane, make_tenant, log_dir
):
    demo = make_tenant()
    no_token = tenant_create(slug=f"nt-{uuid.uuid4().hex[:6]}")
    no_token_key = api_key_issue(tenant=no_token).key
    call_command(
        "set_tool_access", demo.tenant.slug, "delete_contact", "deny", stdout=io.StringIO()
    )
    call_command(
        "set_rate_limit", demo.tenant.slug, "1/d", "--tool", "list_contacts", stdout=io.StringIO()
    )
    url = control_plane.mcp_url

    async def calls(client: Client) -> list[Any]:
        return [
            await client.call_tool("get_contact", {"id": 1}),  # ok
            await client.call_tool("delete_contact", {"id": 1}),  # denied
            await client.call_tool("list_contacts", {}),  # ok
            await client.call_tool("list_contacts", {}),  # rate_limited
            await client.call_tool("get_contact", {"id": "one"}),  # invalid_input
            await client.call_tool("get_contact", {"id": 987654}),  # upstream_error
        ]

    with_mcp(url, demo.key, "2025-11-25", calls)
    with_mcp(
        url, no_token_key, "2025-11-25", lambda client: client.call_tool("get_contact", {"id": 1})
    )

    rows = audited_calls(demo.tenant, 6)
    assert [(r.tool, r.outcome) for r in rows] == [
        ("get_contact", "ok"),
        ("delete_contact", "denied"),
        ("list_contacts", "ok"),
        ("list_contacts", "rate_limited"),
        ("get_contact", "invalid_input"),
        ("get_contact", "upstream_error"),
    ]
    assert rows[-1].upstream_status == 404
    assert all(r.request_id and r.key_prefix == demo.key[:13] and r.latency_ms > 0 for r in rows)
    unavailable = audited_calls(no_token, 1)
    assert [row.outcome for row in unavailable] == ["unavailable"]
    assert "set_refresh_token" in unavailable[0].message

    exported = io.StringIO()
    call_command("export_audit", "--tenant", demo.tenant.slug, stdout=exported)
    lines = [json.loads(line) for line in exported.getvalue().splitlines()]
    assert [(line["tool"], line["outcome"], line["request_id"]) for line in lines] == [
        (r.tool, r.outcome, r.request_id) for r in rows
    ]
    assert lines[-1]["upstream_status"] == 404


@pytest.mark.django_db(transaction=True)
def test_an_unexpected_failure_is_audited_as_internal_error(monkeypatch):
    caller = in_process_caller("ie", "req-internal")
    tenant = caller.tenant

    def explode(endpoint: Any, data: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(pipeline, "_validated_input", explode)
    result = asyncio.run(run_tool_call_and_drain(caller, "get_contact", {"id": 1}))
    assert result.is_error
    assert result.text == "internal error while running get_contact; reference req-internal"
    row = ToolCall.objects.get(tenant=tenant)
    assert (row.outcome, row.request_id) == ("internal_error", "req-internal")


@pytest.mark.django_db
def test_prune_audit_deletes_only_rows_older_than_the_retention():
    tenant = tenant_create(slug="prune")
    for age in (1, 89, 91, 400):
        ToolCall.objects.create(
            tenant=tenant,
            created_at=timezone.now() - timedelta(days=age),
            key_prefix="qmcp_x",
            tool="get_contact",
            arguments_digest="0" * 64,
            outcome="ok",
            latency_ms=1,
            request_id=str(age),
        )
    out = io.StringIO()
    call_command("prune_audit", "--dry-run", stdout=out)
    assert "Would delete 2 audit rows" in out.getvalue()
    assert ToolCall.objects.count() == 4
    call_command("prune_audit", stdout=out)
    assert sorted(ToolCall.objects.values_list("request_id", flat=True)) == ["1", "89"]
    call_command("prune_audit", "--older-than", "30", stdout=out)
    assert list(ToolCall.objects.values_list("request_id", flat=True)) == ["1"]


def test_security_events_are_json_lines_with_event_types(control_plane, make_tenant, caplog):
    demo = make_tenant()
    caplog.set_level(logging.INFO, logger="controlplane.policies")
    call_command("set_tool_access", demo.tenant.slug, "get_contact", "deny", stdout=io.StringIO())
    assert any(getattr(r, "event", None) == "policy_changed" for r in caplog.records)
    _call_many(control_plane.mcp_url, demo.key, "get_contact", {"id": 1}, 1)
    httpx.post(control_plane.mcp_url, json={}, headers={"Authorization": "Bearer qmcp_bogus"})
    events = [json.loads(line) for line in control_plane.log_text().splitlines() if line[:1] == "{"]
    denied = [e for e in events if e.get("event") == "tool_denied"]
    assert denied[-1]["tenant"] == demo.tenant.slug
    assert denied[-1]["tool"] == "get_contact" and denied[-1]["request_id"]
    failed = [e for e in events if e.get("event") == "auth_failed"]
    assert failed[-1]["reason"] == "invalid_key"
    assert "qmcp_bogus" not in control_plane.log_text()


@pytest.mark.django_db
def test_metrics_are_served_to_loopback_or_with_the_token():
    client = DjangoClient(REMOTE_ADDR="127.0.0.1")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert b"qmcp_tool_calls_total" in response.content
    assert DjangoClient(REMOTE_ADDR="10.1.2.3").get("/metrics").status_code == 403
    with override_settings(METRICS_TOKEN="m-secret"):
        assert client.get("/metrics").status_code == 403
        allowed = client.get("/metrics", headers={"Authorization": "Bearer m-secret"})
        assert allowed.status_code == 200


def test_metrics_count_calls_by_tool_and_outcome(control_plane, make_tenant):
    demo = make_tenant()
    _call_many(control_plane.mcp_url, demo.key, "get_contact", {"id": 1}, 2)
    body = httpx.get(control_plane.url + "/metrics").text
    line = next(
        line
        for line in body.splitlines()
        if line.startswith('qmcp_tool_calls_total{outcome="ok",tool="get_contact"}')
    )
    assert float(line.split()[-1]) >= 2
    assert "qmcp_tool_call_latency_seconds_bucket" in body


def test_an_answer_that_breaks_the_declared_output_schema_is_an_upstream_error():
    from controlplane.errors import UpstreamError
    from qontak.client import QontakResponse

    endpoint = endpoints.ENDPOINTS_BY_NAME["list_contacts"]
    data = endpoint.input_model.model_validate({})
    odd = QontakResponse(status=200, payload={"response": {"id": 1}})
    with pytest.raises(UpstreamError, match="unexpected shape"):
        pipeline._completed(endpoint, data, odd)
    fine = QontakResponse(status=200, payload={"response": [{"id": 1}]})
    assert pipeline._completed(endpoint, data, fine).result.structured == {"response": [{"id": 1}]}
