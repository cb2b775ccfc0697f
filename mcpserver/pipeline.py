"""The enforcement chain every tool call passes once, left to right, one service call a step:

    tool policy (policies) -> input -> rate limit (ratelimit) [-> approval (approvals)]
    -> access token (tokens) -> Qontak call (qontak) -> audit (mcpserver.audit_writer)

Each step either hands on or raises a domain exception; `run_tool_call` translates the
exception into an `isError` tool result in one place and always queues the audit row.
When tracing is on, the call is a span and each step a child of it (controlplane.tracing).
A warm call does no blocking work: each service answers from this worker's copies, the rate
limits are one Redis round trip on the event loop, and the audit row is written after the
answer. A service that misses its copy crosses to a thread itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, replace
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone
from pydantic import BaseModel, ValidationError

from controlplane import approvals, audit, metrics, people, policies, ratelimit, tracing
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
from controlplane.models import Approval, ToolCall, ToolPolicy
from mcpserver import audit_writer, qontak_call
from mcpserver.approval_tool import APPROVAL_STATUS_TOOL, ApprovalStatusTool
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
class PersonAnswer:
    """The person's answer to our question about a held call: the 2026-07-28 era's input
    response, with the approval named by the request state we sealed."""

    approval_id: int
    approve: bool


@dataclass(frozen=True)
class ToolCallDone:
    """A tool call's answer, and the write of its audit row, which the request must outlive
    (so a graceful shutdown finishes every write) but the client does not wait for. `ask`:
    the held call to ask the person about instead of answering."""

    result: ToolResult
    audit_row_written: asyncio.Future[None]
    ask: Approval | None = None


@dataclass(frozen=True)
class Completed:
    """What the chain produced, before it becomes a ToolResult and an audit row."""

    result: ToolResult
    outcome: str
    upstream_status: int | None = None
    approval_id: int | None = None
    ask: Approval | None = None


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


def _effect(policy: policies.TenantPolicy, caller: Caller, endpoint: Endpoint) -> str:
    """allow, deny or approve: the token's scopes, the key's or member's read-only flag, and
    the tenant's rules."""
    if not in_scope(caller, endpoint):
        return ToolPolicy.Effect.DENY
    return policy.tool_effect(
        tool=endpoint.name,
        api_key_id=caller.api_key_id,
        membership_id=caller.membership_id,
        key_read_only=caller.read_only,
        tool_read_only=bool(endpoint.annotations.read_only_hint),
        tool_destructive=bool(endpoint.annotations.destructive_hint),
    )


async def _policy(caller: Caller) -> policies.TenantPolicy:
    return await policies.policy_for_call(tenant_id=caller.tenant.pk, version=caller.config_version)


async def visible_tools(caller: Caller) -> list[Endpoint | ApprovalStatusTool]:
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
    allowed: list[Endpoint | ApprovalStatusTool] = [
        endpoint for endpoint in ENDPOINTS if _effect(policy, caller, endpoint) != "deny"
    ]
    return [*allowed, APPROVAL_STATUS_TOOL] if policy.may_hold_calls else allowed


def _describe_validation_error(
    endpoint: Endpoint | ApprovalStatusTool, error: ValidationError
) -> str:
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
    with tracing.step(tracing.RATE_LIMIT):
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
) -> tuple[Endpoint, BaseModel, str]:
    """The tool, its validated input and its effect (allow or approve); raises InvalidInput
    or ToolDenied. No I/O."""
    endpoint = ENDPOINTS_BY_NAME.get(tool)
    if endpoint is None:
        shown = audit.printable(tool, TOOL_NAME_SHOWN)
        raise InvalidInput(f"unknown tool '{shown}': call tools/list to see the available tools")
    effect = _effect(policy, caller, endpoint)
    if effect == ToolPolicy.Effect.DENY:
        logger.info("tool_denied", extra={"event": "tool_denied", **caller.log_context(tool=tool)})
        raise ToolDenied(
            f"tool '{tool}' is not available to this "
            + ("person's connection" if caller.person else "API key")
        )
    return endpoint, _validated_input(endpoint, arguments), effect


def _asker(caller: Caller) -> approvals.Asker:
    return approvals.Asker(
        tenant_id=caller.tenant.pk,
        api_key_id=caller.api_key_id,
        key_prefix=caller.key_prefix,
        membership_id=caller.membership_id,
        person=caller.person,
        oauth_client=caller.oauth_client,
    )


def _held_result(approval: Approval) -> Completed:
    """What the assistant is told about a call that did not run because of its approval."""
    at = "%Y-%m-%d %H:%M UTC"
    status = approval.shown_status
    if status == Approval.Status.REJECTED:
        reason = approval.reason or "no reason given"
        text = (
            f"The call to {approval.tool} (approval #{approval.pk}) was rejected by "
            f"{approval.decided_by}: {reason}. It was not run."
        )
        outcome = ToolCall.Outcome.DENIED
    elif status == Approval.Status.EXECUTED:
        ran = approval.executed_at.strftime(at) if approval.executed_at else "earlier"
        text = (
            f"The approved call #{approval.pk} to {approval.tool} already ran ({ran}); it was "
            "not run again."
        )
        outcome = ToolCall.Outcome.DENIED
    else:
        text = (
            f"The call to {approval.tool} needs a person's approval before it runs: it waits as "
            f"approval #{approval.pk} until {approval.expires_at.strftime(at)}. Nothing was sent "
            f"to Qontak. An operator of this tenant decides in the admin. To learn the outcome, "
            f"call get_approval_status with approval_id {approval.pk}, or call {approval.tool} "
            "again with the same arguments: once approved it runs, once."
        )
        outcome = ToolCall.Outcome.PENDING_APPROVAL
    return Completed(_error_result(text), outcome, approval_id=approval.pk)


def _person_decides(caller: Caller, answer: PersonAnswer, tool: str) -> None:
    """Record the person's answer about their own held call (an operator may have decided
    first: then theirs stands). Blocking (database)."""
    approval = approvals.status_for(approval_id=answer.approval_id, asker=_asker(caller))
    if approval.tool != tool:
        raise InvalidInput("that answer is about another tool call")
    by = f"{caller.person} (asked in {caller.oauth_client or 'the assistant'})"
    # Decided already, or expired: the gate that follows says which.
    with contextlib.suppress(InvalidInput):
        approvals.decide(
            approval_id=approval.pk,
            approve=answer.approve,
            decided_by=by,
            reason="" if answer.approve else "declined by the person it was made for",
        )


async def _gate(
    caller: Caller,
    tool: str,
    arguments: dict[str, Any],
    *,
    can_ask: bool,
    answer: PersonAnswer | None,
) -> tuple[Completed | None, int]:
    """A call held for approval: None (and the approval) when it may run now, else what to
    answer, which is a question for the person when their client can ask them."""
    with tracing.step(tracing.APPROVAL):
        if answer is not None:
            await sync_to_async(_person_decides)(caller, answer, tool)
        gate = await sync_to_async(approvals.gate)(
            asker=_asker(caller), tool=tool, arguments=arguments
        )
    approval = gate.approval
    if gate.run:
        return None, approval.pk
    if can_ask and answer is None and approval.shown_status == Approval.Status.PENDING:
        question = Completed(
            _error_result(f"waiting for {caller.person} to approve {tool}"),
            ToolCall.Outcome.PENDING_APPROVAL,
            approval_id=approval.pk,
            ask=approval,
        )
        return question, approval.pk
    return _held_result(approval), approval.pk


async def _approval_status(
    policy: policies.TenantPolicy, caller: Caller, arguments: dict[str, Any]
) -> Completed:
    await _admit(policy, caller, "", reaches_qontak=False)
    try:
        data = APPROVAL_STATUS_TOOL.input_model.model_validate(arguments)
    except ValidationError as exc:
        raise InvalidInput(_describe_validation_error(APPROVAL_STATUS_TOOL, exc)) from None
    approval = await sync_to_async(approvals.status_for)(
        approval_id=data.approval_id, asker=_asker(caller)
    )
    structured = {"approval": approvals.approval_summary(approval)}
    return Completed(
        ToolResult(json.dumps(structured, ensure_ascii=False), structured, is_error=False),
        ToolCall.Outcome.OK,
        approval_id=approval.pk,
    )


async def _enforce_and_call(
    caller: Caller,
    tool: str,
    arguments: dict[str, Any],
    deadline: float,
    *,
    can_ask: bool = False,
    answer: PersonAnswer | None = None,
) -> Completed:
    """Every call is counted against the rate limits before its refusal, if any, is answered:
    unknown tools, denied tools and invalid arguments cost the caller as much as a call. A
    call held for approval reaches Qontak only once a person approved it."""
    try:
        with tracing.step(tracing.POLICY):
            policy = await _policy(caller)
            if tool == APPROVAL_STATUS_TOOL.name:
                screened = None
            else:
                screened = _screened(policy, caller, tool, arguments)
    except (InvalidInput, ToolDenied):
        counted_as = tool if tool in ENDPOINTS_BY_NAME else ""
        await _admit(policy, caller, counted_as, reaches_qontak=False)
        raise
    if screened is None:
        return await _approval_status(policy, caller, arguments)
    endpoint, data, effect = screened
    if effect != ToolPolicy.Effect.APPROVE:
        await _admit(policy, caller, tool, reaches_qontak=True)
        response = await qontak_call.send(caller, policy, endpoint, data, deadline)
        return _completed(endpoint, data, response)
    await _admit(policy, caller, tool, reaches_qontak=False)
    held, approval_id = await _gate(caller, tool, arguments, can_ask=can_ask, answer=answer)
    if held is not None:
        return held
    with tracing.step(tracing.RATE_LIMIT):
        hit = await ratelimit.admit_qontak_retry(policy=policy, tenant_slug=caller.tenant.slug)
        if hit is not None:
            raise RateLimited(hit.message, retry_after=hit.retry_after)
    response = await qontak_call.send(caller, policy, endpoint, data, deadline)
    return replace(_completed(endpoint, data, response), approval_id=approval_id)


async def run_tool_call(
    caller: Caller,
    tool: str,
    arguments: dict[str, Any] | None,
    *,
    can_ask: bool = False,
    answer: PersonAnswer | None = None,
    origin: tracing.Origin | None = None,
) -> ToolCallDone:
    """Run one tools/call through the chain and queue its audit row, whatever happens.
    `can_ask`: the person's client can be asked to approve a held call (see mcpserver.server);
    `answer`: what they answered; `origin`: the trace the call belongs to, when traced."""
    started = time.perf_counter()
    arguments = arguments or {}
    known = tool in ENDPOINTS_BY_NAME or tool == APPROVAL_STATUS_TOOL.name
    with tracing.tool_call(
        tenant=caller.tenant.slug,
        tool=tool if known else UNKNOWN_TOOL_LABEL,  # invented names would each name a span
        request_id=caller.request_id,
        origin=origin,
    ) as span:
        try:
            deadline = asyncio.get_running_loop().time() + settings.TOOL_CALL_DEADLINE
            completed = await _enforce_and_call(
                caller, tool, arguments, deadline, can_ask=can_ask, answer=answer
            )
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
                _error_result(
                    f"internal error while running {tool}; reference {caller.request_id}"
                ),
                ToolCall.Outcome.INTERNAL_ERROR,
            )
        audit_row_written = _audited(caller, tool, arguments, completed, started)
        tracing.step_until_done(tracing.AUDIT_WRITE, audit_row_written)
        tracing.tool_call_outcome(
            span, outcome=completed.outcome, is_error=completed.result.is_error
        )
    return ToolCallDone(
        result=completed.result, audit_row_written=audit_row_written, ask=completed.ask
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
        approval_id=completed.approval_id,
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
