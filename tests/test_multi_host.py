"""Two hosts behind a real load balancer: two control-plane processes (each with its own audit
spool, as two machines would have) behind Debian's HAProxy, sharing one PostgreSQL, Redis and
OpenBao. What one host learns (a revoked key, a policy, a rate count, a fresh token, a decided
approval, a call for the live feed) must hold on the other, whichever host the balancer picks;
a host that loses Redis or its database must leave the rotation while the other keeps serving;
and when no host is ready the balancer still sends calls to every host, which serve them from
their copies.

HAProxy balances round robin and names the host of each answer in its statistics, so each test
also shows that both hosts answered. A host's database is cut by stopping a PgBouncer of the
test's own that stands between it and the shared PostgreSQL.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import httpx2
import pytest
import websockets
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client as DjangoClient
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from controlplane.models import Approval
from controlplane.tenants import PREFIX_LENGTH
from devtools.devstack import ManagedProcess, start_simulator
from devtools.pgbouncer import PgBouncer
from tests.calls import ERAS, audit_barrier, audited_calls, with_mcp
from tests.servers import (
    ControlPlaneServer,
    LoadBalancer,
    PrivateRedis,
    private_pooler,
    simulator_account,
    simulator_requests,
    start_control_plane,
    start_haproxy,
    tenant_secret,
)

T = TypeVar("T")

pytestmark = [
    pytest.mark.skipif(
        not (settings.REDIS_URL and settings.DATABASES["default"]["ENGINE"].endswith("postgresql")),
        reason="hosts share PostgreSQL and Redis: runs in the PostgreSQL+Redis run of .ci/run",
    ),
    pytest.mark.timeout(300),
]

ERA = "2026-07-28"
CONTACT = {"id": 1}


@dataclass
class Hosts:
    a: ControlPlaneServer
    b: ControlPlaneServer
    balancer: LoadBalancer


@pytest.fixture(scope="module")
def two_hosts(
    django_db_setup: None,
    django_db_blocker: Any,
    log_dir: Path,
    openbao: ManagedProcess,
    simulator: ManagedProcess,
) -> Iterator[Hosts]:
    with django_db_blocker.unblock():
        a = start_control_plane(log_dir, openbao.url, openbao.extra["token"], simulator.url)
        b = start_control_plane(log_dir, openbao.url, openbao.extra["token"], simulator.url)
    balancer = start_haproxy(log_dir, {"a": a.url, "b": b.url})
    yield Hosts(a, b, balancer)
    balancer.process.stop()
    a.process.stop()
    b.process.stop()


@pytest.fixture
def hosts(two_hosts: Hosts, transactional_db: None) -> Iterator[Hosts]:
    """The two hosts; the test ends once each has written the audit rows of its calls (a row
    written after the tables are emptied would fail its foreign keys)."""
    barriers = [audit_barrier(two_hosts.a), audit_barrier(two_hosts.b)]
    yield two_hosts
    for wait in barriers:
        wait()


def served(balancer: LoadBalancer, action: Callable[[], T]) -> tuple[T, set[str]]:
    """What `action` returned, and the hosts that answered its requests through `balancer`
    (HAProxy's per-host answer counts)."""
    before = balancer.answers()
    result = action()
    after = balancer.answers()
    return result, {host for host, count in after.items() if count > before.get(host, 0)}


@dataclass
class Called:
    result: Any
    host: str  # the host that answered the tools/call request


async def acall(url: str, key: str, tool: str, arguments: dict[str, Any], era: str = ERA) -> Called:
    """One tool call with the official client, noting which host answered the tools/call
    request itself (the client sends others around it, which round robin may give the other
    host)."""
    hosts: list[str] = []

    async def note_host(response: httpx2.Response) -> None:
        if b'"tools/call"' in response.request.content:
            hosts.append(response.headers.get("x-served-by", "?"))

    async with (
        httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {key}"},
            timeout=httpx2.Timeout(30, read=60),
            event_hooks={"response": [note_host]},
        ) as http,
        Client(streamable_http_client(url, http_client=http), mode=ERAS[era]) as client,
    ):
        result = await client.call_tool(tool, arguments)
    assert len(hosts) == 1, hosts
    return Called(result, hosts[0])


def call(url: str, key: str, tool: str, arguments: dict[str, Any], era: str = ERA) -> Called:
    return asyncio.run(acall(url, key, tool, arguments, era))


def text(result: Any) -> str:
    return " ".join(block.text for block in result.content)


def refused_status(url: str, key: str) -> str:
    """How the official client ends when the key is refused ("401" expected)."""

    async def list_tools(client: Client) -> Any:
        return await client.list_tools()

    try:
        with_mcp(url, key, ERA, list_tools)
    except BaseException as exc:  # the client raises an exception group around the 401
        return "401" if "401" in repr(exc) or "Unauthorized" in repr(exc) else repr(exc)
    return "accepted"


def until_both_answer(url: str, key: str, expected: set[str], limit: int = 10) -> list[Called]:
    """Successful get_contact calls through the balancer at `url` until each host of
    `expected` has served one (at most `limit`)."""
    calls: list[Called] = []
    while {done.host for done in calls} != expected and len(calls) < limit:
        calls.append(call(url, key, "get_contact", CONTACT))
        assert not calls[-1].result.is_error, text(calls[-1].result)
    assert {done.host for done in calls} == expected
    return calls


def test_the_balancer_spreads_calls_over_both_hosts_in_either_era(hosts, make_tenant):
    demo = make_tenant("spread")
    calls = [
        call(hosts.balancer.mcp_url, demo.key, "get_contact", CONTACT, era)
        for era in ("2025-11-25", ERA) * 3
    ]
    assert [done.result.is_error for done in calls] == [False] * 6
    assert {done.host for done in calls} == {"a", "b"}
    # Each process logged MCP requests of its own: two hosts, not one behind two names.
    assert "POST /mcp" in hosts.a.log_text() and "POST /mcp" in hosts.b.log_text()


def test_a_revoked_key_is_refused_by_whichever_host_answers(hosts, make_tenant):
    demo = make_tenant("revoke")
    until_both_answer(hosts.balancer.mcp_url, demo.key, {"a", "b"})  # each holds the key now

    call_command("revoke_api_key", demo.key[:PREFIX_LENGTH], stdout=io.StringIO())

    outcomes, answered = served(
        hosts.balancer, lambda: [refused_status(hosts.balancer.mcp_url, demo.key) for _ in range(4)]
    )
    assert outcomes == ["401"] * 4
    assert answered == {"a", "b"}


def test_a_tool_denied_by_a_policy_edit_is_refused_on_both_hosts(hosts, make_tenant):
    demo = make_tenant("deny")
    allowed = until_both_answer(hosts.balancer.mcp_url, demo.key, {"a", "b"})

    call_command("set_tool_access", demo.tenant.slug, "get_contact", "deny", stdout=io.StringIO())

    denied: list[Called] = []
    while {done.host for done in denied} != {"a", "b"} and len(denied) < 10:
        denied.append(call(hosts.balancer.mcp_url, demo.key, "get_contact", CONTACT))
    assert {done.host for done in denied} == {"a", "b"}
    assert all(done.result.is_error for done in denied), [text(d.result) for d in denied]
    rows = audited_calls(demo.tenant, len(allowed) + len(denied))
    assert sorted(row.outcome for row in rows) == ["denied"] * len(denied) + ["ok"] * len(allowed)


def test_a_tenant_rate_limit_is_counted_across_both_hosts(hosts, make_tenant):
    demo = make_tenant("limit")
    call_command("set_rate_limit", demo.tenant.slug, "4/h", stdout=io.StringIO())

    calls = [call(hosts.balancer.mcp_url, demo.key, "get_contact", CONTACT) for _ in range(8)]
    # Both hosts served calls: counting alone, each would have allowed up to four.
    assert {done.host for done in calls} == {"a", "b"}
    assert [done.result.is_error for done in calls] == [False] * 4 + [True] * 4
    assert all("rate limit 4/h reached" in text(done.result) for done in calls[4:])


def test_concurrent_cold_calls_on_both_hosts_refresh_the_token_once(hosts, log_dir, make_tenant):
    qontak = start_simulator(log_dir, access_token_ttl=3.0)
    try:
        demo = make_tenant("cold", qontak=qontak)
        secret = tenant_secret(demo.tenant)
        assert secret is not None
        time.sleep(max(secret.expires_at - time.time(), 0) + 0.3)  # the stored token expired
        before = simulator_account(qontak, demo.account)

        async def thirty() -> list[Called]:
            url = hosts.balancer.mcp_url
            return await asyncio.gather(
                *(acall(url, demo.key, "get_contact", CONTACT) for _ in range(30))
            )

        calls = asyncio.run(thirty())
        assert [text(done.result) for done in calls if done.result.is_error] == []
        assert {done.host for done in calls} == {"a", "b"}
        after = simulator_account(qontak, demo.account)
        assert after["refresh_count"] == before["refresh_count"] + 1
        assert after["stale_refresh_attempts"] == 0
        assert len(audited_calls(demo.tenant, 30, outcome="ok")) == 30
    finally:
        qontak.stop()


def test_an_approved_call_runs_once_though_retried_through_both_hosts(
    hosts, simulator, make_tenant
):
    demo = make_tenant("approve")
    call_command(
        "set_tool_access", demo.tenant.slug, "delete_contact", "approve", stdout=io.StringIO()
    )
    held = call(hosts.balancer.mcp_url, demo.key, "delete_contact", CONTACT)
    assert held.result.is_error and "needs a person's approval" in text(held.result)
    approval = Approval.objects.get(tenant=demo.tenant)
    call_command(
        "decide_approval", str(approval.pk), "approve", "--as", "ana", stdout=io.StringIO()
    )

    async def retries() -> list[Called]:
        url = hosts.balancer.mcp_url
        return await asyncio.gather(
            *(acall(url, demo.key, "delete_contact", CONTACT) for _ in range(12))
        )

    calls = asyncio.run(retries())
    ran = [done for done in calls if not done.result.is_error]
    assert len(ran) == 1, [text(done.result) for done in calls]
    assert {done.host for done in calls} == {"a", "b"}
    deletes = [
        request
        for request in simulator_requests(simulator, demo.account)
        if request["method"] == "DELETE" and "/contacts/" in request["path"]
    ]
    assert len(deletes) == 1


def _socket_url(base: str, tenant: str) -> str:
    return base.replace("http://", "ws://") + f"/ws/tool-calls/?tenant={tenant}"


def test_a_live_feed_on_one_host_shows_calls_served_by_the_other(hosts, make_tenant):
    demo = make_tenant("feed")
    admin = get_user_model().objects.create_superuser("watcher", "w@example.com", "pw-123456")
    browser = DjangoClient()
    browser.force_login(admin)
    cookie = browser.cookies["sessionid"].value

    async def watch(socket_host: str, call_host: ControlPlaneServer) -> dict[str, Any]:
        async with websockets.connect(
            _socket_url(socket_host, demo.tenant.slug),
            additional_headers={"Cookie": f"sessionid={cookie}", "Origin": socket_host},
        ) as socket:
            done = await acall(call_host.mcp_url, demo.key, "list_contacts", {"per_page": 1})
            assert not done.result.is_error, text(done.result)
            return dict(json.loads(await asyncio.wait_for(socket.recv(), timeout=10)))

    # A socket held by host A sees a call host B served, and the other way round.
    from_b = asyncio.run(watch(hosts.a.url, hosts.b))
    from_a = asyncio.run(watch(hosts.b.url, hosts.a))
    for event in (from_b, from_a):
        assert (event["tenant"], event["tool"], event["outcome"]) == (
            demo.tenant.slug,
            "list_contacts",
            "ok",
        )
    assert from_b["id"] != from_a["id"]
    # The feed page's websocket also passes through the balancer.
    through = asyncio.run(watch(hosts.balancer.url, hosts.b))
    assert through["tool"] == "list_contacts"


def test_a_host_that_loses_redis_leaves_the_rotation_and_the_other_keeps_serving(
    two_hosts, transactional_db, log_dir, tmp_path, openbao, simulator, make_tenant
):
    own_redis = PrivateRedis(tmp_path)
    own_redis.start()
    lonely = start_control_plane(
        log_dir, openbao.url, openbao.extra["token"], simulator.url, REDIS_URL=own_redis.url
    )
    balancer = start_haproxy(log_dir, {"a": two_hosts.a.url, "c": lonely.url})
    try:
        demo = make_tenant("failover")
        until_both_answer(balancer.mcp_url, demo.key, {"a", "c"})

        own_redis.stop()
        assert httpx.get(f"{lonely.url}/healthz", timeout=5).status_code == 200  # alive
        assert httpx.get(f"{lonely.url}/readyz", timeout=5).status_code == 503  # not ready
        balancer.wait_for_status("c", "DOWN")
        calls = [call(balancer.mcp_url, demo.key, "get_contact", CONTACT) for _ in range(6)]
        assert [text(done.result) for done in calls if done.result.is_error] == []
        assert {done.host for done in calls} == {"a"}

        own_redis.start()
        balancer.wait_for_status("c", "UP")
        until_both_answer(balancer.mcp_url, demo.key, {"a", "c"})  # back in the rotation
        audit_barrier(two_hosts.a)()
        audit_barrier(lonely)()
    finally:
        balancer.process.stop()
        lonely.process.stop()
        own_redis.stop()


def _readiness(host: ControlPlaneServer) -> tuple[int, dict[str, bool]]:
    """/readyz's status code, and whether each of its checks passed (the test asks from
    loopback, which may read them)."""
    response = httpx.get(f"{host.url}/readyz", timeout=5)
    checks = response.json()["checks"]
    return response.status_code, {name: check["ok"] for name, check in checks.items()}


def _pooled_host(
    stack: ExitStack,
    log_dir: Path,
    openbao: ManagedProcess,
    simulator: ManagedProcess,
    pooler: PgBouncer,
) -> ControlPlaneServer:
    """A host that reaches the database through `pooler` only, stopped when `stack` closes."""
    host = start_control_plane(
        log_dir,
        openbao.url,
        openbao.extra["token"],
        simulator.url,
        DATABASE_URL=pooler.url,
        DATABASE_POOLER="transaction",
    )
    stack.callback(host.process.stop)
    return host


def test_a_host_that_loses_its_database_leaves_the_rotation_and_the_other_keeps_serving(
    two_hosts, transactional_db, log_dir, openbao, simulator, make_tenant
):
    with ExitStack() as stack:
        pooler = stack.enter_context(private_pooler())
        lonely = _pooled_host(stack, log_dir, openbao, simulator, pooler)
        balancer = start_haproxy(log_dir, {"a": two_hosts.a.url, "c": lonely.url})
        stack.callback(balancer.process.stop)
        demo = make_tenant("dbloss")
        before = until_both_answer(balancer.mcp_url, demo.key, {"a", "c"})
        audited_calls(demo.tenant, len(before))

        pooler.stop()
        assert httpx.get(f"{lonely.url}/healthz", timeout=5).status_code == 200  # alive
        assert _readiness(lonely) == (503, {"database": False, "cache": True, "vault": True})
        balancer.wait_for_status("c", "DOWN")
        calls = [call(balancer.mcp_url, demo.key, "get_contact", CONTACT) for _ in range(6)]
        assert [text(done.result) for done in calls if done.result.is_error] == []
        assert {done.host for done in calls} == {"a"}
        audited_calls(demo.tenant, len(before) + len(calls), outcome="ok")

        pooler.start()
        balancer.wait_for_status("c", "UP")
        assert _readiness(lonely) == (200, {"database": True, "cache": True, "vault": True})
        until_both_answer(balancer.mcp_url, demo.key, {"a", "c"})  # back in the rotation
        audit_barrier(two_hosts.a)()
        audit_barrier(lonely)()


def test_when_no_host_is_ready_the_balancer_still_sends_calls_to_every_host(
    transactional_db, log_dir, openbao, simulator, make_tenant
):
    """A shared database outage fails every host's readiness at once; the hosts serve through
    it from their copies of keys and policies (their audit rows wait in the spool), so the
    balancer must not answer 503 itself."""
    with ExitStack() as stack:
        pooler = stack.enter_context(private_pooler())
        c = _pooled_host(stack, log_dir, openbao, simulator, pooler)
        d = _pooled_host(stack, log_dir, openbao, simulator, pooler)
        balancer = start_haproxy(log_dir, {"c": c.url, "d": d.url})
        stack.callback(balancer.process.stop)
        demo = make_tenant("outage")
        before = until_both_answer(balancer.mcp_url, demo.key, {"c", "d"})
        audited_calls(demo.tenant, len(before))

        pooler.stop()
        balancer.wait_for_status("c", "DOWN")
        balancer.wait_for_status("d", "DOWN")
        calls = [call(balancer.mcp_url, demo.key, "get_contact", CONTACT) for _ in range(4)]
        assert [text(done.result) for done in calls if done.result.is_error] == []
        assert {done.host for done in calls} == {"c", "d"}

        pooler.start()
        balancer.wait_for_status("c", "UP")
        balancer.wait_for_status("d", "UP")
        # The outage's rows waited in each host's spool, and are written now.
        audited_calls(demo.tenant, len(before) + len(calls), timeout=20, outcome="ok")
        audit_barrier(c)()
        audit_barrier(d)()
