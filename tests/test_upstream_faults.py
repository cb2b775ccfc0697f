"""A slow, failing or rate-limiting Qontak, in-process against the simulator over HTTP: one
deadline per call, retries that stop, and a pause every call of the tenant honours."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from controlplane import backoff
from mcpserver import pipeline
from tests.calls import TenantWithKey, in_one_loop, in_process_caller_of
from tests.servers import set_simulator_faults, simulator_requests


def _api_requests(simulator: Any, demo: TenantWithKey) -> list[dict[str, Any]]:
    return [r for r in simulator_requests(simulator, demo.account) if "/api/" in r["path"]]


@pytest.fixture(params=["redis", "local"])
def pause_store(request, private_redis, settings, monkeypatch):
    """Pauses shared through a Redis, or kept by this process alone (no REDIS_URL)."""
    settings.REDIS_URL = private_redis.url if request.param == "redis" else ""
    monkeypatch.setattr(backoff, "_local_pauses", {})
    monkeypatch.setattr(backoff, "_local_failures", {})
    return request.param


def test_a_slow_qontak_gets_one_deadline_for_the_whole_call(make_tenant, own_simulator, settings):
    settings.TOOL_CALL_DEADLINE = 1.0
    demo = make_tenant(qontak=own_simulator)
    caller = in_process_caller_of(demo)
    set_simulator_faults(own_simulator, latency_ms=3000)
    started = time.monotonic()
    result = in_one_loop(lambda: pipeline.run_tool_call(caller, "get_contact", {"id": 1}))
    assert time.monotonic() - started < 2.5
    assert result.result.is_error
    assert result.result.text.startswith("Qontak did not answer within 1 s")
    assert "Retry in a minute" in result.result.text


def test_retries_of_a_failing_read_stop_at_the_deadline(make_tenant, own_simulator, settings):
    settings.TOOL_CALL_DEADLINE = 1.0
    demo = make_tenant(qontak=own_simulator)
    caller = in_process_caller_of(demo)
    set_simulator_faults(own_simulator, latency_ms=400, fail_next={"status": 503, "count": 10})
    started = time.monotonic()
    done = in_one_loop(lambda: pipeline.run_tool_call(caller, "get_contact", {"id": 1}))
    assert time.monotonic() - started < 2.0
    assert done.result.is_error
    assert len(_api_requests(own_simulator, demo)) <= 2


def test_a_retry_after_pauses_every_call_of_the_tenant(make_tenant, own_simulator, pause_store):
    demo = make_tenant(qontak=own_simulator)
    set_simulator_faults(own_simulator, fail_next={"status": 429, "count": 1, "retry_after": 2})
    caller = in_process_caller_of(demo)

    async def scenario() -> list[pipeline.ToolCallDone]:
        limited = await pipeline.run_tool_call(caller, "create_note", {"note": "n"})
        paused = await pipeline.run_tool_call(caller, "get_contact", {"id": 1})
        await asyncio.sleep(2.1)
        after = await pipeline.run_tool_call(caller, "get_contact", {"id": 1})
        return [limited, paused, after]

    limited, paused, after = in_one_loop(scenario)
    assert limited.result.text.startswith("Qontak answered HTTP 429")
    assert paused.result.is_error
    assert "Qontak is rate limiting this account (HTTP 429)" in paused.result.text
    assert "retry in 2 s" in paused.result.text
    assert not after.result.is_error
    assert [r["method"] for r in _api_requests(own_simulator, demo)] == ["POST", "GET"]


def test_repeated_failures_pause_the_tenant_instead_of_retrying_on(
    make_tenant, own_simulator, pause_store
):
    demo = make_tenant(qontak=own_simulator)
    set_simulator_faults(own_simulator, fail_next={"status": 503, "count": 50})
    caller = in_process_caller_of(demo)

    async def scenario() -> list[pipeline.ToolCallDone]:
        return [await pipeline.run_tool_call(caller, "get_contact", {"id": 1}) for _ in range(4)]

    results = in_one_loop(scenario)
    assert all(done.result.is_error for done in results)
    assert "calls to it are paused" in results[-1].result.text
    assert len(_api_requests(own_simulator, demo)) == backoff.BREAKER_FAILURES


def test_a_reset_connection_is_retried_for_a_read_but_not_for_a_create(make_tenant, own_simulator):
    demo = make_tenant(qontak=own_simulator)
    caller = in_process_caller_of(demo)

    async def scenario() -> list[pipeline.ToolCallDone]:
        set_simulator_faults(own_simulator, fail_next={"reset": True, "count": 1})
        read = await pipeline.run_tool_call(caller, "get_contact", {"id": 1})
        set_simulator_faults(own_simulator, fail_next={"reset": True, "count": 1})
        create = await pipeline.run_tool_call(caller, "create_note", {"note": "n"})
        return [read, create]

    read, create = in_one_loop(scenario)
    assert not read.result.is_error
    assert create.result.is_error
    assert create.result.text.startswith("cannot reach Qontak: the connection was reset")
    assert "may have been created anyway: check with list_notes" in create.result.text
    methods = [r["method"] for r in _api_requests(own_simulator, demo)]
    assert methods == ["GET", "GET", "POST"]


def test_a_host_dropped_from_the_allowed_list_receives_nothing_more(make_tenant, settings):
    demo = make_tenant()
    caller = in_process_caller_of(demo)
    settings.QONTAK_ALLOWED_HOSTS = ["app.qontak.com"]  # the simulator's host is gone
    done = in_one_loop(lambda: pipeline.run_tool_call(caller, "get_contact", {"id": 1}))
    assert done.result.is_error
    assert "no longer allowed" in done.result.text and "nothing was sent" in done.result.text
    assert demo.tenant.tool_calls.get().outcome == "unavailable"
