"""The async HTTP client for Qontak's REST API: one pooled connection pool per process.

Idempotent requests (GET, PUT, DELETE) are retried with backoff on 429 and 502/503/504,
honouring Retry-After up to a bound; POST is never retried, so a create cannot happen twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from django.conf import settings

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 502, 503, 504})
IDEMPOTENT_METHODS = frozenset({"GET", "PUT", "DELETE"})
MAX_RETRIES = 2
MAX_RETRY_WAIT = 5.0


@dataclass(frozen=True)
class QontakResponse:
    status: int
    payload: Any


class TransportFailure(Exception):
    """Qontak could not be reached at all (connection refused, timeout, TLS)."""


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


def _retry_wait(response: httpx.Response, attempt: int) -> float:
    header = response.headers.get("Retry-After", "")
    try:
        wait = float(header)
    except ValueError:
        wait = 0.25 * 2**attempt
    return min(max(wait, 0.0), MAX_RETRY_WAIT)


async def qontak_request(
    *,
    base_url: str,
    access_token: str,
    method: str,
    path: str,
    params: dict[str, Any] | None = None,
    json_body: Any = None,
    before_retry: Callable[[], Awaitable[None]] | None = None,
) -> QontakResponse:
    """Send one API request; returns whatever status Qontak answered (errors included).

    `before_retry` runs before each retry and may raise to stop retrying (quota ceilings).
    """
    url = base_url.rstrip("/") + path
    headers = {"Authorization": f"Bearer {access_token}"}
    attempt = 0
    while True:
        try:
            response = await _http().request(
                method, url, params=params, json=json_body, headers=headers
            )
        except httpx.HTTPError as exc:
            raise TransportFailure(f"cannot reach Qontak: {type(exc).__name__}") from exc
        retryable = method in IDEMPOTENT_METHODS and response.status_code in RETRY_STATUSES
        if not retryable or attempt >= MAX_RETRIES:
            break
        wait = _retry_wait(response, attempt)
        logger.info(
            "qontak_retry status=%s wait=%.2fs path=%s",
            response.status_code,
            wait,
            path,
            extra={"event": "qontak_retry", "status": response.status_code},
        )
        await asyncio.sleep(wait)
        if before_retry is not None:
            await before_retry()
        attempt += 1
    try:
        payload: Any = response.json()
    except ValueError:
        payload = {"raw": response.text[:2000]}
    return QontakResponse(status=response.status_code, payload=payload)
