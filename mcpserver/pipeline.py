"""The enforcement chain every tool call passes once, left to right, one service call a step:

    tool policy (policies) -> input -> rate limit (ratelimit) -> access token (tokens)
    -> Qontak call (qontak) -> audit (mcpserver.audit_writer)

Each step either hands on or raises a domain exception; `run_tool_call` translates the
exception into an `isError` tool result in one place and always queues the audit row.
A warm call does no blocking work: each service answers from this worker's copies, the rate
limits are one Redis round trip on the event loop, and the audit row is written after the
answer. A service that misses its copy crosses to a thread itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.utils import timezone
from pydantic import BaseModel, ValidationError

from controlplane import audit, metrics, people, policies, ratelimit
from controlplane.errors import (
    ApplicationError,
    CountersUnavailable,
    CredentialMissing,
    CredentialUnavailable,
    DatabaseUnavailable,
    InvalidInput,
    QontakPaused,
    QontakUrlRefused,
    RateLimited,
    ReauthorizationRequired,
    ToolDenied,
    UpstreamError,
)
from controlplane.models import ToolCall
from mcpserver import audit_writer, qontak_call
from mcpserver.caller import Caller
from qontak.client import QontakResponse
from qontak.endpoints import ENDPOINTS, ENDPOINTS_BY_NAME, Endpoint

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ToolResult:
    text: str
    structured: dict[str, Any] | None
    is_error: bool


@dataclass(frozen=True)
class ToolCallDone:
    """A tool call's answer, and the write of its audit row, which the request must outlive
    (so a graceful shutdown finishes every write) but the client does not wait for."""

    result: ToolResult
    audit_row_written: asyncio.Future[None]


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
    (QontakPaused, ToolCall.Outcome.UPSTREAM_ERROR),
    (QontakUrlRefused, ToolCall.Outcome.UNAVAILABLE),
    (CredentialUnavailable, ToolCall.Outcome.UNAVAILABLE),
    (CountersUnavailable, ToolCall.Outcome.UNAVAILABLE),
    (DatabaseUnavailable, ToolCall.Outcome.UNAVAILABLE),
    (CredentialMissing, ToolCall.Outcome.UNAVAILABLE),
    (ReauthorizationRequired, ToolCall.Outcome.UNAVAILABLE),
)

UNKNOWN_TOOL_LABEL = "unknown"
TOOL_NAME_SHOWN = 100  # characters of an unknown tool's name echoed back

# Python types a declared response shape admits (see Endpoint.response_shape).
SHAPE_TYPES: dict[str, type] = {"object": dict, "array": list}


def _error_result(message: str) -> ToolResult:
    return ToolResult(text=message, structured=None, is_error=True)


def scope_needed(endpoint: Endpoint) -> str:
    """The OAuth scope a tool needs, from its annotations (see people.tool_scope)."""
    return people.tool_scope(
        read_only=bool(endpoint.annotations.read_only_hint),
        destructive=bool(endpoint.annotations.destructive_hint),
    )


def in_scope(caller: Caller, endpoint: Endpoint) -> bool:
    return caller.scopes is None or scope_needed(endpoint) in caller.scopes


def _allowed(policy: policies.TenantPolicy, caller: Caller, endpoint: Endpoint) -> bool:
    """The token's scopes, the key's or member's read-only flag, and the tenant's rules."""
    return in_scope(caller, endpoint) and policy.tool_allowed(
        tool=endpoint.name,
        api_key_id=caller.api_key_id or 0,
        key_read_only=caller.read_only,
        tool_read_only=bool(endpoint.annotations.read_only_hint),
    )


async def _policy(caller: Caller) -> policies.TenantPolicy:
    return await policies.policy_for_call(tenant_id=caller.tenant.pk, version=caller.config_version)


async def visible_tools(caller: Caller) -> list[Endpoint]:
    """The tools this caller may use: the same policy tools/call enforces. Raises RateLimited
    past TOOLS_LIST_RATE. Unlike calls, a listing is not refused when the counters cannot be
    reached: it changes nothing, and every call it leads to is still counted."""
    try:
        hit = await ratelimit.admit_listing(caller_subject=caller.rate_subject)
    except CountersUnavailable:
        hit = None
    if hit is not None:
        metrics.RATE_LIMIT_REJECTIONS.labels(limit=hit.scope).inc()
        raise RateLimited(hit.message, retry_after=hit.retry_after)
    policy = await _policy(caller)
    return [endpoint for endpoint in ENDPOINTS if _allowed(policy, caller, endpoint)]


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


async def _admit(
    policy: policies.TenantPolicy, caller: Caller, tool: str, *, reaches_qontak: bool
) -> None:
    """Rate limits, then the first request of the Qontak ceiling: one round trip for both."""
    hit = await ratelimit.admit_call(
        policy=policy,
        tenant_slug=caller.tenant.slug,
        caller_subject=caller.rate_subject,
        tool=tool,
        reaches_qontak=reaches_qontak,
    )
    if hit is not None:
        metrics.RATE_LIMIT_REJECTIONS.labels(limit=hit.scope or hit.rule.scope).inc()
        logger.info(
            "rate_limited: %s",
            hit.message,
            extra={"event": "rate_limited", **caller.log_context(tool=tool)},
        )
        raise RateLimited(hit.message, retry_after=hit.retry_after)


def _completed(endpoint: Endpoint, data: BaseModel, response: QontakResponse) -> Completed:
    payload = response.payload if isinstance(response.payload, dict) else {}
    answer = endpoint.present(payload.get("response"), data)
    shape = (endpoint.response_shape or {}).get("type")
    if shape in SHAPE_TYPES and not isinstance(answer, SHAPE_TYPES[shape]):
        # The declared outputSchema would make the client reject the result: say why instead.
        raise UpstreamError(
            f"Qontak answered {endpoint.name} with an unexpected shape "
            f"(expected an {shape}); retry later or report it",
            status=response.status,
        )
    structured = {"response": answer}
    return Completed(
        result=ToolResult(
            text=json.dumps(structured, ensure_ascii=False), structured=structured, is_error=False
        ),
        outcome=ToolCall.Outcome.OK,
        upstream_status=response.status,
    )


def _screened(
    policy: policies.TenantPolicy, caller: Caller, tool: str, arguments: dict[str, Any]
) -> tuple[Endpoint, BaseModel]:
    """The tool and its validated input; raises InvalidInput or ToolDenied. No I/O."""
    endpoint = ENDPOINTS_BY_NAME.get(tool)
    if endpoint is None:
        shown = audit.printable(tool, TOOL_NAME_SHOWN)
        raise InvalidInput(f"unknown tool '{shown}': call tools/list to see the available tools")
    if not _allowed(policy, caller, endpoint):
        logger.info("tool_denied", extra={"event": "tool_denied", **caller.log_context(tool=tool)})
        raise ToolDenied(
            f"tool '{tool}' is not available to this "
            + ("person's connection" if caller.person else "API key")
        )
    return endpoint, _validated_input(endpoint, arguments)


async def _enforce_and_call(
    caller: Caller, tool: str, arguments: dict[str, Any], deadline: float
) -> Completed:
    """Every call is counted against the rate limits before its refusal, if any, is answered:
    unknown tools, denied tools and invalid arguments cost the caller as much as a call."""
    policy = await _policy(caller)
    try:
        endpoint, data = _screened(policy, caller, tool, arguments)
    except (InvalidInput, ToolDenied):
        counted_as = tool if tool in ENDPOINTS_BY_NAME else ""
        await _admit(policy, caller, counted_as, reaches_qontak=False)
        raise
    await _admit(policy, caller, tool, reaches_qontak=True)
    response = await qontak_call.send(caller, policy, endpoint, data, deadline)
    return _completed(endpoint, data, response)


async def run_tool_call(
    caller: Caller, tool: str, arguments: dict[str, Any] | None
) -> ToolCallDone:
    """Run one tools/call through the chain and queue its audit row, whatever happens."""
    started = time.perf_counter()
    arguments = arguments or {}
    try:
        deadline = asyncio.get_running_loop().time() + settings.TOOL_CALL_DEADLINE
        completed = await _enforce_and_call(caller, tool, arguments, deadline)
    except ApplicationError as exc:
        outcome = next(
            (o for kind, o in OUTCOME_BY_ERROR if isinstance(exc, kind)),
            ToolCall.Outcome.INTERNAL_ERROR,
        )
        status = exc.status if isinstance(exc, UpstreamError) else None
        completed = Completed(_error_result(exc.message), outcome, status)
    except Exception:
        logger.exception(
            "tool call failed unexpectedly",
            extra={"event": "tool_call_failed", **caller.log_context(tool=tool)},
        )
        completed = Completed(
            _error_result(f"internal error while running {tool}; reference {caller.request_id}"),
            ToolCall.Outcome.INTERNAL_ERROR,
        )
    return ToolCallDone(
        result=completed.result,
        audit_row_written=_audited(caller, tool, arguments, completed, started),
    )


def _audited(
    caller: Caller, tool: str, arguments: dict[str, Any], completed: Completed, started: float
) -> asyncio.Future[None]:
    """Count the call in the metrics and queue its audit row; the write's future."""
    elapsed = time.perf_counter() - started
    # Invented names would each become a series of their own.
    label = tool if tool in ENDPOINTS_BY_NAME else UNKNOWN_TOOL_LABEL
    metrics.TOOL_CALLS.labels(tool=label, outcome=completed.outcome).inc()
    metrics.TOOL_CALL_LATENCY.observe(elapsed)
    record = audit.ToolCallRecord(
        tenant_id=caller.tenant.pk,
        api_key_id=caller.api_key_id,
        key_prefix=caller.key_prefix,
        tool=tool,
        arguments=arguments,
        outcome=completed.outcome,
        upstream_status=completed.upstream_status,
        latency_ms=elapsed * 1000,
        request_id=caller.request_id,
        message="" if not completed.result.is_error else completed.result.text,
        qontak_user=caller.qontak_user,
        person=caller.person,
        oauth_client=caller.oauth_client,
        called_at=timezone.now(),
    )
    return audit_writer.submit(record, tenant_slug=caller.tenant.slug)


def refuse_out_of_scope(
    caller: Caller, tool: str, arguments: dict[str, Any] | None
) -> tuple[str, asyncio.Future[None]] | None:
    """For a tools/call the token's scopes do not cover: the scope it needs, and the write of
    its audit row (denied). None when the call is in scope or names no tool. No I/O: the
    endpoint answers such a call with HTTP 403 before the SDK sees it."""
    endpoint = ENDPOINTS_BY_NAME.get(tool)
    if endpoint is None or in_scope(caller, endpoint):
        return None
    needed = scope_needed(endpoint)
    message = f"tool '{tool}' needs the {needed} scope, which this connection was not granted"
    logger.info(
        "insufficient_scope", extra={"event": "insufficient_scope", **caller.log_context(tool=tool)}
    )
    completed = Completed(_error_result(message), ToolCall.Outcome.DENIED)
    return needed, _audited(caller, tool, arguments or {}, completed, time.perf_counter())
