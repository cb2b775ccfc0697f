"""Target (b) of `make bench`: an MCP server with no control at all.

The same SDK, transport settings and serving command as the control plane, and one tool,
`get_contact`, that makes the same simulator call through one pooled httpx client. The gap
between this server and the control plane is the price of control (auth, policy, rate
limit, token, audit), nothing else.

Configured by environment: BENCH_QONTAK_URL (the simulator) and BENCH_ACCESS_TOKEN (a
simulator access token obtained once by the bench). Serve with
`uvicorn bench.bare_server:application --workers N`.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import mcp_types as types
from mcp.server import Server, ServerRequestContext
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import Receive, Scope, Send

QONTAK_URL = os.environ.get("BENCH_QONTAK_URL", "http://127.0.0.1:8100").rstrip("/")
ACCESS_TOKEN = os.environ.get("BENCH_ACCESS_TOKEN", "")
HOSTS = ("127.0.0.1", "localhost", "[::1]")

_client: httpx.AsyncClient | None = None

GET_CONTACT = types.Tool(
    name="get_contact",
    description="Get one contact by its id.",
    input_schema={
        "type": "object",
        "properties": {"id": {"type": "integer"}},
        "required": ["id"],
    },
)


def _http() -> httpx.AsyncClient:
    global _client
    if _client is None:
        _client = httpx.AsyncClient(
            timeout=httpx.Timeout(30.0, connect=10.0),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
            headers={"Accept": "application/json", "Authorization": f"Bearer {ACCESS_TOKEN}"},
        )
    return _client


async def list_tools(
    ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    return types.ListToolsResult(tools=[GET_CONTACT])


async def call_tool(
    ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
) -> types.CallToolResult:
    contact_id = int((params.arguments or {}).get("id", 0))
    response = await _http().get(f"{QONTAK_URL}/api/v3.1/contacts/{contact_id}")
    payload = response.json()
    structured = {"response": payload.get("response") if isinstance(payload, dict) else None}
    return types.CallToolResult(
        content=[types.TextContent(text=json.dumps(structured, ensure_ascii=False))],
        structured_content=structured,
        is_error=response.status_code >= 400,
    )


server: Server[Any] = Server(
    "bench-bare",
    version="0.1.0",
    on_list_tools=list_tools,
    on_call_tool=call_tool,
    get_tool_input_schema=lambda name: None,
)

_patterns = [pattern for host in HOSTS for pattern in (host, f"{host}:*")]
session_manager = StreamableHTTPSessionManager(
    app=server,
    json_response=True,
    stateless=True,
    security_settings=TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=_patterns,
        allowed_origins=[f"{s}://{p}" for s in ("http", "https") for p in _patterns],
    ),
    max_request_body_size=1_000_000,
)


@asynccontextmanager
async def _lifespan() -> AsyncIterator[None]:
    async with session_manager.run():
        try:
            yield
        finally:
            if _client is not None:
                await _client.aclose()


async def application(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        stack = AsyncExitStack()
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await stack.enter_async_context(_lifespan())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await stack.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif scope["type"] == "http" and scope["path"] == "/mcp":
        await session_manager.handle_request(scope, receive, send)
    else:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
