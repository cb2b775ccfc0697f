"""Calling the control plane as its clients do, and waiting for what a call wrote.

`with_mcp` and `mcp_client` connect the official MCP client over HTTP in either protocol era
(`ERAS`); `in_process_caller` and `run_tool_call_and_drain` run the pipeline without a server.
`audited_calls` and `audit_barrier` wait for the audit rows a call leaves behind.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from controlplane import tenants
from controlplane.models import Tenant, ToolCall
from tests.servers import ControlPlaneServer

if TYPE_CHECKING:
    from mcpserver.pipeline import Caller, ToolResult

T = TypeVar("T")

# The official client's two ways in: the 2025-11-25 handshake era and the 2026-07-28 era.
ERAS = {"2025-11-25": "legacy", "2026-07-28": "2026-07-28"}


# The CRM user the keys of gateway tenants made by the make_tenant fixture act as.
GATEWAY_CRM_USER = "5f0c6b1e-0a1b-4c2d-8e3f-445566778899"


@dataclass
class TenantWithKey:
    tenant: Any
    key: str
    account: str


def audited_calls(
    tenant: Tenant, count: int, timeout: float = 5.0, **filters: Any
) -> list[ToolCall]:
    """The tenant's audit rows matching `filters`, oldest id first, once `count` are there.

    The server commits a call's row just after sending the response, so a test reading rows
    right after a call waits here; fewer than `count` rows after `timeout` seconds fail it.
    """
    deadline = time.monotonic() + timeout
    while True:
        rows = list(ToolCall.objects.filter(tenant=tenant, **filters).order_by("pk"))
        if len(rows) >= count:
            return rows
        if time.monotonic() >= deadline:
            found = [(row.tool, row.outcome) for row in rows]
            raise AssertionError(
                f"expected at least {count} audit rows for tenant {tenant.slug} matching "
                f"{filters} within {timeout} s; found {len(rows)}: {found}"
            )
        time.sleep(0.05)


def audit_barrier(server: ControlPlaneServer) -> Callable[[], None]:
    """A wait for every audit row the single-worker `server` has queued by the time it is
    called: the writer commits rows in order, so one more call's row is written last.

    Its tenant is created now, not when waiting: on SQLite, a transaction racing the
    server's audit writes can fail with "database is locked".
    """
    tenant = tenants.tenant_create(slug=f"barrier-{uuid.uuid4().hex[:8]}")
    key = tenants.api_key_issue(tenant=tenant).key

    def wait() -> None:
        with_mcp(server.mcp_url, key, "2026-07-28", lambda client: client.call_tool("barrier", {}))
        audited_calls(tenant, 1)

    return wait


def in_process_caller(prefix: str, request_id: str) -> Any:
    """A new tenant and key, as the pipeline sees them, for tests that run it in-process."""
    from mcpserver import pipeline

    tenant = tenants.tenant_create(slug=f"{prefix}-{uuid.uuid4().hex[:8]}")
    issued = tenants.api_key_issue(tenant=tenant)
    return pipeline.Caller(
        api_key_id=issued.api_key.pk,
        key_prefix=issued.api_key.prefix,
        read_only=False,
        tenant=tenant,
        request_id=request_id,
    )


async def run_tool_call_and_drain(
    caller: Caller, tool: str, arguments: dict[str, Any] | None
) -> ToolResult:
    """run_tool_call in-process, returning once its audit row is written (the pipeline hands
    the row to the audit writer and returns without waiting for it)."""
    from mcpserver import audit_writer, pipeline

    done = await pipeline.run_tool_call(caller, tool, arguments)
    await audit_writer.drain()
    assert done.audit_row_written.done()
    return done.result


@asynccontextmanager
async def mcp_client(url: str, key: str | None, era: str) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=60)) as http,
        Client(streamable_http_client(url, http_client=http), mode=ERAS[era]) as client,
    ):
        yield client


def with_mcp(url: str, key: str | None, era: str, action: Callable[[Client], Awaitable[T]]) -> T:
    """Run `action` with an official MCP client connected over HTTP, from sync test code."""

    async def run() -> T:
        async with mcp_client(url, key, era) as client:
            return await action(client)

    return asyncio.run(run())


def in_process_caller_of(demo: TenantWithKey) -> Any:
    """The caller the pipeline sees for `demo`'s key, for tests that run it in-process."""
    from mcpserver import pipeline

    api_key = demo.tenant.api_keys.get()
    return pipeline.Caller(
        api_key_id=api_key.pk,
        key_prefix=api_key.prefix,
        read_only=False,
        tenant=demo.tenant,
        request_id="req-in-process",
        qontak_user=api_key.qontak_user or demo.tenant.default_qontak_user,
    )


def in_one_loop(scenario: Callable[[], Awaitable[Any]]) -> Any:
    """The HTTP pool and the Redis link belong to one event loop: run a test's calls in one,
    and let their audit rows land."""
    from mcpserver import audit_writer
    from qontak.client import close_client

    async def run() -> Any:
        try:
            return await scenario()
        finally:
            await audit_writer.drain()
            await close_client()

    return asyncio.run(run())
