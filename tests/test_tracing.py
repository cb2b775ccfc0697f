"""OpenTelemetry traces of tool calls: the pipeline in-process with the SDK's in-memory
exporter, and a real control plane exporting OTLP/HTTP to a receiver on loopback."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from controlplane import tracing
from devtools.devstack import free_port
from tests.calls import (
    ERAS,
    TenantWithKey,
    audited_calls,
    in_one_loop,
    in_process_caller_of,
    run_tool_call_and_drain,
)
from tests.servers import (
    ControlPlaneServer,
    dedicated_control_plane,
    simulator_requests,
    tenant_secret,
)

STEPS = {"authenticate", "policy", "rate limit", "token", "GET /api/v3.1/contacts", "audit write"}


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    """Tracing on in this process, into memory, for one test."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.start(provider)
    yield exporter
    tracing.stop()


def _secrets(demo: TenantWithKey) -> list[str]:
    """What must never appear in a span: the API key and the tenant's Qontak tokens."""
    secret = tenant_secret(demo.tenant)
    assert secret is not None
    return [demo.key, secret.access_token, secret.refresh_token]


def _assert_nothing_leaks(values: list[str], forbidden: list[str]) -> None:
    for value in values:
        for word in forbidden:
            assert word not in value, f"{word!r} leaked into a span attribute: {value!r}"


def _attribute_values(spans: list[ReadableSpan]) -> list[str]:
    """Everything a span exports as text: its name, attributes, status and events."""
    values = [span.name for span in spans]
    for span in spans:
        values += [f"{key}={value!r}" for key, value in (span.attributes or {}).items()]
        values.append(span.status.description or "")
        for event in span.events:
            values += [event.name, *(str(v) for v in (event.attributes or {}).values())]
    return values


# The pipeline in-process, with the SDK's in-memory exporter.


def test_a_tool_call_is_one_span_with_a_child_per_step_and_its_context_reaches_qontak(
    exported, make_tenant, simulator
):
    demo = make_tenant("traced")
    name = f"Secret-Name-{uuid.uuid4().hex[:8]}"
    caller = in_process_caller_of(demo)

    result = in_one_loop(
        lambda: run_tool_call_and_drain(caller, "list_contacts", {"name": name, "page": 7})
    )

    assert not result.is_error
    spans = exported.get_finished_spans()
    (call,) = [span for span in spans if span.parent is None]
    assert call.name == "tools/call list_contacts"
    assert call.kind is trace.SpanKind.SERVER
    assert dict(call.attributes or {}) == {
        "mcp.method.name": "tools/call",
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "list_contacts",
        "qontak.tenant": demo.tenant.slug,
        "qontak.request_id": "req-in-process",
        "qontak.outcome": "ok",
    }
    children = [span for span in spans if span is not call]
    assert {span.parent.span_id for span in children if span.parent} == {call.context.span_id}
    assert {span.context.trace_id for span in spans} == {call.context.trace_id}
    # In-process there is no HTTP request to authenticate.
    assert {span.name for span in children} == STEPS - {"authenticate"}

    (http,) = [span for span in children if span.kind is trace.SpanKind.CLIENT]
    assert dict(http.attributes or {}) == {
        "http.request.method": "GET",
        "url.full": f"{simulator.url}/api/v3.1/contacts",
        "url.template": "/api/v3.1/contacts",
        "server.address": "127.0.0.1",
        "server.port": int(simulator.url.rsplit(":", 1)[1]),
        "http.response.status_code": 200,
    }
    (sent,) = [
        r for r in simulator_requests(simulator, demo.account) if r["route"] != "POST /oauth/token"
    ]
    assert sent["query"]["name"] == name
    assert sent["traceparent"].startswith(
        f"00-{call.context.trace_id:032x}-{http.context.span_id:016x}-"
    )
    _assert_nothing_leaks(_attribute_values(spans), [name, *_secrets(demo)])

    # Off again: no span, and nothing sent to Qontak says there was a trace.
    tracing.stop()
    exported.clear()
    in_one_loop(lambda: run_tool_call_and_drain(caller, "list_contacts", {"name": name}))
    assert exported.get_finished_spans() == ()
    assert "traceparent" not in simulator_requests(simulator, demo.account)[-1]


def test_a_gateway_call_traces_the_gateways_url_and_is_still_accepted(
    exported, make_tenant, simulator
):
    demo = make_tenant("traced", gateway=True)
    caller = in_process_caller_of(demo)

    result = in_one_loop(lambda: run_tool_call_and_drain(caller, "list_contacts", {}))

    assert not result.is_error  # the trace context header does not upset the HMAC signature
    spans = {span.name: span for span in exported.get_finished_spans()}
    assert {"token", "GET /qontak/crm/contacts"} <= set(spans)
    http = spans["GET /qontak/crm/contacts"]
    assert http.attributes is not None
    assert http.attributes["url.full"] == f"{simulator.url}/qontak/crm/contacts"
    sent = simulator_requests(simulator, demo.account)[-1]  # after the credential's check
    assert sent["path"] == "/qontak/crm/contacts"
    assert sent["traceparent"].startswith(f"00-{http.context.trace_id:032x}-")


def test_a_refused_call_marks_its_policy_step_and_never_reaches_qontak(
    exported, make_tenant, simulator
):
    demo = make_tenant("traced")
    invented = f"steal_everything_{uuid.uuid4().hex[:8]}"
    caller = in_process_caller_of(demo)

    result = in_one_loop(lambda: run_tool_call_and_drain(caller, invented, {"x": 1}))

    assert result.is_error
    spans = {span.name: span for span in exported.get_finished_spans()}
    assert set(spans) == {"tools/call unknown", "policy", "rate limit", "audit write"}
    call, policy = spans["tools/call unknown"], spans["policy"]
    assert call.attributes is not None and policy.attributes is not None
    assert call.status.status_code is trace.StatusCode.ERROR
    assert call.attributes["qontak.outcome"] == "invalid_input"
    assert policy.status.status_code is trace.StatusCode.ERROR
    assert policy.attributes["error.type"] == "InvalidInput"
    assert not [
        r for r in simulator_requests(simulator, demo.account) if r["route"] != "POST /oauth/token"
    ]
    _assert_nothing_leaks(_attribute_values(list(spans.values())), [invented])


# A real control plane exporting over OTLP/HTTP to a receiver on loopback.


class OtlpReceiver:
    """An OTLP/HTTP trace receiver: keeps every span POSTed to /v1/traces (protobuf), with
    its resource's attributes."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict[str, Any], Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                request = ExportTraceServiceRequest.FromString(body)
                with receiver.lock:
                    for resource_spans in request.resource_spans:
                        resource = _attributes(resource_spans.resource.attributes)
                        for scope_spans in resource_spans.scope_spans:
                            receiver.spans += [(resource, s) for s in scope_spans.spans]
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def trace(self, trace_id: str, expected: set[str], timeout: float = 15.0) -> list[Any]:
        """The spans of one trace, once those named `expected` have all arrived."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                spans = [s for _, s in self.spans if s.trace_id.hex() == trace_id]
            if expected <= {s.name for s in spans}:
                return spans
            if time.monotonic() >= deadline:
                raise AssertionError(f"spans of {trace_id}: {sorted(s.name for s in spans)}")
            time.sleep(0.05)

    def resources(self) -> list[dict[str, Any]]:
        with self.lock:
            return [resource for resource, _ in self.spans]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _attributes(pairs: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for pair in pairs:
        kind = pair.value.WhichOneof("value")
        values[pair.key] = getattr(pair.value, kind) if kind else None
    return values


@pytest.fixture(scope="module")
def otlp_receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def traced_control_plane(
    request: pytest.FixtureRequest, otlp_receiver: OtlpReceiver
) -> Iterator[ControlPlaneServer]:
    with dedicated_control_plane(
        request,
        TRACING_ENABLED="true",
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp_receiver.url,
        OTEL_SERVICE_NAME="qontak-mcp-under-test",
        OTEL_BSP_SCHEDULE_DELAY="50",  # milliseconds: export without waiting 5 s
    ) as server:
        yield server


def _list_contacts(
    url: str, key: str, era: str, name: str, traceparent: str, in_meta: SpanContext | None = None
) -> Any:
    """list_contacts with the official client, sending `traceparent` as an HTTP header and,
    when given, `in_meta` as the trace context in the request's _meta."""

    async def call() -> Any:
        headers = {"Authorization": f"Bearer {key}", "traceparent": traceparent}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30)) as http,
            Client(streamable_http_client(url, http_client=http), mode=ERAS[era]) as client,
        ):
            if in_meta is None:
                return await client.call_tool("list_contacts", {"name": name})
            # The official client puts the current trace context in the request's _meta.
            with trace.use_span(NonRecordingSpan(in_meta)):
                return await client.call_tool("list_contacts", {"name": name})

    return asyncio.run(call())


def _ids() -> tuple[str, str]:
    """A trace id and a span id, in hex."""
    return uuid.uuid4().hex, uuid.uuid4().hex[:16]


def test_a_served_tool_call_exports_its_spans_over_otlp_in_the_callers_trace(
    traced_control_plane, otlp_receiver, make_tenant, simulator, era
):
    demo = make_tenant("otlp")
    name = f"Secret-Name-{uuid.uuid4().hex[:8]}"
    trace_id, parent = _ids()

    result = _list_contacts(
        traced_control_plane.mcp_url, demo.key, era, name, f"00-{trace_id}-{parent}-01"
    )

    assert not result.is_error
    audited_calls(demo.tenant, 1)
    spans = otlp_receiver.trace(trace_id, {"tools/call list_contacts", *STEPS})
    by_name = {span.name: span for span in spans}
    call = by_name["tools/call list_contacts"]
    assert call.parent_span_id.hex() == parent
    assert {by_name[step].parent_span_id for step in STEPS} == {call.span_id}
    assert _attributes(call.attributes) | {"qontak.request_id": None} == {
        "mcp.method.name": "tools/call",
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "list_contacts",
        "qontak.tenant": demo.tenant.slug,
        "qontak.request_id": None,
        "qontak.outcome": "ok",
    }
    # The call started when its request arrived: authentication is inside it.
    authenticate = by_name["authenticate"]
    assert call.start_time_unix_nano <= authenticate.start_time_unix_nano
    assert authenticate.end_time_unix_nano <= by_name["policy"].start_time_unix_nano
    http = by_name["GET /api/v3.1/contacts"]
    assert _attributes(http.attributes) == {
        "http.request.method": "GET",
        "url.full": f"{simulator.url}/api/v3.1/contacts",
        "url.template": "/api/v3.1/contacts",
        "server.address": "127.0.0.1",
        "server.port": int(simulator.url.rsplit(":", 1)[1]),
        "http.response.status_code": 200,
    }
    resource = otlp_receiver.resources()[0]
    assert resource["service.name"] == "qontak-mcp-under-test"
    (sent,) = [
        r for r in simulator_requests(simulator, demo.account) if r["route"] != "POST /oauth/token"
    ]
    assert sent["traceparent"].startswith(f"00-{trace_id}-{http.span_id.hex()}-")
    values = [f"{s.name} {_attributes(s.attributes)}" for s in spans]
    _assert_nothing_leaks(values, [name, *_secrets(demo)])


def test_the_trace_context_in_a_requests_meta_wins_over_the_http_header(
    traced_control_plane, otlp_receiver, make_tenant, simulator
):
    demo = make_tenant("otlp")
    header_trace, header_parent = _ids()
    meta_trace, meta_parent = _ids()
    in_meta = SpanContext(
        int(meta_trace, 16), int(meta_parent, 16), True, TraceFlags(TraceFlags.SAMPLED)
    )

    _list_contacts(
        traced_control_plane.mcp_url,
        demo.key,
        "2026-07-28",
        "Anyone",
        f"00-{header_trace}-{header_parent}-01",
        in_meta,
    )

    audited_calls(demo.tenant, 1)
    spans = otlp_receiver.trace(meta_trace, {"tools/call list_contacts", *STEPS})
    (call,) = [span for span in spans if span.name == "tools/call list_contacts"]
    assert call.parent_span_id.hex() == meta_parent
    (sent,) = [
        r for r in simulator_requests(simulator, demo.account) if r["route"] != "POST /oauth/token"
    ]
    assert sent["traceparent"].startswith(f"00-{meta_trace}-")
