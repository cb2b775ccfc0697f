"""The enforcement chain every tool call passes once, left to right:

    tool policy -> input -> rate limit -> access token -> Qontak call -> audit

Each step either hands on or raises a domain exception; `run_tool_call` translates the
exception into an `isError` tool result in one place and always writes the audit row.
Blocking work (database, cache, Vault) crosses to threads through `database_sync_to_async`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async
from pydantic import BaseModel, ValidationError

from controlplane import audit, live, policies, tokens
from controlplane.errors import (
    ApplicationError,
    CredentialMissing,
    CredentialUnavailable,
    InvalidInput,
    RateLimited,
    ReauthorizationRequired,
    ToolDenied,
    UpstreamError,
)
from controlplane.models import Tenant, ToolCall
from controlplane.tenants import tenant_qontak_base_url
from mcpserver.qontak.client import TransportFailure, qontak_request
from mcpserver.qontak.endpoints import ENDPOINTS, ENDPOINTS_BY_NAME, Endpoint
from mcpserver.qontak.errors import upstream_error_message

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Caller:
    """Who is calling, established by the API key alone (never by a tool argument)."""

    api_key_id: int
    key_prefix: str
    tenant: Tenant


@dataclass(frozen=True)
class ToolResult:
    text: str
    structured: dict[str, Any] | None
    is_error: bool


@dataclass(frozen=True)
class Completed:
    """What the chain produced, before it becomes a ToolResult and an audit row."""

    result: ToolResult
    outcome: str
    upstream_status: int | None = None


OUTCOME_BY_ERROR: tuple[tuple[type[ApplicationError], str], ...] = (
    (ToolDenied, ToolCall.Outcome.DENIED),
    (RateLimited, ToolCall.Outcome.RATE_LIMITED),
    (InvalidInput, ToolCall.Outcome.INVALID_INPUT),
    (UpstreamError, ToolCall.Outcome.UPSTREAM_ERROR),
    (CredentialUnavailable, ToolCall.Outcome.UNAVAILABLE),
    (CredentialMissing, ToolCall.Outcome.UNAVAILABLE),
    (ReauthorizationRequired, ToolCall.Outcome.UNAVAILABLE),
)


def _error_result(message: str) -> ToolResult:
    return ToolResult(text=message, structured=None, is_error=True)


async def visible_tools(caller: Caller) -> list[Endpoint]:
    """The tools this caller may use: the same policy tools/call enforces."""
    policy = await database_sync_to_async(policies.tenant_policy)(tenant_id=caller.tenant.pk)
    return [e for e in ENDPOINTS if policy.tool_allowed(tool=e.name, api_key_id=caller.api_key_id)]


def _describe_validation_error(endpoint: Endpoint, error: ValidationError) -> str:
    problems = []
    for item in error.errors(include_url=False):
        field = ".".join(str(part) for part in item["loc"]) or "(arguments)"
        problems.append(f"{field}: {item['msg']}")
    return f"invalid arguments for {endpoint.name}: " + "; ".join(problems)


def _validated_input(endpoint: Endpoint, arguments: dict[str, Any]) -> BaseModel:
    try:
        return endpoint.input_model.model_validate(arguments)
    except ValidationError as exc:
        raise InvalidInput(_describe_validation_error(endpoint, exc)) from None


async def _access_token(caller: Caller, stale_token: str | None = None) -> str:
    if stale_token is None:
        cached = tokens.cached_access_token(caller.tenant.slug)
        if cached is not None:
            return cached
    try:
        return await database_sync_to_async(tokens.access_token_for)(
            tenant=caller.tenant, stale_token=stale_token
        )
    except CredentialUnavailable:
        still_valid = tokens.cached_token_still_valid(caller.tenant.slug)
        if still_valid is not None and still_valid != stale_token:
            logger.warning("vault_unavailable tenant=%s: using cached token", caller.tenant.slug)
            return still_valid
        raise


async def _call_qontak(caller: Caller, endpoint: Endpoint, data: BaseModel) -> Completed:
    path, params, body = endpoint.request_parts(data)
    base_url = tenant_qontak_base_url(caller.tenant)
    token = await _access_token(caller)
    try:
        response = await qontak_request(
            base_url=base_url,
            access_token=token,
            method=endpoint.method,
            path=path,
            params=params,
            json_body=body,
        )
        if response.status == 401:
            token = await _access_token(caller, stale_token=token)
            response = await qontak_request(
                base_url=base_url,
                access_token=token,
                method=endpoint.method,
                path=path,
                params=params,
                json_body=body,
            )
    except TransportFailure as exc:
        raise UpstreamError(str(exc)) from exc
    if response.status >= 400:
        raise UpstreamError(
            upstream_error_message(endpoint, response, path), status=response.status
        )
    payload = response.payload if isinstance(response.payload, dict) else {}
    structured = {"response": endpoint.present(payload.get("response"), data)}
    return Completed(
        result=ToolResult(
            text=json.dumps(structured, ensure_ascii=False), structured=structured, is_error=False
        ),
        outcome=ToolCall.Outcome.OK,
        upstream_status=response.status,
    )


async def _enforce_and_call(caller: Caller, tool: str, arguments: dict[str, Any]) -> Completed:
    endpoint = ENDPOINTS_BY_NAME.get(tool)
    if endpoint is None:
        raise InvalidInput(f"unknown tool '{tool}': call tools/list to see the available tools")
    policy = await database_sync_to_async(policies.tenant_policy)(tenant_id=caller.tenant.pk)
    if not policy.tool_allowed(tool=tool, api_key_id=caller.api_key_id):
        raise ToolDenied(f"tool '{tool}' is not available to this API key")
    data = _validated_input(endpoint, arguments)
    hit = await database_sync_to_async(policies.rate_limit_consume)(
        policy=policy, tenant_slug=caller.tenant.slug, key_prefix=caller.key_prefix, tool=tool
    )
    if hit is not None:
        raise RateLimited(hit.message, retry_after=hit.retry_after)
    return await _call_qontak(caller, endpoint, data)


async def run_tool_call(
    caller: Caller, tool: str, arguments: dict[str, Any] | None, request_id: str
) -> ToolResult:
    """Run one tools/call through the chain and audit it, whatever happens."""
    started = time.perf_counter()
    arguments = arguments or {}
    try:
        completed = await _enforce_and_call(caller, tool, arguments)
    except ApplicationError as exc:
        outcome = next(
            (o for kind, o in OUTCOME_BY_ERROR if isinstance(exc, kind)),
            ToolCall.Outcome.INTERNAL_ERROR,
        )
        status = exc.status if isinstance(exc, UpstreamError) else None
        completed = Completed(_error_result(exc.message), outcome, status)
    except Exception:
        logger.exception("tool_call_failed tool=%s request_id=%s", tool, request_id)
        completed = Completed(
            _error_result(f"internal error while running {tool}; reference {request_id}"),
            ToolCall.Outcome.INTERNAL_ERROR,
        )
    latency_ms = (time.perf_counter() - started) * 1000
    row = await database_sync_to_async(audit.tool_call_record)(
        audit.ToolCallRecord(
            tenant_id=caller.tenant.pk,
            api_key_id=caller.api_key_id,
            key_prefix=caller.key_prefix,
            tool=tool,
            arguments=arguments,
            outcome=completed.outcome,
            upstream_status=completed.upstream_status,
            latency_ms=latency_ms,
            request_id=request_id,
            message="" if not completed.result.is_error else completed.result.text,
        )
    )
    if row is not None:
        await live.publish_tool_call(row, tenant_slug=caller.tenant.slug)
    return completed.result
