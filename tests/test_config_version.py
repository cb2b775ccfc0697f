"""Workers cache keys and policies, and still apply every committed change on the next call."""

from __future__ import annotations

import io
import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.core.management import call_command

from controlplane import config_version
from controlplane.config_version import VersionedCache
from controlplane.devstack import free_port, wait_until_ready
from controlplane.models import Tenant
from controlplane.tenants import PREFIX_LENGTH
from tests.conftest import ControlPlaneServer, audited_calls, start_control_plane

LIST_TOOLS = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
# Enough separate connections that both workers of a two-worker server answer some.
CALLS_PER_CHECK = 12


def _post(server: ControlPlaneServer, key: str, body: dict[str, Any]) -> httpx.Response:
    """One request on its own connection, so a multi-worker server spreads them out."""
    return httpx.post(
        server.mcp_url,
        content=json.dumps(body),
        headers={
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": "2025-11-25",
        },
        timeout=30,
    )


def _statuses(server: ControlPlaneServer, key: str) -> set[int]:
    return {_post(server, key, LIST_TOOLS).status_code for _ in range(CALLS_PER_CHECK)}


def _tool_name_sets(server: ControlPlaneServer, key: str) -> list[set[str]]:
    return [
        {tool["name"] for tool in _post(server, key, LIST_TOOLS).json()["result"]["tools"]}
        for _ in range(CALLS_PER_CHECK)
    ]


def _call(server: ControlPlaneServer, key: str, tool: str, arguments: dict[str, Any]) -> Any:
    body = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": tool, "arguments": arguments},
    }
    return _post(server, key, body).json()["result"]


@pytest.fixture
def workers(log_dir, openbao, simulator, transactional_db) -> Iterator[ControlPlaneServer]:
    """Two workers sharing Redis (one worker on the embedded defaults, which have no shared
    cache to announce changes through)."""
    server = start_control_plane(
        log_dir,
        openbao.url,
        openbao.extra["token"],
        simulator.url,
        workers=2 if settings.REDIS_URL else 1,
    )
    yield server
    server.process.stop()


def test_a_revoked_key_is_refused_on_the_next_call_by_every_worker(workers, make_tenant):
    demo = make_tenant()
    assert _statuses(workers, demo.key) == {200}  # every worker now holds the key
    call_command("revoke_api_key", demo.key[:PREFIX_LENGTH], stdout=io.StringIO())
    assert _statuses(workers, demo.key) == {401}


def test_a_deactivated_tenant_is_refused_on_the_next_call_by_every_worker(workers, make_tenant):
    demo = make_tenant()
    assert _statuses(workers, demo.key) == {200}
    tenant = Tenant.objects.get(pk=demo.tenant.pk)
    tenant.is_active = False
    tenant.save()
    assert _statuses(workers, demo.key) == {401}


def test_a_tool_policy_edit_applies_on_the_next_call_by_every_worker(workers, make_tenant):
    demo = make_tenant()
    assert all("delete_contact" in names for names in _tool_name_sets(workers, demo.key))
    call_command(
        "set_tool_access", demo.tenant.slug, "delete_contact", "deny", stdout=io.StringIO()
    )
    assert not any("delete_contact" in names for names in _tool_name_sets(workers, demo.key))
    call_command(
        "set_tool_access", demo.tenant.slug, "delete_contact", "allow", stdout=io.StringIO()
    )
    assert all("delete_contact" in names for names in _tool_name_sets(workers, demo.key))


def test_a_rate_limit_edit_applies_on_the_next_call(workers, make_tenant):
    demo = make_tenant()
    assert not _call(workers, demo.key, "get_contact", {"id": 1})["isError"]
    call_command("set_rate_limit", demo.tenant.slug, "1/d", stdout=io.StringIO())
    assert not _call(workers, demo.key, "get_contact", {"id": 1})["isError"]  # 1 of 1/d
    refused = _call(workers, demo.key, "get_contact", {"id": 1})
    assert refused["isError"]
    assert "rate limit 1/d reached" in refused["content"][0]["text"]


def test_a_copy_is_dropped_when_the_version_changes_or_it_grows_old(monkeypatch):
    copies: VersionedCache[str, int] = VersionedCache()
    copies.put("key", "v1", 1)
    assert copies.get("key", "v1") == 1
    assert copies.get("key", "v2") is None
    assert copies.get("key", None) is None  # no shared version: never trust a copy
    monkeypatch.setattr(config_version, "MAX_AGE_SECONDS", 0.05)
    time.sleep(0.1)
    assert copies.get("key", "v1") is None


@pytest.fixture
def private_redis(tmp_path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A Redis of this test's own, so it can be stopped without disturbing the suite."""
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout != (
        b"PONG\n"
    ):
        assert time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.05)
    yield url, process
    process.kill()
    process.wait()


def test_with_redis_down_keys_are_checked_in_the_database_and_calls_are_refused_clearly(
    log_dir, openbao, simulator, make_tenant, private_redis
):
    redis_url, redis_process = private_redis
    server = start_control_plane(
        log_dir, openbao.url, openbao.extra["token"], simulator.url, REDIS_URL=redis_url
    )
    try:
        wait_until_ready(server.process, f"{server.url}/healthz")
        demo = make_tenant()
        assert not _call(server, demo.key, "get_contact", {"id": 1})["isError"]
        redis_process.kill()
        redis_process.wait()

        refused = _call(server, demo.key, "get_contact", {"id": 1})
        assert refused["isError"]
        assert refused["content"][0]["text"] == (
            "the control plane cannot reach its rate-limit counters (Redis); retry shortly"
        )
        # The version cannot be read, so the worker asks the database: revocation still holds.
        call_command("revoke_api_key", demo.key[:PREFIX_LENGTH], stdout=io.StringIO())
        assert _post(server, demo.key, LIST_TOOLS).status_code == 401
    finally:
        server.process.stop()
    outcomes = [row.outcome for row in audited_calls(demo.tenant, 2)]
    assert outcomes == ["ok", "unavailable"]
