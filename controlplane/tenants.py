"""Services for tenants and their API keys: the write side the admin and commands share, and
the key check of every MCP request with this worker's copies of the keys it has seen."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone

from controlplane import vault
from controlplane.config_version import VersionedCache
from controlplane.errors import InvalidInput, TenantNotFound
from controlplane.models import ApiKey, QontakCredential, Tenant

API_KEY_SCHEME = "qmcp_"
PREFIX_LENGTH = len(API_KEY_SCHEME) + 8
LAST_USED_WRITE_INTERVAL = timedelta(minutes=1)


def tenant_get(*, slug: str) -> Tenant:
    try:
        return Tenant.objects.get(slug=slug)
    except Tenant.DoesNotExist:
        raise TenantNotFound(
            f"no tenant '{slug}': list tenants in the admin or create it with create_tenant"
        ) from None


@transaction.atomic
def tenant_create(*, slug: str, name: str = "", qontak_base_url: str = "") -> Tenant:
    """Create a tenant and its (empty) Vault credential reference."""
    if Tenant.objects.filter(slug=slug).exists():
        raise InvalidInput(f"tenant '{slug}' already exists")
    tenant = Tenant(slug=slug, name=name or slug, qontak_base_url=qontak_base_url)
    tenant.full_clean()
    tenant.save()
    QontakCredential.objects.create(
        tenant=tenant,
        vault_mount=settings.VAULT_KV_MOUNT,
        vault_path=vault.tenant_secret_path(slug),
    )
    return tenant


def tenant_qontak_base_url(tenant: Tenant) -> str:
    return tenant.qontak_base_url or settings.QONTAK_BASE_URL


def api_key_digest(key: str) -> str:
    """HMAC-SHA256 of a key with the server-side pepper: a database leak reveals no key."""
    return hmac.new(settings.API_KEY_PEPPER.encode(), key.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class IssuedKey:
    api_key: ApiKey
    key: str

    def __repr__(self) -> str:
        return f"IssuedKey(prefix={self.api_key.prefix})"


def api_key_issue(*, tenant: Tenant, label: str = "", read_only: bool = False) -> IssuedKey:
    """Create a key; the clear value exists only in the returned object, shown once."""
    key = API_KEY_SCHEME + secrets.token_urlsafe(32)
    api_key = ApiKey.objects.create(
        tenant=tenant,
        label=label,
        prefix=key[:PREFIX_LENGTH],
        digest=api_key_digest(key),
        read_only=read_only,
    )
    return IssuedKey(api_key=api_key, key=key)


def api_key_get(*, prefix: str) -> ApiKey:
    try:
        return ApiKey.objects.select_related("tenant").get(prefix=prefix)
    except ApiKey.DoesNotExist:
        raise InvalidInput(f"no API key with prefix '{prefix}'") from None


def api_key_revoke(*, prefix: str) -> ApiKey:
    api_key = api_key_get(prefix=prefix)
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    return api_key


def api_key_usable(api_key: ApiKey) -> bool:
    """Not revoked, not expired, and its tenant is active (no I/O: the tenant is loaded)."""
    return api_key.is_usable and api_key.tenant.is_active


def api_key_use_due(api_key: ApiKey) -> bool:
    """Whether last_used_at is due a write: at most once a minute per key, so a busy key does
    not turn every call into a database write."""
    last = api_key.last_used_at
    return last is None or timezone.now() - last > LAST_USED_WRITE_INTERVAL


def api_key_authenticate(*, key: str) -> ApiKey | None:
    """The usable key matching `key`, with its tenant; None for unknown, revoked or expired.
    Blocking (database)."""
    if not key.startswith(API_KEY_SCHEME) or len(key) > 200:
        return None
    try:
        api_key = ApiKey.objects.select_related("tenant").get(digest=api_key_digest(key))
    except ApiKey.DoesNotExist:
        return None
    if not api_key_usable(api_key):
        return None
    if api_key_use_due(api_key):
        now = timezone.now()
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now
    return api_key


# This worker's copies of the keys it has seen, by digest (see controlplane.config_version).
_known_keys: VersionedCache[str, ApiKey] = VersionedCache()


def _authenticate_request(key: str) -> ApiKey | None:
    """Start of a request's database work, like Django's request_started: drop a connection
    that is too old or broken (and health-check a kept one) once, here; the rest of the
    request's hops reuse it."""
    close_old_connections()
    return api_key_authenticate(key=key)


async def api_key_for_request(*, key: str, version: str | None) -> ApiKey | None:
    """The usable key for `key`: this worker's copy when it belongs to `version` (no I/O),
    else the database in a thread (which also records the key's use, once a minute).
    Raises DatabaseError when the database cannot be reached."""
    digest = api_key_digest(key)
    known = _known_keys.get(digest, version)
    if known is not None and api_key_usable(known) and not api_key_use_due(known):
        return known
    api_key = await sync_to_async(_authenticate_request)(key)
    if api_key is None:
        _known_keys.discard(digest)
    else:
        _known_keys.put(digest, version, api_key)
    return api_key
