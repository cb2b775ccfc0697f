"""Health for load balancers and operators.

/healthz is liveness: public, no I/O, 200 while the process serves. /readyz is readiness:
whether this worker can serve a tool call now (database, cache, Vault), each check in its
own thread, the whole answer within READINESS_TIMEOUT however stuck a dependency is. Anyone
gets the verdict and its status code; the details (which dependency, the vendor, the Vault
token's lease) only a client that may read /metrics (loopback, or the metrics token).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import sync_to_async
from django.core.cache import caches
from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from controlplane import vault
from controlplane.errors import CredentialUnavailable
from controlplane.metrics import may_read_operations

READINESS_TIMEOUT = 2.0

Check = Callable[[], tuple[bool, str]]
# Checks run here, never on Django's one thread-sensitive thread: a stuck dependency must not
# hold up other requests' database work.
_checks_pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="readiness")


def _database() -> tuple[bool, str]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True, connection.vendor
    except DatabaseError as exc:
        return False, f"{connection.vendor}: {type(exc).__name__}"
    finally:
        connection.close()  # each check connects anew: that is what it proves


def _cache() -> tuple[bool, str]:
    cache = caches["default"]
    backend = type(cache).__name__
    try:
        cache.set("readyz", "ok", 5)
        return cache.get("readyz") == "ok", backend
    except Exception as exc:  # any backend error means "not usable"
        return False, f"{backend}: {type(exc).__name__}"


def _vault() -> tuple[bool, str]:
    try:
        lease = vault.token_lease()
    except CredentialUnavailable as exc:
        return False, exc.message
    expiring = (
        lease.ttl is not None
        and lease.ttl < vault.TOKEN_TTL_WARNING_SECONDS
        and not lease.renewable
    )
    return not expiring, lease.detail


CHECKS: dict[str, Check] = {"database": _database, "cache": _cache, "vault": _vault}


async def _run(check: Check) -> tuple[bool, str]:
    try:
        async with asyncio.timeout(READINESS_TIMEOUT):
            return await sync_to_async(check, thread_sensitive=False, executor=_checks_pool)()
    except TimeoutError:
        return False, f"no answer within {READINESS_TIMEOUT:g} s"


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@require_GET
async def readyz(request: HttpRequest) -> JsonResponse:
    outcomes = await asyncio.gather(*(_run(check) for check in CHECKS.values()))
    results = dict(zip(CHECKS, outcomes, strict=True))
    ready = all(ok for ok, _ in outcomes)
    body: dict[str, object] = {"status": "ok" if ready else "degraded"}
    if may_read_operations(request):
        body["checks"] = {
            name: {"ok": ok, "detail": detail} for name, (ok, detail) in results.items()
        }
    return JsonResponse(body, status=200 if ready else 503)
