"""The async HTTP client for Qontak's REST API: one pooled connection pool per process.

Every request has a deadline (the tool call's), which bounds its attempts and the waits
between them. Idempotent requests (GET, PUT, DELETE) are retried with backoff on 429 and
502/503/504, honouring Retry-After, and on a connection reset; any request is retried when the
connection could not even be opened (nothing was sent). POST is otherwise never retried, so a
create cannot happen twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from django.conf import settings

from controlplane import tracing

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 502, 503, 504})
IDEMPOTENT_METHODS = frozenset({"GET", "PUT", "DELETE"})
MAX_RETRIES = 2
# Nothing was sent: safe to retry whatever the method.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout)
# The request may have reached Qontak: retried only when repeating it is harmless.
CUT_OFF = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)


@dataclass(frozen=True)
class QontakResponse:
    status: int
    payload: Any
    retry_after: float | None = None


@dataclass(frozen=True)
class FailedAttempt:
    """One attempt that did not get a usable answer: its status, or None if Qontak could not
    be reached, and the wait Qontak asked for (Retry-After), if any."""

    status: int | None
    retry_after: float | None


class TransportFailure(Exception):
    """Qontak could not be reached (connection refused or reset, timeout, TLS)."""


class DeadlineExceeded(Exception):
    """The call's deadline passed before Qontak answered usefully."""


_client: httpx.AsyncClient | None = None


def _http() -> httpx.AsyncClient:
    global _client
    if _client is None or _client.is_closed:
        _client = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.QONTAK_TIMEOUT, connect=10.0),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
            headers={"Accept": "application/json", "User-Agent": "qontak-mcp-controlplane"},
        )
    return _client


async def close_client() -> None:
    global _client
    if _client is not None:
        await _client.aclose()
        _client = None


def retry_after_seconds(response: httpx.Response) -> float | None:
    try:
        return max(float(response.headers.get("Retry-After", "")), 0.0)
    except ValueError:
        return None


def _backoff(attempt: int) -> float:
    return 0.25 * 2**attempt


def _retryable_failure(method: str, exc: httpx.HTTPError) -> bool:
    return isinstance(exc, NOT_SENT) or (method in IDEMPOTENT_METHODS and isinstance(exc, CUT_OFF))


def _describe(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "it did not answer in time"
    if isinstance(exc, NOT_SENT):
        return "the connection was refused"
    if isinstance(exc, CUT_OFF):
        return "the connection was reset"
    return type(exc).__name__


# Authenticates one attempt: (method, path with query as sent, body bytes) -> headers. Called
# for every attempt, since a signature covers the moment it was made.
Authenticator = Callable[[str, str, bytes | None], dict[str, str]]


async def qontak_request(
    *,
    base_url: str,
    authenticate: Authenticator,
    method: str,
    path: str,
    route: str,
    deadline: float,
    params: dict[str, Any] | None = None,
    json_body: Any = None,
    before_retry: Callable[[FailedAttempt], Awaitable[None]] | None = None,
    log_context: Mapping[str, Any] | None = None,
) -> QontakResponse:
    """Send one API request; returns whatever status Qontak answered (errors included).

    `authenticate` gives each attempt its credentials (a bearer token, or Mekari's HMAC
    signature over the exact request line and body). `route` is the path's template
    (`/api/v3.1/contacts/{id}`), which traces show instead of the path, whose parameters are
    the caller's arguments. `deadline` is in the running loop's
    clock (`loop.time()`); DeadlineExceeded is raised when it passes first. `before_retry`
    sees each failed attempt before it is retried and may raise to stop (quota ceilings, a
    tenant-wide backoff). `log_context` (tenant, request id) goes into the retry log lines.
    Raises TransportFailure when Qontak cannot be reached and the request cannot or may not
    be retried.
    """
    loop = asyncio.get_running_loop()
    url = base_url.rstrip("/") + path
    body = None if json_body is None else json.dumps(json_body).encode()
    attempt = 0
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise DeadlineExceeded
        failure: FailedAttempt | None = None
        try:
            response = await _send_once(
                method,
                url,
                params,
                body,
                authenticate,
                min(settings.QONTAK_TIMEOUT, remaining),
                base_url=base_url,
                route=route,
                attempt=attempt,
            )
        except httpx.HTTPError as exc:
            if loop.time() >= deadline:
                raise DeadlineExceeded from exc
            if not _retryable_failure(method, exc) or attempt >= MAX_RETRIES:
                raise TransportFailure(f"cannot reach Qontak: {_describe(exc)}") from exc
            failure = FailedAttempt(status=None, retry_after=None)
            wait = _backoff(attempt)
        else:
            retry_after = retry_after_seconds(response)
            retryable = method in IDEMPOTENT_METHODS and response.status_code in RETRY_STATUSES
            if not retryable or attempt >= MAX_RETRIES:
                return _answer(response, retry_after)
            failure = FailedAttempt(status=response.status_code, retry_after=retry_after)
            wait = retry_after if retry_after is not None else _backoff(attempt)
            if loop.time() + wait >= deadline:  # waiting would outlast the call: answer now
                return _answer(response, retry_after)
        logger.info(
            "qontak_retry status=%s wait=%.2fs path=%s",
            failure.status,
            wait,
            path,
            extra={**(log_context or {}), "event": "qontak_retry", "status": failure.status},
        )
        if before_retry is not None:
            await before_retry(failure)
        await asyncio.sleep(wait)
        attempt += 1


async def _send_once(
    method: str,
    url: str,
    params: dict[str, Any] | None,
    body: bytes | None,
    authenticate: Authenticator,
    seconds: float,
    *,
    base_url: str,
    route: str,
    attempt: int,
) -> httpx.Response:
    client = _http()
    request = client.build_request(
        method,
        url,
        params=params,
        content=body,
        headers={"Content-Type": "application/json"} if body is not None else None,
        timeout=seconds,
    )
    request.headers.update(authenticate(method, request.url.raw_path.decode("ascii"), body))
    traced = tracing.http_request(request, base_url=base_url, route=route, resend_count=attempt)
    with traced as span:
        response = await client.send(request)
        tracing.http_response(span, response.status_code)
    return response


def _answer(response: httpx.Response, retry_after: float | None) -> QontakResponse:
    try:
        payload: Any = response.json()
    except ValueError:
        payload = {"raw": response.text[:2000]}
    return QontakResponse(status=response.status_code, payload=payload, retry_after=retry_after)
