"""Prometheus metrics: what operators alert on.

With several worker processes, set PROMETHEUS_MULTIPROC_DIR (an empty directory, writable by
every worker) so /metrics aggregates all of them; without it each worker reports its own.
"""

from __future__ import annotations

import hmac
import ipaddress
import os

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

TOOL_CALLS = Counter(
    "qmcp_tool_calls_total", "Tool calls by tool and outcome.", ["tool", "outcome"]
)
TOOL_CALL_LATENCY = Histogram(
    "qmcp_tool_call_latency_seconds",
    "Time from tools/call to result, control and Qontak included.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RATE_LIMIT_REJECTIONS = Counter(
    "qmcp_rate_limit_rejections_total", "Calls refused by a rate limit.", ["limit"]
)
TOKEN_REFRESHES = Counter(
    "qmcp_token_refreshes_total", "Qontak token refreshes by result.", ["result"]
)
AUDIT_WRITE_FAILURES = Counter(
    "qmcp_audit_write_failures_total", "Audit rows that could not be written."
)


def may_read_operations(request: HttpRequest) -> bool:
    """Whether the client may read operational detail (/metrics, /readyz's checks): the
    metrics token when one is set (compared in constant time), else an allowed network."""
    token = settings.METRICS_TOKEN
    if token:
        sent = request.headers.get("Authorization", "").encode()
        return hmac.compare_digest(sent, f"Bearer {token}".encode())
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(net) for net in settings.METRICS_ALLOWED_NETWORKS)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """/metrics for Prometheus: a bearer token (METRICS_TOKEN) or an allowed source network."""
    if not may_read_operations(request):
        return HttpResponse("metrics are not available to this client\n", status=403)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        body = generate_latest()
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
