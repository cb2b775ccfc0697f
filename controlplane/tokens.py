"""A valid Qontak access token for a tenant, refreshed once however many callers need it.

Warm path: an in-process cache answers without touching Vault. Cold path (first use, near
expiry, or a 401 from Qontak): one caller per process takes a per-tenant thread lock, then the
cross-process lock (Redis when REDIS_URL is set, otherwise a row lock on QontakCredential),
re-reads Vault (another worker may have refreshed already) and only then calls Qontak. The
rotated refresh token is written to Vault with check-and-set before the new access token is
handed out, because Qontak has already invalidated the old one.

`access_token` is the tool-call path's one entry point (async: the cache is read on the event
loop, a miss crosses to a thread); every other function here blocks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from asgiref.sync import sync_to_async
from django.db import transaction
from django.utils import timezone
from redis.exceptions import LockError

from controlplane import metrics, vault
from controlplane.errors import (
    ApplicationError,
    CredentialMissing,
    CredentialUnavailable,
    InvalidInput,
    ReauthorizationRequired,
    UpstreamError,
)
from controlplane.models import QontakCredential, Tenant
from controlplane.redis import sync_redis
from controlplane.tenants import tenant_qontak_base_url
from qontak import oauth

logger = logging.getLogger(__name__)

MAX_REFRESH_MARGIN = 300.0
REFRESH_MARGIN_SHARE = 0.1
LOCK_TIMEOUT = 30.0


@dataclass(frozen=True)
class CachedToken:
    access_token: str
    expires_at: float
    refresh_at: float

    def __repr__(self) -> str:
        return f"CachedToken(expires_at={self.expires_at})"


_cache: dict[str, CachedToken] = {}
_process_locks: dict[str, threading.Lock] = {}
_process_locks_guard = threading.Lock()


def refresh_margin(lifetime: float) -> float:
    """Refresh this long before expiry: 10% of the lifetime, at most five minutes."""
    return min(max(lifetime, 0.0) * REFRESH_MARGIN_SHARE, MAX_REFRESH_MARGIN)


def _cache_entry(access_token: str, issued_at: float, expires_at: float) -> CachedToken:
    return CachedToken(
        access_token=access_token,
        expires_at=expires_at,
        refresh_at=expires_at - refresh_margin(expires_at - issued_at),
    )


def cached_access_token(slug: str) -> str | None:
    """The cached token when it is still fresh; no I/O, safe on the event loop."""
    entry = _cache.get(slug)
    if entry is not None and time.time() < entry.refresh_at:
        return entry.access_token
    return None


def _cached_token_still_valid(slug: str) -> str | None:
    """The cached token even inside its refresh margin, as long as it has not expired."""
    entry = _cache.get(slug)
    if entry is not None and time.time() < entry.expires_at:
        return entry.access_token
    return None


def forget_cached_tokens() -> None:
    _cache.clear()


def _process_lock(slug: str) -> threading.Lock:
    with _process_locks_guard:
        return _process_locks.setdefault(slug, threading.Lock())


@contextmanager
def _shared_refresh_lock(tenant: Tenant) -> Iterator[None]:
    """Serialize refreshes of one tenant across every process and host."""
    client = sync_redis()
    if client is not None:
        lock = client.lock(
            f"qmcp:token-refresh:{tenant.slug}",
            timeout=LOCK_TIMEOUT,
            blocking_timeout=LOCK_TIMEOUT,
        )
        if not lock.acquire():
            raise CredentialUnavailable("timed out waiting for another token refresh to finish")
        try:
            yield
        finally:
            try:
                lock.release()
            except LockError:
                logger.warning(
                    "token refresh lock expired before release",
                    extra={"event": "token_lock_expired", "tenant": tenant.slug},
                )
        return
    with transaction.atomic():
        # Writing the row takes SQLite's write lock; on PostgreSQL it is a row lock too.
        QontakCredential.objects.select_for_update().filter(tenant=tenant).update(
            lock_nonce=str(time.monotonic_ns())
        )
        yield


def _refresh_grant(tenant: Tenant, refresh_token: str) -> oauth.TokenGrant:
    """Qontak's grant, its failures in the control plane's terms."""
    try:
        return oauth.request_refresh_grant(
            base_url=tenant_qontak_base_url(tenant), refresh_token=refresh_token
        )
    except oauth.GrantRejected:
        raise ReauthorizationRequired(
            "Qontak rejected the stored refresh token (invalid_grant): re-authorize in Qontak "
            f"and store the new token with `manage.py set_refresh_token {tenant.slug}`"
        ) from None
    except oauth.GrantError as exc:
        raise UpstreamError(exc.message, status=exc.status) from exc


def _probe(tenant: Tenant, access_token: str) -> int:
    try:
        return oauth.verify_access_token(
            base_url=tenant_qontak_base_url(tenant), access_token=access_token
        )
    except oauth.GrantError as exc:
        raise UpstreamError(exc.message, status=exc.status) from exc


def _record_success(tenant: Tenant, *, version: int, expires_at: float) -> None:
    QontakCredential.objects.filter(tenant=tenant).update(
        vault_version=version,
        status=QontakCredential.Status.VALID,
        access_token_expires_at=datetime.fromtimestamp(expires_at, tz=UTC),
        last_refreshed_at=timezone.now(),
        last_error="",
        updated_at=timezone.now(),
    )


def _record_failure(tenant: Tenant, error: Exception) -> None:
    status = (
        QontakCredential.Status.NEEDS_REAUTHORIZATION
        if isinstance(error, ReauthorizationRequired)
        else QontakCredential.Status.ERROR
    )
    QontakCredential.objects.filter(tenant=tenant).update(
        status=status, last_error=str(error)[:500], updated_at=timezone.now()
    )


def _store_grant(tenant: Tenant, grant: oauth.TokenGrant, *, cas: int) -> int:
    """Vault first (check-and-set), then metadata and cache: the new token is usable only once
    the rotated refresh token is safe. Returns the new KV version."""
    try:
        version = vault.write_tenant_secret(
            tenant.slug,
            refresh_token=grant.refresh_token,
            access_token=grant.access_token,
            issued_at=grant.issued_at,
            expires_at=grant.expires_at,
            cas=cas,
        )
    except CredentialUnavailable:
        metrics.TOKEN_REFRESHES.labels(result="unsaved").inc()
        logger.critical(
            "Qontak rotated the refresh token but Vault did not store it; the tenant may "
            "need re-authorization",
            extra={"event": "token_refresh_unsaved", "tenant": tenant.slug},
        )
        raise
    _record_success(tenant, version=version, expires_at=grant.expires_at)
    _cache[tenant.slug] = _cache_entry(grant.access_token, grant.issued_at, grant.expires_at)
    return version


def _refresh_locked(tenant: Tenant, secret: vault.TenantSecret) -> CachedToken:
    grant = _refresh_grant(tenant, secret.refresh_token)
    version = _store_grant(tenant, grant, cas=secret.version)
    metrics.TOKEN_REFRESHES.labels(result="ok").inc()
    logger.info(
        "token refreshed, Vault version %s",
        version,
        extra={"event": "token_refreshed", "tenant": tenant.slug},
    )
    return _cache[tenant.slug]


def _secret_needs_refresh(secret: vault.TenantSecret, stale_token: str | None) -> bool:
    if not secret.access_token or secret.access_token == stale_token:
        return True
    return time.time() >= secret.expires_at - refresh_margin(secret.expires_at - secret.issued_at)


def _stored_secret(tenant: Tenant) -> vault.TenantSecret:
    secret = vault.read_tenant_secret(tenant.slug)
    if secret is None or not secret.refresh_token:
        raise CredentialMissing(
            f"no Qontak refresh token stored for tenant '{tenant.slug}': run "
            f"`manage.py set_refresh_token {tenant.slug}`"
        )
    return secret


def _refuse_when_reauthorization_needed(tenant: Tenant) -> None:
    """Don't spend Qontak's token endpoint on a refresh token it already rejected."""
    status = QontakCredential.objects.filter(tenant=tenant).values_list("status", flat=True).first()
    if status == QontakCredential.Status.NEEDS_REAUTHORIZATION:
        raise ReauthorizationRequired(
            f"tenant '{tenant.slug}' needs re-authorization: Qontak rejected its refresh token. "
            f"Re-authorize in Qontak, then run `manage.py set_refresh_token {tenant.slug}`"
        )


@contextmanager
def _refresh_guard(tenant: Tenant) -> Iterator[None]:
    """Both locks, and failures recorded on the credential for the admin (after rollback)."""
    try:
        with _process_lock(tenant.slug), _shared_refresh_lock(tenant):
            yield
    except (ReauthorizationRequired, UpstreamError) as exc:
        _record_failure(tenant, exc)
        metrics.TOKEN_REFRESHES.labels(result="failed").inc()
        logger.warning(
            "token refresh failed",
            extra={"event": "token_refresh_failed", "tenant": tenant.slug, "reason": exc.message},
        )
        raise


async def access_token(*, tenant: Tenant, stale_token: str | None = None) -> str:
    """The access token for a tool call: this worker's copy while fresh (no thread hop), else
    `access_token_for` in a thread."""
    if stale_token is None:
        cached = cached_access_token(tenant.slug)
        if cached is not None:
            return cached
    return await sync_to_async(access_token_for)(tenant=tenant, stale_token=stale_token)


def access_token_for(*, tenant: Tenant, stale_token: str | None = None) -> str:
    """A usable access token; refreshes (once, across processes) when needed.

    `stale_token` is a token Qontak just rejected with 401: it will not be returned again.
    When Vault cannot be reached, a cached token that has not expired yet is still returned:
    a token that works is better than an error. Raises CredentialMissing,
    CredentialUnavailable, ReauthorizationRequired or UpstreamError.
    """
    try:
        return _access_token_for(tenant, stale_token)
    except CredentialUnavailable as exc:
        logger.warning(
            "vault_unavailable: %s",
            exc.message,
            extra={"event": "vault_unavailable", "tenant": tenant.slug},
        )
        still_valid = _cached_token_still_valid(tenant.slug)
        if still_valid is not None and still_valid != stale_token:
            return still_valid
        raise


def _access_token_for(tenant: Tenant, stale_token: str | None) -> str:
    cached = cached_access_token(tenant.slug)
    if cached is not None and cached != stale_token:
        return cached
    _refuse_when_reauthorization_needed(tenant)
    with _refresh_guard(tenant):
        # Another thread or worker may have refreshed while we waited for the locks.
        cached = cached_access_token(tenant.slug)
        if cached is not None and cached != stale_token:
            return cached
        secret = _stored_secret(tenant)
        if not _secret_needs_refresh(secret, stale_token):
            entry = _cache_entry(secret.access_token, secret.issued_at, secret.expires_at)
            _cache[tenant.slug] = entry
            return entry.access_token
        return _refresh_locked(tenant, secret).access_token


@dataclass(frozen=True)
class Rotation:
    """What rotate_tokens did for one tenant."""

    slug: str
    action: str  # rotated | fresh | would_rotate | failed
    detail: str
    expires_at: float | None = None

    @property
    def failed(self) -> bool:
        return self.action == "failed"


def stored_version(*, tenant: Tenant) -> int | None:
    """The KV version of the tenant's secret now (None when absent); no lock taken."""
    secret = vault.read_tenant_secret(tenant.slug)
    return secret.version if secret else None


def token_rotate(
    *,
    tenant: Tenant,
    seen_version: int | None,
    window: float,
    force: bool = False,
    dry_run: bool = False,
) -> Rotation:
    """Refresh the tenant's token if it expires within `window` seconds (any age with force).

    `seen_version` is the secret's version when the caller's run began: if it changed while
    we waited for the lock, a concurrent run (or a tool call) has just rotated the token and
    it is left alone, so runs on several hosts never double-rotate.
    """
    try:
        if dry_run:
            secret = _stored_secret(tenant)
            due = force or secret.expires_at - time.time() <= window
            detail = _expiry_detail(secret.expires_at)
            return Rotation(tenant.slug, "would_rotate" if due else "fresh", detail)
        _refuse_when_reauthorization_needed(tenant)
        with _refresh_guard(tenant):
            secret = _stored_secret(tenant)
            if secret.version != seen_version:
                detail = "rotated by a concurrent run; " + _expiry_detail(secret.expires_at)
                return Rotation(tenant.slug, "fresh", detail, secret.expires_at)
            if not force and secret.expires_at - time.time() > window:
                return Rotation(
                    tenant.slug, "fresh", _expiry_detail(secret.expires_at), secret.expires_at
                )
            entry = _refresh_locked(tenant, secret)
        return Rotation(tenant.slug, "rotated", _expiry_detail(entry.expires_at), entry.expires_at)
    except ApplicationError as exc:
        return Rotation(tenant.slug, "failed", exc.message)


def _expiry_detail(expires_at: float) -> str:
    remaining = expires_at - time.time()
    if remaining <= 0:
        return "access token expired"
    return f"access token valid for {remaining / 60:.0f} more minutes"


def store_refresh_token(*, tenant: Tenant, refresh_token: str) -> None:
    """Validate a refresh token with one grant, then keep the rotated result in Vault.

    The token given is consumed by the validation (Qontak rotates it), so what Vault stores is
    the token Qontak returned, written before the grant's access token is used.
    """
    refresh_token = refresh_token.strip()
    if not refresh_token:
        raise InvalidInput("the refresh token is empty: paste it on standard input")
    with _process_lock(tenant.slug), _shared_refresh_lock(tenant):
        current = vault.read_tenant_secret(tenant.slug)
        try:
            grant = _refresh_grant(tenant, refresh_token)
        except ReauthorizationRequired as exc:
            raise ReauthorizationRequired(
                "Qontak rejected this refresh token (invalid_grant): it was already used or "
                "revoked. Generate a new one in Qontak and try again."
            ) from exc
        version = _store_grant(tenant, grant, cas=current.version if current else 0)
    logger.info(
        "refresh token validated and stored, Vault version %s",
        version,
        extra={"event": "token_stored", "tenant": tenant.slug},
    )


def tenant_connection_test(*, tenant: Tenant) -> str:
    """Vault secret -> access token -> one Qontak API read; a sentence saying how it went.

    Raises the same domain errors as a tool call would, so the admin shows the same reasons.
    """
    token = access_token_for(tenant=tenant)
    status = _probe(tenant, token)
    if status == 401:
        token = access_token_for(tenant=tenant, stale_token=token)
        status = _probe(tenant, token)
    if status != 200:
        raise UpstreamError(f"Qontak answered HTTP {status} to a read with this tenant's token")
    return f"{tenant.slug}: Vault, token refresh and the Qontak API all answered"
