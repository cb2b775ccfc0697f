"""Workers cache keys and policies, and still apply every committed change on the next call."""

from __future__ import annotations

import asyncio
import io
import json
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.core.management import call_command

from controlplane import config_version
from controlplane.config_version import VersionedCache
from controlplane.models import Tenant
from controlplane.tenants import PREFIX_LENGTH
from devtools.devstack import wait_until_ready
from tests.calls import audited_calls
from tests.servers import ControlPlaneServer, PrivateRedis, start_control_plane

WATCH_LIVE = "following configuration changes"
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


def test_a_workers_copies_stay_within_worker_cache_entries(settings):
    """With many tenants, keys and people a worker keeps at most WORKER_CACHE_ENTRIES copies
    of each kind, the oldest written dropped first (they are read again when needed)."""
    settings.WORKER_CACHE_ENTRIES = 3
    copies: VersionedCache[str, int] = VersionedCache()
    for n in range(10):
        copies.put(f"k{n}", "v1", n)
    assert len(copies) == 3
    assert [copies.get(f"k{n}", "v1") for n in range(10)] == [None] * 7 + [7, 8, 9]
    copies.put("k7", "v1", 70)  # written again: now the newest
    copies.put("k10", "v1", 10)
    assert (copies.get("k8", "v1"), copies.get("k7", "v1"), len(copies)) == (None, 70, 3)


def _log_count(server: ControlPlaneServer, event: str) -> int:
    return server.process.log_path.read_text().count(event)


def _wait_for_log(server: ControlPlaneServer, event: str, count: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while _log_count(server, event) < count:
        assert time.monotonic() < deadline, f"no {count} x '{event}' in {server.process.log_path}"
        time.sleep(0.05)


def test_with_redis_down_keys_are_checked_in_the_database_and_calls_are_refused_clearly(
    log_dir, openbao, simulator, make_tenant, private_redis
):
    server = start_control_plane(
        log_dir, openbao.url, openbao.extra["token"], simulator.url, REDIS_URL=private_redis.url
    )
    try:
        wait_until_ready(server.process, f"{server.url}/healthz")
        demo = make_tenant()
        assert not _call(server, demo.key, "get_contact", {"id": 1})["isError"]
        private_redis.stop()

        refused = _call(server, demo.key, "get_contact", {"id": 1})
        assert refused["isError"]
        assert refused["content"][0]["text"] == (
            "the control plane cannot reach its rate-limit counters (Redis); retry shortly"
        )
        # The subscription is gone, so the worker asks the database: revocation still holds.
        call_command("revoke_api_key", demo.key[:PREFIX_LENGTH], stdout=io.StringIO())
        assert _post(server, demo.key, LIST_TOOLS).status_code == 401
    finally:
        server.process.stop()
    outcomes = [row.outcome for row in audited_calls(demo.tenant, 2)]
    assert outcomes == ["ok", "unavailable"]


def test_a_change_made_while_redis_was_down_applies_once_the_worker_resubscribes(
    log_dir, openbao, simulator, make_tenant, private_redis
):
    server = start_control_plane(
        log_dir, openbao.url, openbao.extra["token"], simulator.url, REDIS_URL=private_redis.url
    )
    try:
        _wait_for_log(server, WATCH_LIVE, 1)
        demo = make_tenant()
        assert _post(server, demo.key, LIST_TOOLS).status_code == 200  # the key is now cached
        private_redis.stop()
        _wait_for_log(server, "config_watch_lost", 1)
        # Announced to nobody: Redis is down. The worker's copy of the key is still there.
        call_command("revoke_api_key", demo.key[:PREFIX_LENGTH], stdout=io.StringIO())
        private_redis.start()
        _wait_for_log(server, WATCH_LIVE, 2)
        assert _post(server, demo.key, LIST_TOOLS).status_code == 401
    finally:
        server.process.stop()


async def _until(condition: Callable[[], bool]) -> None:
    """Poll `condition` for up to 10 s."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met within 10 s")


async def test_each_announcement_gives_the_worker_a_new_version(tmp_path):
    """Through a Redis that requires a password, as production ones do."""
    secured = PrivateRedis(tmp_path, password="s3cret pass")
    secured.start()
    watcher = config_version.ChangeWatcher(secured.url, "changes")
    task = asyncio.create_task(watcher.run())
    try:
        await _until(lambda: watcher.version is not None)
        seen = {watcher.version}
        for _ in range(3):
            secured.publish_change()
            await _until(lambda: watcher.version not in seen)
            seen.add(watcher.version)
        assert len(seen) == 4
    finally:
        task.cancel()
        secured.stop()


async def test_a_silent_redis_stops_the_worker_trusting_its_copies(private_redis, monkeypatch):
    """A paused Redis keeps the connection open but answers nothing, like a lost network."""
    monkeypatch.setattr(config_version, "HEARTBEAT_SECONDS", 0.2)
    watcher = config_version.ChangeWatcher(private_redis.url, "changes")
    task = asyncio.create_task(watcher.run())
    assert private_redis.process is not None
    try:
        await _until(lambda: watcher.version is not None)
        private_redis.process.send_signal(signal.SIGSTOP)
        await _until(lambda: watcher.version is None)
        private_redis.process.send_signal(signal.SIGCONT)
        await _until(lambda: watcher.version is not None)
    finally:
        private_redis.process.send_signal(signal.SIGCONT)
        task.cancel()
