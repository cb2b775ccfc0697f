"""/healthz: is each dependency of a tool call reachable from this worker?"""

from __future__ import annotations

from django.core.cache import caches
from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from controlplane.vault import vault_status


def _database() -> tuple[bool, str]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True, connection.vendor
    except DatabaseError as exc:
        return False, f"{connection.vendor}: {type(exc).__name__}"


def _cache() -> tuple[bool, str]:
    cache = caches["default"]
    backend = type(cache).__name__
    try:
        cache.set("healthz", "ok", 5)
        return cache.get("healthz") == "ok", backend
    except Exception as exc:  # any backend error means "not usable"
        return False, f"{backend}: {type(exc).__name__}"


def _vault() -> tuple[bool, str]:
    status = vault_status()
    return status.reachable and status.authenticated and status.mount_ok, status.detail


CHECKS = {"database": _database, "cache": _cache, "vault": _vault}


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    results = {name: check() for name, check in CHECKS.items()}
    healthy = all(ok for ok, _ in results.values())
    body = {
        "status": "ok" if healthy else "degraded",
        "checks": {name: {"ok": ok, "detail": detail} for name, (ok, detail) in results.items()},
    }
    return JsonResponse(body, status=200 if healthy else 503)
