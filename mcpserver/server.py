"""The MCP endpoint: bearer-key authentication in front of the SDK's streamable HTTP transport.

Stateless and JSON-only, so any worker can answer any request; the SDK routes each request to
the 2025-11-25 (initialize handshake) or 2026-07-28 (per-request) protocol era from its
MCP-Protocol-Version header. The SDK's session manager must be running (see `lifespan`).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import mcp_types as types
from django.conf import settings
from django.db import DatabaseError
from django.http.request import split_domain_port, validate_host
from mcp.server import Server, ServerRequestContext
from mcp.server.request_state import RequestStateBoundary, RequestStateSecurity
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from starlette.types import Receive, Scope, Send

from controlplane import config_version, people, tracing
from controlplane.errors import ApplicationError
from controlplane.models import Approval
from controlplane.oauth.resource import mcp_resource, origin_of, resource_metadata_url
from controlplane.tenants import (
    API_KEY_SCHEME,
    TooManyFailedAuthentications,
    api_key_for_request,
)
from mcpserver import audit_writer, pipeline
from qontak.client import close_client

logger = logging.getLogger(__name__)

SERVER_NAME = "qontak-mcp-controlplane"
CALLER_STATE_KEY = "qontak_caller"
APPROVAL_INPUT = "approval"  # our key in a 2026-07-28 input request and its response
AUDIT_STATE_KEY = "qontak_audit"
ARRIVAL_STATE_KEY = "qontak_arrival"  # (received, authenticated), while tracing is on
# Why a request is refused with 401, keyed by "no credential was sent at all".
AUTH_FAILURES = {
    True: (
        "missing_key",
        "send Authorization: Bearer <API key>, or connect with OAuth (the resource_metadata "
        "of this challenge)",
    ),
    False: ("invalid_key", "the API key is unknown, revoked or expired"),
}


class RequestAudit:
    """The audit-row writes of one /mcp request, awaited by the request after its answer."""

    def __init__(self) -> None:
        self._writes: list[asyncio.Future[None]] = []

    def add(self, write: asyncio.Future[None]) -> None:
        self._writes.append(write)

    async def written(self) -> None:
        await asyncio.gather(*self._writes)


def _request_state(ctx: ServerRequestContext[Any]) -> dict[str, Any]:
    request = ctx.request
    if request is None:  # only over HTTP: mcp_endpoint below has authenticated the key
        raise RuntimeError("the MCP endpoint is only served over HTTP")
    state: dict[str, Any] = request.scope["state"]
    return state


def _caller(ctx: ServerRequestContext[Any]) -> pipeline.Caller:
    caller: pipeline.Caller = _request_state(ctx)[CALLER_STATE_KEY]
    return caller


async def list_tools(
    ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    try:
        tools = await pipeline.visible_tools(_caller(ctx))
    except ApplicationError as exc:  # no tool result to carry it: a JSON-RPC error instead
        raise MCPError(code=types.INTERNAL_ERROR, message=exc.message) from None
    return types.ListToolsResult(
        tools=[
            types.Tool(
                name=endpoint.name,
                description=endpoint.description,
                input_schema=endpoint.input_model.model_json_schema(),
                output_schema=endpoint.output_schema,
                annotations=endpoint.annotations,
            )
            for endpoint in tools
        ]
    )


def _can_ask_person(ctx: ServerRequestContext[Any], caller: pipeline.Caller) -> bool:
    """Whether the person a call is made for can be asked to approve it: an OAuth caller whose
    client declared elicitation on this request (the 2026-07-28 era; a stateless 2025-11-25
    server has no way to send the client a request). API keys go to the operators' queue."""
    capabilities = ctx.session.client_capabilities
    return (
        bool(caller.person)
        and ctx.protocol_version in MODERN_PROTOCOL_VERSIONS
        and capabilities is not None
        and capabilities.elicitation is not None
    )


def _person_answer(params: types.CallToolRequestParams) -> pipeline.PersonAnswer | None:
    """The person's answer to our approval question, when this call carries one: the request
    state is ours (sealed, then verified by the SDK's RequestStateBoundary) and names the
    approval; the answer itself comes from the client."""
    if params.request_state is None:
        return None
    try:
        approval_id = int(json.loads(params.request_state)["approval_id"])
    except (ValueError, KeyError, TypeError):
        return None
    response = (params.input_responses or {}).get(APPROVAL_INPUT)
    approve = (
        isinstance(response, types.ElicitResult)
        and response.action == "accept"
        and bool((response.content or {}).get("approve"))
    )
    return pipeline.PersonAnswer(approval_id=approval_id, approve=approve)


def _approval_question(approval: Approval, caller: pipeline.Caller) -> types.InputRequiredResult:
    arguments = json.dumps(approval.arguments, ensure_ascii=False, sort_keys=True)[:500]
    message = (
        f"{caller.oauth_client or 'Your assistant'} wants to run {approval.tool} in "
        f"{caller.tenant.name} as you, with {arguments}. Approve it? It runs once."
    )
    return types.InputRequiredResult(
        input_requests={
            APPROVAL_INPUT: types.ElicitRequest(
                params=types.ElicitRequestFormParams(
                    message=message,
                    requested_schema={
                        "type": "object",
                        "properties": {
                            "approve": {"type": "boolean", "title": "Approve", "default": False}
                        },
                        "required": ["approve"],
                    },
                )
            )
        },
        request_state=json.dumps({"approval_id": approval.pk}),
    )


def _trace_origin(
    ctx: ServerRequestContext[Any], params: types.CallToolRequestParams, state: dict[str, Any]
) -> tracing.Origin | None:
    """Where the call's trace comes from: the request's `_meta`, else its `traceparent`
    header; None while tracing is off."""
    arrival = state.get(ARRIVAL_STATE_KEY)
    if arrival is None or ctx.request is None:
        return None
    received, authenticated = arrival
    parent = tracing.parent_context(params.meta, ctx.request.headers)
    return tracing.Origin(parent=parent, received=received, authenticated=authenticated)


async def call_tool(
    ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
) -> types.CallToolResult | types.InputRequiredResult:
    state = _request_state(ctx)
    caller: pipeline.Caller = state[CALLER_STATE_KEY]
    done = await pipeline.run_tool_call(
        caller,
        params.name,
        params.arguments,
        can_ask=_can_ask_person(ctx, caller),
        answer=_person_answer(params),
        origin=_trace_origin(ctx, params, state),
    )
    request_audit: RequestAudit = state[AUDIT_STATE_KEY]
    request_audit.add(done.audit_row_written)
    if done.ask is not None:
        return _approval_question(done.ask, caller)
    result = done.result
    return types.CallToolResult(
        content=[types.TextContent(text=result.text)],
        structured_content=result.structured,
        is_error=result.is_error,
    )


@functools.lru_cache(maxsize=4)
def _mcp_hosts(allowed_hosts: tuple[str, ...]) -> list[str]:
    """ALLOWED_HOSTS as /mcp honours it: Django's forms (`.example.com` for a domain and its
    subdomains), but never `*`, which would let any web page's DNS rebinding reach /mcp."""
    if "*" in allowed_hosts:
        logger.warning(
            "ALLOWED_HOSTS contains '*', which /mcp does not honour: list the host names "
            "assistants use",
            extra={"event": "mcp_host_wildcard_ignored"},
        )
    return [host for host in allowed_hosts if host != "*"]


def _host_allowed(value: str) -> bool:
    domain, _port = split_domain_port(value)
    return bool(domain) and validate_host(domain, _mcp_hosts(tuple(settings.ALLOWED_HOSTS)))


def _misdirected(scope: Scope) -> tuple[int, str] | None:
    """DNS-rebinding protection: the status and message refusing a request whose Host or
    Origin is not ours, or None."""
    host = _header(scope, b"host")
    if host is None or not _host_allowed(host):
        return 421, "this host name is not served here: add it to ALLOWED_HOSTS"
    origin = _header(scope, b"origin")
    if origin is not None and not _host_allowed(urlsplit(origin).netloc):
        return 403, "requests from this web origin are not allowed"
    return None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _request_state_principal(ctx: ServerRequestContext[Any]) -> str | None:
    """Binds our sealed request state to the caller that received it."""
    caller = _caller(ctx)
    return f"{caller.tenant.pk}:{caller.rate_subject}"


def _request_state_key(secret_key: str) -> bytes:
    return hashlib.sha256(b"qmcp.request-state" + secret_key.encode()).digest()


mcp_server: Server[Any] = Server(
    SERVER_NAME,
    version="0.1.0",
    instructions=(
        "Tools for one Qontak CRM account. The account is fixed by your API key or "
        "connection. Read templates (get_*_template) before creating records with custom "
        "fields. Some calls wait for a person's approval: the result says so and how to "
        "learn the outcome (get_approval_status)."
    ),
    on_list_tools=list_tools,
    on_call_tool=call_tool,
    # Our schemas carry no x-mcp-header annotations: skip the SDK's per-call tools/list.
    get_tool_input_schema=lambda name: None,
)

# The 2026-07-28 era's request state (the approval a person is asked about) is sealed and
# checked by the SDK: bound to the caller, the tool and its arguments, for ten minutes.
mcp_server.middleware.append(
    RequestStateBoundary(
        RequestStateSecurity(
            keys=[_request_state_key(settings.SECRET_KEY)],
            ttl=600,
            bind_principal=_request_state_principal,
        ),
        default_audience=SERVER_NAME,
    )
)

session_manager = StreamableHTTPSessionManager(
    app=mcp_server,
    json_response=True,
    stateless=True,
    # Host and Origin are checked by mcp_endpoint, with Django's rules (see _misdirected).
    security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    max_request_body_size=settings.MCP_MAX_BODY_BYTES,
)


@asynccontextmanager
async def lifespan() -> AsyncIterator[None]:
    """Run the SDK's session manager and follow configuration changes for the life of the
    process; write the last audit rows and close the HTTP pool after."""
    async with session_manager.run(), config_version.following_changes():
        try:
            yield
        finally:
            await audit_writer.drain()
            await close_client()


async def _refuse(
    send: Send,
    status: int,
    message: str,
    headers: list[tuple[bytes, bytes]] | None = None,
    request_id: Any = None,
) -> None:
    """A JSON-RPC error body, so the official client shows the message instead of a status."""
    code = -32001 if status in (401, 403) else -32603
    body = json.dumps(
        {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}
    )
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": body.encode()})


def _quoted(value: str) -> str:
    """An auth-param value (RFC 9110 quoted-string) from text of ours."""
    return '"' + value.replace("\\", "").replace('"', "'") + '"'


def _challenge(origin: str, *, scope: str, error: str = "", description: str = "") -> bytes:
    """RFC 6750 and RFC 9728: where the protected-resource metadata is, which scopes to ask
    for, and why the token was refused, if one was sent."""
    params = [
        'Bearer realm="qontak-mcp"',
        f"resource_metadata={_quoted(resource_metadata_url(origin))}",
        f"scope={_quoted(scope)}",
    ]
    if error:
        params += [f"error={_quoted(error)}", f"error_description={_quoted(description)}"]
    return ", ".join(params).encode()


async def _reject_unauthenticated(
    send: Send, origin: str, reason: str, *, credentials_sent: bool
) -> None:
    """RFC 6750 3.1: a request that sent no credentials gets the bare challenge, one whose
    token was refused gets error="invalid_token"."""
    challenge = _challenge(
        origin,
        scope=" ".join(people.CHALLENGE_SCOPES),
        error="invalid_token" if credentials_sent else "",
        description=reason,
    )
    await _refuse(send, 401, f"Unauthorized: {reason}", [(b"www-authenticate", challenge)])


def _bearer_key(scope: Scope) -> str | None:
    scheme, _, key = (_header(scope, b"authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and key.strip():
        return key.strip()
    return None


def _request_id_from(scope: Scope) -> str:
    candidate = (_header(scope, b"x-request-id") or "")[:64]
    if candidate and candidate.replace("-", "").isalnum():
        return candidate
    return uuid.uuid4().hex


async def _key_caller(
    key: str, *, version: str | None, address: str, request_id: str
) -> pipeline.Caller | None:
    api_key = await api_key_for_request(key=key, version=version, client_address=address)
    if api_key is None:
        return None
    return pipeline.Caller(
        api_key_id=api_key.pk,
        key_prefix=api_key.prefix,
        read_only=api_key.read_only,
        tenant=api_key.tenant,
        request_id=request_id,
        config_version=version,
        qontak_user=api_key.qontak_user or api_key.tenant.default_qontak_user,
    )


async def _person_caller(
    token: str, *, version: str | None, address: str, request_id: str, resource: str
) -> pipeline.Caller:
    """The caller an OAuth access token names; raises people.TokenRefused."""
    principal = await people.principal_for_request(
        token=token, version=version, client_address=address
    )
    if not principal.allows_resource(resource):
        raise people.TokenRefused(
            f"the access token was issued for another resource: connect the assistant to {resource}"
        )
    return pipeline.Caller(
        api_key_id=None,
        key_prefix="",
        read_only=principal.read_only,
        tenant=principal.tenant,
        request_id=request_id,
        config_version=version,
        qontak_user=principal.qontak_user,
        person=principal.username,
        membership_id=principal.membership_id,
        oauth_client=principal.client,
        scopes=principal.scopes,
    )


async def _buffered(receive: Receive) -> tuple[bytes, Receive]:
    """The request body (up to the SDK's limit; the SDK refuses larger ones), and a receive
    that hands the SDK every message again."""
    messages: list[Any] = []
    size = 0
    while size <= settings.MCP_MAX_BODY_BYTES:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")

    async def replay() -> Any:
        return messages.pop(0) if messages else await receive()

    return body, replay


def _tool_call_in(body: bytes) -> tuple[Any, str, dict[str, Any] | None] | None:
    """The JSON-RPC id, tool name and arguments of a tools/call body, or None."""
    try:
        message = json.loads(body)
    except ValueError:
        return None
    if not isinstance(message, dict) or message.get("method") != "tools/call":
        return None
    params = message.get("params")
    if not isinstance(params, dict) or not isinstance(params.get("name"), str):
        return None
    arguments = params.get("arguments")
    return message.get("id"), params["name"], arguments if isinstance(arguments, dict) else None


async def _refuse_out_of_scope(
    send: Send, origin: str, caller: pipeline.Caller, body: bytes
) -> bool:
    """Step-up (MCP authorization): a tools/call the token's scopes do not cover is answered
    with HTTP 403 insufficient_scope, naming every scope the call needs. True when refused."""
    call = _tool_call_in(body)
    if call is None:
        return False
    message_id, tool, arguments = call
    refused = pipeline.refuse_out_of_scope(caller, tool, arguments)
    if refused is None:
        return False
    needed, audit_row_written = refused
    scopes = " ".join(sorted({*(caller.scopes or ()), needed}))
    reason = f"the tool {tool} needs the {needed} scope: authorize again to grant it"
    challenge = _challenge(origin, scope=scopes, error="insufficient_scope", description=reason)
    await _refuse(send, 403, reason, [(b"www-authenticate", challenge)], request_id=message_id)
    await audit_row_written
    return True


async def mcp_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    """ASGI app for exactly /mcp: check Host and Origin, authenticate the API key or OAuth
    token (and the token's scopes), then hand over to the SDK."""
    received = tracing.now()
    request_id = _request_id_from(scope)
    refusal = _misdirected(scope)
    if refusal is not None:
        await _refuse(send, *refusal)
        return
    origin = origin_of(
        scheme=str(scope.get("scheme", "http")),
        host=_header(scope, b"host") or "",
        forwarded_proto=_header(scope, b"x-forwarded-proto"),
    )
    token = _bearer_key(scope)
    version = None if token is None else config_version.current()
    client = scope.get("client")
    address = str(client[0]) if client else ""
    caller: pipeline.Caller | None = None
    try:
        if token is None:
            pass
        elif token.startswith(API_KEY_SCHEME):
            caller = await _key_caller(
                token, version=version, address=address, request_id=request_id
            )
        else:
            caller = await _person_caller(
                token,
                version=version,
                address=address,
                request_id=request_id,
                resource=mcp_resource(origin),
            )
    except TooManyFailedAuthentications as exc:
        logger.info(
            "auth_throttled: %s",
            exc.message,
            extra={"event": "auth_throttled", "client": address, "request_id": request_id},
        )
        await _refuse(send, 429, exc.message, [(b"retry-after", str(exc.retry_after).encode())])
        return
    except DatabaseError as exc:
        logger.warning(
            "database unavailable while checking a credential (%s)",
            type(exc).__name__,
            extra={"event": "database_unavailable", "request_id": request_id},
        )
        await _refuse(
            send,
            503,
            "the control plane cannot reach its database to check the credential; retry shortly",
            [(b"retry-after", b"5")],
        )
        return
    except people.TokenRefused as exc:
        logger.info(
            "auth_failed: %s",
            exc.message,
            extra={"event": "auth_failed", "reason": "invalid_token", "request_id": request_id},
        )
        await _reject_unauthenticated(send, origin, exc.message, credentials_sent=True)
        return
    authenticated = tracing.now()
    if caller is None:
        reason, advice = AUTH_FAILURES[token is None]
        logger.info(
            "auth_failed: %s",
            advice,
            extra={"event": "auth_failed", "reason": reason, "request_id": request_id},
        )
        await _reject_unauthenticated(send, origin, advice, credentials_sent=token is not None)
        return
    if caller.scopes is not None and scope.get("method") == "POST":
        body, receive = await _buffered(receive)
        if await _refuse_out_of_scope(send, origin, caller, body):
            return
    request_audit = RequestAudit()
    scope.setdefault("state", {}).update({CALLER_STATE_KEY: caller, AUDIT_STATE_KEY: request_audit})
    if received:
        scope["state"][ARRIVAL_STATE_KEY] = (received, authenticated)
    await session_manager.handle_request(scope, receive, send)
    # The answer is out; the request ends once its audit rows are committed.
    await request_audit.written()
