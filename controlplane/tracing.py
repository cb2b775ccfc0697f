"""OpenTelemetry traces of tool calls (README, Tracing): one span per call, a child per step.

Off unless TRACING_ENABLED. Then no SDK provider exists and every helper here returns at once
after one global read: `tool_call` and `step` hand back the same do-nothing context manager,
and nothing is allocated per call. When on, the provider is this module's own and is not
installed as OpenTelemetry's global one, so only these spans are exported (the MCP SDK's own
per-message spans stay no-ops) and tests can start and stop it. The exporter, its endpoint,
headers and timeout, the sampler and the service name come from the standard OTEL_*
variables, which the SDK reads itself.

A tool call's span (`tools/call <tool>`) starts when its HTTP request arrived, so the
authentication it passed is one of its children, and ends when the call is answered: its
`audit write` child ends later, once the audit row is committed. Trace context comes in and
goes out as W3C Trace Context only (never baggage, which would carry whatever the client put
in it on to Qontak).

Attributes name the tenant, the tool, the request id and the outcome, never an argument
value or a credential: the Qontak request's URL keeps its route's placeholders and drops its
query (both carry arguments), and an exception is recorded by its type alone (a message may
quote an argument).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    import httpx
    from opentelemetry.sdk.trace import TracerProvider

SERVICE_NAME = "qontak-mcp-controlplane"
INSTRUMENTATION = "qontak_mcp_controlplane"

# The steps of a tool call, as its child spans are named.
AUTHENTICATE = "authenticate"
POLICY = "policy"
RATE_LIMIT = "rate limit"
APPROVAL = "approval"
TOKEN = "token"  # noqa: S105 (a step's name)
AUDIT_WRITE = "audit write"

_propagator = TraceContextTextMapPropagator()
_provider: TracerProvider | None = None
_tracer: trace.Tracer | None = None
_OFF: contextlib.nullcontext[None] = contextlib.nullcontext()


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a tool call's trace starts: the caller's trace context (None: a trace of its
    own), and when its HTTP request arrived and was authenticated (time.time_ns())."""

    parent: Context | None
    received: int
    authenticated: int


def enabled() -> bool:
    return _tracer is not None


def now() -> int:
    """The time for a span's start or end (time.time_ns()); 0 while tracing is off."""
    return time.time_ns() if _tracer is not None else 0


def parent_context(
    meta: Mapping[str, Any] | None, headers: Mapping[str, str] | None
) -> Context | None:
    """The caller's trace context: from the request's `_meta` (the MCP way, one per message),
    else from the HTTP request's `traceparent` header; None when neither holds a valid one."""
    for carrier in (meta, headers):
        if not carrier:
            continue
        traceparent = carrier.get("traceparent")
        if not isinstance(traceparent, str):
            continue
        tracestate = carrier.get("tracestate")
        context = _propagator.extract(
            {"traceparent": traceparent}
            | ({"tracestate": tracestate} if isinstance(tracestate, str) else {})
        )
        if trace.get_current_span(context).get_span_context().is_valid:
            return context
    return None


def tool_call(
    *, tenant: str, tool: str, request_id: str, origin: Origin | None
) -> contextlib.AbstractContextManager[trace.Span | None]:
    """The span of one tool call, current while the call runs (None while tracing is off).
    `tool` must be a known tool's name or a fixed label: it names the span. Without an
    `origin` (the pipeline run in-process) the span is a child of the current one."""
    if _tracer is None:
        return _OFF
    return _tool_call_span(_tracer, tenant=tenant, tool=tool, request_id=request_id, origin=origin)


@contextlib.contextmanager
def _tool_call_span(
    tracer: trace.Tracer, *, tenant: str, tool: str, request_id: str, origin: Origin | None
) -> Iterator[trace.Span]:
    attributes = {
        "mcp.method.name": "tools/call",
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": tool,
        "qontak.tenant": tenant,
        "qontak.request_id": request_id,
    }
    with _span(
        tracer,
        f"tools/call {tool}",
        kind=SpanKind.SERVER,
        attributes=attributes,
        # An empty context: no trace was sent, so the call starts one (not the ambient one).
        context=None if origin is None else origin.parent or Context(),
        start_time=None if origin is None else origin.received,
    ) as span:
        if origin is not None:
            tracer.start_span(AUTHENTICATE, start_time=origin.received).end(origin.authenticated)
        yield span


def tool_call_outcome(span: trace.Span | None, *, outcome: str, is_error: bool) -> None:
    """Mark the call's span with its audit outcome (an error when the result is one)."""
    if span is None:
        return
    span.set_attribute("qontak.outcome", outcome)
    if is_error:
        span.set_attribute("error.type", outcome)
        span.set_status(StatusCode.ERROR)


def step(name: str) -> contextlib.AbstractContextManager[trace.Span | None]:
    """A child span of the current tool call for one step; an exception leaving it marks it
    an error, by type. Nothing outside a recorded tool call."""
    if _tracer is None or not trace.get_current_span().is_recording():
        return _OFF
    return _span(_tracer, name)


def step_until_done(name: str, done: asyncio.Future[Any]) -> None:
    """A child span of the current tool call from now until `done` completes (the audit row,
    written after the call is answered)."""
    if _tracer is None or not trace.get_current_span().is_recording():
        return
    span = _tracer.start_span(name)
    done.add_done_callback(lambda _: span.end())


def http_request(
    request: httpx.Request, *, base_url: str, route: str, resend_count: int
) -> contextlib.AbstractContextManager[trace.Span | None]:
    """A client span for one HTTP request to Qontak (OpenTelemetry's HTTP conventions), which
    also puts its trace context in the request's headers. `route`: the template of the path
    under `base_url` (`/api/v3.1/contacts/{id}`), which stands for the path in `url.full`."""
    if _tracer is None or not trace.get_current_span().is_recording():
        return _OFF
    template = urlsplit(base_url).path.rstrip("/") + route
    return _http_request_span(_tracer, request, template=template, resend_count=resend_count)


@contextlib.contextmanager
def _http_request_span(
    tracer: trace.Tracer, request: httpx.Request, *, template: str, resend_count: int
) -> Iterator[trace.Span]:
    url = request.url
    port = url.port or (443 if url.scheme == "https" else 80)
    authority = url.host if url.port is None else f"{url.host}:{url.port}"
    attributes: dict[str, str | int] = {
        "http.request.method": request.method,
        "url.full": f"{url.scheme}://{authority}{template}",
        "url.template": template,
        "server.address": url.host,
        "server.port": port,
    }
    if resend_count:
        attributes["http.request.resend_count"] = resend_count
    with _span(
        tracer, f"{request.method} {template}", kind=SpanKind.CLIENT, attributes=attributes
    ) as span:
        inject(request.headers)
        yield span


def http_response(span: trace.Span | None, status: int) -> None:
    if span is None:
        return
    span.set_attribute("http.response.status_code", status)
    if status >= 400:
        span.set_attribute("error.type", str(status))
        span.set_status(StatusCode.ERROR)


def inject(headers: MutableMapping[str, str]) -> None:
    """Put the current span's context into outgoing headers (`traceparent`, `tracestate`)."""
    _propagator.inject(headers)


@contextlib.contextmanager
def _span(
    tracer: trace.Tracer,
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: dict[str, Any] | None = None,
    context: Context | None = None,
    start_time: int | None = None,
) -> Iterator[trace.Span]:
    with tracer.start_as_current_span(
        name,
        context=context,
        kind=kind,
        attributes=attributes,
        start_time=start_time,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except BaseException as exc:
            span.set_attribute("error.type", type(exc).__qualname__)
            span.set_status(StatusCode.ERROR)
            raise


def start(provider: TracerProvider | None = None) -> None:
    """Trace tool calls from now on: with `provider`, else one exporting as the OTEL_*
    variables say (OTEL_TRACES_EXPORTER: otlp over HTTP/protobuf, console or none)."""
    global _provider, _tracer
    _provider = provider or _exporting_provider()
    _tracer = _provider.get_tracer(INSTRUMENTATION)


def stop() -> None:
    """Stop tracing and export the spans still held (blocking: up to the exporter's timeout)."""
    global _provider, _tracer
    provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()


@contextlib.asynccontextmanager
async def exporting() -> AsyncIterator[None]:
    """Trace for the life of the process when TRACING_ENABLED (asgi's lifespan); on the way
    out, the last spans are exported off the event loop."""
    if not settings.TRACING_ENABLED:
        yield
        return
    start()
    try:
        yield
    finally:
        await asyncio.to_thread(stop)


def _exporting_provider() -> TracerProvider:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    provider = TracerProvider(resource=resource)
    exporter = settings.OTEL_TRACES_EXPORTER
    if exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    elif exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif exporter != "none":
        raise ImproperlyConfigured(
            f"OTEL_TRACES_EXPORTER={exporter!r} is not supported: use otlp, console or none"
        )
    return provider
