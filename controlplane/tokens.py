"""A valid Qontak access token for a tenant, refreshed once however many callers need it.

Warm path: this worker's copy answers without touching Vault; inside the refresh margin it is
still used while one background refresh runs. Cold path (first use, expiry, or a 401 from
Qontak): the callers of one tenant share one refresh in this worker (single flight), which
runs on a thread pool of its own, never Django's one thread-sensitive thread, so a slow Vault
or Qontak for one tenant does not hold up another's calls. The refresh takes a per-tenant
lock across every process (Redis when REDIS_URL is set, otherwise a row lock on
QontakCredential), re-reads Vault (another worker may have refreshed already) and only then
calls Qontak. The rotated refresh token is written to Vault with check-and-set before the new
access token is handed out, because Qontak has already invalidated the old one.

A token belongs to the Qontak base URL that issued it: copies and stored tokens for another
URL are ignored, so changing a tenant's URL never sends its token to the new host. While
Vault does not answer (its reads then fail at once for a few seconds, controlplane.vault), a
copy that has not expired is still used.

`access_token` is the tool-call path's one entry point (async); every other function blocks.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Hashable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone
from redis.exceptions import LockError

from controlplane import metrics, vault
from controlplane.errors import (
    CredentialMissing,
    CredentialUnavailable,
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
# Waiting for another refresh of the same tenant gives up well before a call's deadline.
LOCK_WAIT_SECONDS = 10.0
TOKEN_THREADS = 16


def refresh_lock_ttl() -> float:
    """How long a refresh can take at most (a Vault read, Qontak's grant, a Vault write, each
    bounded by its timeout), with a margin: the cross-process lock must outlive it, or a
    second worker could spend a refresh token Qontak has already rotated."""
    return 2 * settings.VAULT_TIMEOUT + settings.QONTAK_TIMEOUT + 10.0


@dataclass(frozen=True)
class CachedToken:
    access_token: str
    expires_at: float
    refresh_at: float
    base_url: str

    def __repr__(self) -> str:
        return f"CachedToken(expires_at={self.expires_at})"


_cache: dict[int, CachedToken] = {}
_process_locks: dict[int, threading.Lock] = {}
_process_locks_guard = threading.Lock()
token_threads = ThreadPoolExecutor(max_workers=TOKEN_THREADS, thread_name_prefix="tokens")
# One fetch per credential in flight in this worker; callers share it (single_flight).
_flights: dict[Hashable, asyncio.Task[Any]] = {}
T = TypeVar("T")


def refresh_margin(lifetime: float) -> float:
    """Refresh this long before expiry: 10% of the lifetime, at most five minutes."""
    return min(max(lifetime, 0.0) * REFRESH_MARGIN_SHARE, MAX_REFRESH_MARGIN)


def _entry(token: str, issued_at: float, expires_at: float, base_url: str) -> CachedToken:
    return CachedToken(
        access_token=token,
        expires_at=expires_at,
        refresh_at=expires_at - refresh_margin(expires_at - issued_at),
        base_url=base_url,
    )


def _copy(tenant: Tenant) -> CachedToken | None:
    """This worker's copy, if it was issued by the tenant's current Qontak URL."""
    entry = _cache.get(tenant.pk)
    if entry is None or entry.base_url != tenant_qontak_base_url(tenant):
        return None
    return entry


def _fresh_copy(tenant: Tenant, stale_token: str | None) -> str | None:
    entry = _copy(tenant)
    if entry is None or entry.access_token == stale_token or time.time() >= entry.refresh_at:
        return None
    return entry.access_token


def forget_cached_tokens() -> None:
    _cache.clear()


async def access_token(*, tenant: Tenant, stale_token: str | None = None) -> str:
    """The access token for a tool call. A copy that has not expired is returned at once (a
    background refresh starts once it is due); otherwise the caller waits for the tenant's one
    refresh in flight. `stale_token` is a token Qontak just rejected with 401."""
    entry = _copy(tenant)
    if stale_token is None and entry is not None and time.time() < entry.expires_at:
        if time.time() >= entry.refresh_at:
            _refresh_soon(tenant)
        return entry.access_token
    return await asyncio.shield(_flight(tenant, stale_token))


def single_flight(key: Hashable, start: Callable[[], Coroutine[Any, Any, T]]) -> asyncio.Task[T]:
    """The task already fetching `key` in this worker, or a new one from `start`: however many
    callers need the same credential at once, it is fetched once."""
    loop = asyncio.get_running_loop()
    task = _flights.get(key)
    if task is None or task.done() or task.get_loop() is not loop:
        task = loop.create_task(start())
        _flights[key] = task
        task.add_done_callback(
            lambda done: _flights.pop(key, None) if _flights.get(key) is done else None
        )
    return task


def _flight(tenant: Tenant, stale_token: str | None) -> asyncio.Task[str]:
    return single_flight(
        ("token", tenant.pk, stale_token), lambda: _in_token_thread(tenant, stale_token)
    )


def _refresh_soon(tenant: Tenant) -> None:
    """A refresh ahead of expiry, in the background; its failure is logged by the refresh
    and the copy stays in use until it truly expires."""
    task = _flight(tenant, None)
    task.add_done_callback(lambda done: done.cancelled() or done.exception())


async def _in_token_thread(tenant: Tenant, stale_token: str | None) -> str:
    return await sync_to_async(_pooled, thread_sensitive=False, executor=token_threads)(
        tenant, stale_token
    )


def _pooled(tenant: Tenant, stale_token: str | None) -> str:
    """On a token thread: its own database connection, closed after use, since cold fetches
    are rare and an idle connection per thread would only pile up."""
    close_old_connections()
    try:
        return access_token_for(tenant=tenant, stale_token=stale_token)
    finally:
        connection.close()


def access_token_for(*, tenant: Tenant, stale_token: str | None = None) -> str:
    """A usable access token; refreshes (once, across processes) when needed.

    `stale_token` will not be returned again. When Vault cannot be reached, a copy that has
    not expired yet is still returned: a token that works is better than an error. Raises
    CredentialMissing, CredentialUnavailable, ReauthorizationRequired or UpstreamError.
    """
    try:
        return _access_token_for(tenant, stale_token)
    except CredentialUnavailable as exc:
        logger.warning(
            "vault_unavailable: %s",
            exc.message,
            extra={"event": "vault_unavailable", "tenant": tenant.slug},
        )
        entry = _copy(tenant)
        if (
            entry is not None
            and time.time() < entry.expires_at
            and entry.access_token != stale_token
        ):
            return entry.access_token
        raise


def _access_token_for(tenant: Tenant, stale_token: str | None) -> str:
    cached = _fresh_copy(tenant, stale_token)
    if cached is not None:
        return cached
    credential = _usable_credential(tenant)
    stored = _stored_token(tenant, credential, stale_token)  # no lock needed to read
    if stored is not None:
        return stored
    with refreshing(tenant):
        # Another thread or worker may have refreshed while we waited for the locks.
        cached = _fresh_copy(tenant, stale_token)
        if cached is not None:
            return cached
        stored = _stored_token(tenant, credential, stale_token)
        if stored is not None:
            return stored
        return refresh(tenant, credential, stored_secret(tenant, credential)).access_token


def _stored_token(
    tenant: Tenant, credential: QontakCredential, stale_token: str | None
) -> str | None:
    """Vault's access token when it is still good for this URL, now this worker's copy."""
    secret = stored_secret(tenant, credential)
    if _needs_refresh(tenant, secret, stale_token):
        return None
    entry = _entry(secret.access_token, secret.issued_at, secret.expires_at, secret.base_url)
    _cache[tenant.pk] = entry
    return entry.access_token


def _needs_refresh(tenant: Tenant, secret: vault.TenantSecret, stale_token: str | None) -> bool:
    if not secret.access_token or secret.access_token == stale_token:
        return True
    if secret.base_url != tenant_qontak_base_url(tenant):
        return True  # issued by another Qontak URL: never sent to this one
    return time.time() >= secret.expires_at - refresh_margin(secret.expires_at - secret.issued_at)


def secret_ref(credential: QontakCredential) -> vault.SecretRef:
    return vault.SecretRef(mount=credential.vault_mount, path=credential.vault_path)


def _usable_credential(tenant: Tenant) -> QontakCredential:
    """The tenant's credential row; refuses one Qontak already rejected, so its token
    endpoint is not spent on a refresh token it will refuse again."""
    credential = QontakCredential.objects.get(tenant=tenant)
    if credential.status == QontakCredential.Status.NEEDS_REAUTHORIZATION:
        raise ReauthorizationRequired(
            f"tenant '{tenant.slug}' needs re-authorization: Qontak rejected its refresh token. "
            "Re-authorize in Qontak, then store the new token (admin: Replace refresh token, "
            f"or `manage.py set_refresh_token {tenant.slug}`)"
        )
    return credential


def stored_secret(tenant: Tenant, credential: QontakCredential) -> vault.TenantSecret:
    """The tenant's secret; a secret this tenant never wrote (the credential row has no
    version) is not used, whoever left it at that path."""
    secret = vault.read_secret(secret_ref(credential))
    if secret is None or not secret.refresh_token or credential.vault_version is None:
        raise CredentialMissing(
            f"no Qontak refresh token stored for tenant '{tenant.slug}': store one (admin: "
            f"Replace refresh token, or `manage.py set_refresh_token {tenant.slug}`)"
        )
    return secret


def _process_lock(tenant: Tenant) -> threading.Lock:
    with _process_locks_guard:
        return _process_locks.setdefault(tenant.pk, threading.Lock())


@contextmanager
def _shared_refresh_lock(tenant: Tenant) -> Iterator[None]:
    """Serialize refreshes of one tenant across every process and host."""
    client = sync_redis()
    if client is not None:
        lock = client.lock(
            f"qmcp:token-refresh:{tenant.pk}",
            timeout=refresh_lock_ttl(),
            blocking_timeout=LOCK_WAIT_SECONDS,
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


@contextmanager
def refresh_lock(tenant: Tenant) -> Iterator[None]:
    """The tenant's refresh lock in this process and across processes; waits are bounded by
    LOCK_WAIT_SECONDS (CredentialUnavailable past it)."""
    lock = _process_lock(tenant)
    if not lock.acquire(timeout=LOCK_WAIT_SECONDS):
        raise CredentialUnavailable("timed out waiting for another token refresh to finish")
    try:
        with _shared_refresh_lock(tenant):
            yield
    finally:
        lock.release()


@contextmanager
def refreshing(tenant: Tenant) -> Iterator[None]:
    """`refresh_lock`, with refresh failures recorded on the credential for the admin."""
    try:
        with refresh_lock(tenant):
            yield
    except (ReauthorizationRequired, UpstreamError) as exc:
        _record_failure(tenant, exc)
        metrics.TOKEN_REFRESHES.labels(result="failed").inc()
        logger.warning(
            "token refresh failed",
            extra={"event": "token_refresh_failed", "tenant": tenant.slug, "reason": exc.message},
        )
        raise


def _record_failure(tenant: Tenant, error: Exception) -> None:
    status = (
        QontakCredential.Status.NEEDS_REAUTHORIZATION
        if isinstance(error, ReauthorizationRequired)
        else QontakCredential.Status.ERROR
    )
    QontakCredential.objects.filter(tenant=tenant).update(
        status=status, last_error=str(error)[:500], updated_at=timezone.now()
    )


def grant(tenant: Tenant, refresh_token: str) -> oauth.TokenGrant:
    """Qontak's grant for `refresh_token`, its failures in the control plane's terms."""
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


def keep_grant(
    tenant: Tenant, credential: QontakCredential, token_grant: oauth.TokenGrant, *, cas: int
) -> CachedToken:
    """Vault first (check-and-set), then metadata and this worker's copy: the new token is
    usable only once the rotated refresh token is safe."""
    base_url = tenant_qontak_base_url(tenant)
    try:
        version = vault.write_secret(
            secret_ref(credential),
            refresh_token=token_grant.refresh_token,
            access_token=token_grant.access_token,
            issued_at=token_grant.issued_at,
            expires_at=token_grant.expires_at,
            base_url=base_url,
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
    QontakCredential.objects.filter(pk=credential.pk).update(
        vault_version=version,
        status=QontakCredential.Status.VALID,
        access_token_expires_at=datetime.fromtimestamp(token_grant.expires_at, tz=UTC),
        last_refreshed_at=timezone.now(),
        last_error="",
        updated_at=timezone.now(),
    )
    credential.vault_version = version
    entry = _entry(
        token_grant.access_token, token_grant.issued_at, token_grant.expires_at, base_url
    )
    _cache[tenant.pk] = entry
    return entry


def refresh(
    tenant: Tenant, credential: QontakCredential, secret: vault.TenantSecret
) -> CachedToken:
    """Spend the stored refresh token on a new pair; the caller holds `refreshing(tenant)`."""
    entry = keep_grant(tenant, credential, grant(tenant, secret.refresh_token), cas=secret.version)
    metrics.TOKEN_REFRESHES.labels(result="ok").inc()
    logger.info(
        "token refreshed, Vault version %s",
        credential.vault_version,
        extra={"event": "token_refreshed", "tenant": tenant.slug},
    )
    return entry
