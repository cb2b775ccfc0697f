"""Services for tenants and their API keys: the write side the admin and commands share, and
the key check of every MCP request with this worker's copies of the keys it has seen."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import logging
import secrets
import string
import time
import uuid
from copy import copy
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from asgiref.sync import sync_to_async
from auditlog.diff import model_instance_diff
from auditlog.models import LogEntry
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection, transaction
from django.db.models import Case, DateTimeField, QuerySet, Value, When
from django.utils import timezone

from controlplane import config_version, vault
from controlplane.config_version import VersionedCache
from controlplane.errors import ApplicationError, InvalidInput, QontakUrlRefused, TenantNotFound
from controlplane.models import ApiKey, QontakCredential, Tenant, ToolCall
from controlplane.qontak_urls import qontak_url_problems

logger = logging.getLogger(__name__)

API_KEY_SCHEME = "qmcp_"
PREFIX_LENGTH = len(API_KEY_SCHEME) + 8
LAST_USED_WRITE_INTERVAL = timedelta(minutes=1)
# A worker's due last_used_at stamps wait this long and are written together, in one statement
# per USES_PER_WRITE keys on one connection: a worker serving thousands of keys would otherwise
# open a database connection per key and minute.
USES_WRITE_DELAY_SECONDS = 5.0
USES_PER_WRITE = 1000
KEY_BODY_LENGTH = 43  # secrets.token_urlsafe(32)
KEY_ALPHABET = frozenset(string.ascii_letters + string.digits + "-_")
FAILED_AUTH_WINDOW_SECONDS = 60.0
FAILED_AUTH_ADDRESSES = 10_000  # addresses tracked per window, so the count stays bounded


def tenant_get(*, slug: str) -> Tenant:
    try:
        return Tenant.objects.get(slug=slug)
    except Tenant.DoesNotExist:
        raise TenantNotFound(
            f"no tenant '{slug}': list tenants in the admin or create it with create_tenant"
        ) from None


@transaction.atomic
def tenant_create(
    *,
    slug: str,
    name: str = "",
    qontak_base_url: str = "",
    is_active: bool = True,
    qontak_request_ceiling: str = "",
    auth: str = Tenant.Auth.QONTAK_OAUTH,
    default_qontak_user: str = "",
) -> Tenant:
    """Create a tenant and its (empty) Vault credential reference."""
    if Tenant.objects.filter(slug=slug).exists():
        raise InvalidInput(f"tenant '{slug}' already exists")
    if auth not in Tenant.Auth.values:
        raise InvalidInput(f"'{auth}' is no credential kind: use {' or '.join(Tenant.Auth.values)}")
    tenant = Tenant(
        slug=slug,
        name=name or slug,
        qontak_base_url=qontak_base_url,
        is_active=is_active,
        qontak_request_ceiling=qontak_request_ceiling,
        auth=auth,
        default_qontak_user=sso_user_checked(default_qontak_user),
    )
    tenant.full_clean()
    tenant.save()
    ref = vault.tenant_secret_ref(tenant.pk)
    QontakCredential.objects.create(tenant=tenant, vault_mount=ref.mount, vault_path=ref.path)
    return tenant


def sso_user_checked(value: str) -> str:
    """A Mekari SSO user id as Qontak expects it (a UUID, normalized), or "" for none; raises
    InvalidInput for anything else."""
    value = value.strip()
    if not value:
        return ""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidInput(
            f"'{value[:60]}' is not a Mekari SSO user id: give the UUID shown for the user in "
            "Qontak's user settings (e.g. 5f0c6b1e-0a1b-4c2d-8e3f-445566778899)"
        ) from None


def tenant_delete(*, tenant: Tenant) -> None:
    """Delete a tenant that has made no tool call, destroying its Vault secret first, so no
    later tenant can ever read it. A tenant with an audit trail is deactivated instead.
    Raises InvalidInput, or CredentialUnavailable when Vault cannot destroy the secret (the
    tenant is then kept)."""
    if ToolCall.objects.filter(tenant=tenant).exists():
        raise InvalidInput(
            f"tenant '{tenant.slug}' has audit rows, which are kept: deactivate it instead"
        )
    credential = QontakCredential.objects.filter(tenant=tenant).first()
    if credential is not None:
        vault.destroy_secret(
            vault.SecretRef(mount=credential.vault_mount, path=credential.vault_path)
        )
    tenant.delete()  # announced to every worker (config_version), which drop their copies


@functools.lru_cache(maxsize=1024)
def _url_problems(url: str, allowed_hosts: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(qontak_url_problems(url, allowed_hosts))


def tenant_qontak_base_url(tenant: Tenant) -> str:
    """Where the tenant's Qontak requests, and its tokens, go. Checked against
    QONTAK_ALLOWED_HOSTS on every use, not only when saved, so a host dropped from the list
    stops receiving tokens at once; raises QontakUrlRefused."""
    default = (
        settings.MEKARI_GATEWAY_URL
        if tenant.auth == Tenant.Auth.MEKARI_HMAC
        else settings.QONTAK_BASE_URL
    )
    url = tenant.qontak_base_url or default
    problems = _url_problems(url, tuple(settings.QONTAK_ALLOWED_HOSTS))
    if problems:
        raise QontakUrlRefused(
            f"tenant '{tenant.slug}' has a Qontak URL that is no longer allowed "
            f"({problems[0]}); nothing was sent. An operator must correct the tenant's URL."
        )
    return url


def api_key_digest(key: str, *, pepper: str | None = None) -> str:
    """HMAC-SHA256 of a key with the server-side pepper (API_KEY_PEPPER unless `pepper` is
    given): a database leak reveals no key."""
    secret = settings.API_KEY_PEPPER if pepper is None else pepper
    return hmac.new(secret.encode(), key.encode(), hashlib.sha256).hexdigest()


def api_key_pepper_id(pepper: str) -> str:
    """A short fingerprint naming a pepper in ApiKey.pepper_id: an HMAC of a fixed label keyed
    with the pepper, so it tells peppers apart without revealing anything about them."""
    return hmac.new(pepper.encode(), b"qmcp api key pepper id", hashlib.sha256).hexdigest()[:8]


@dataclass(frozen=True)
class IssuedKey:
    api_key: ApiKey
    key: str

    def __repr__(self) -> str:
        return f"IssuedKey(prefix={self.api_key.prefix})"


def api_key_issue(
    *,
    tenant: Tenant,
    label: str = "",
    read_only: bool = False,
    expires_at: datetime | None = None,
    qontak_user: str = "",
) -> IssuedKey:
    """Create a key; the clear value exists only in the returned object, shown once.
    `qontak_user` is the Mekari SSO id of the CRM user its calls act as."""
    key = API_KEY_SCHEME + secrets.token_urlsafe(32)
    api_key = ApiKey.objects.create(
        tenant=tenant,
        label=label,
        prefix=key[:PREFIX_LENGTH],
        digest=api_key_digest(key),
        pepper_id=api_key_pepper_id(settings.API_KEY_PEPPER),
        read_only=read_only,
        expires_at=expires_at,
        qontak_user=sso_user_checked(qontak_user),
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


def api_keys_revoke(*, keys: QuerySet[ApiKey]) -> int:
    """Revoke the keys in `keys` not revoked yet, with one UPDATE; returns how many it revoked.

    An UPDATE sends no post_save, so this announces the change itself (or workers would keep
    accepting their copies of the keys) and writes the audit log entry each key's save() would
    have. The keys are locked from the SELECT to the UPDATE, so a key revoked meanwhile by
    someone else is neither counted nor logged twice.
    """
    with transaction.atomic():
        pending = list(
            ApiKey.objects.filter(pk__in=keys.values("pk"), revoked_at__isnull=True)
            .select_related("tenant")
            .select_for_update(of=("self",))
            .order_by("pk")
        )
        if not pending:
            return 0
        now = timezone.now()
        revoked = ApiKey.objects.filter(pk__in=[key.pk for key in pending]).update(revoked_at=now)
        as_json = getattr(settings, "AUDITLOG_STORE_JSON_CHANGES", False)
        for before in pending:
            after = copy(before)
            after.revoked_at = now
            changes = model_instance_diff(
                before, after, fields_to_check=["revoked_at"], use_json_for_changes=as_json
            )
            LogEntry.objects.log_create(after, action=LogEntry.Action.UPDATE, changes=changes)
        config_version.announce_change_on_commit()
    return revoked


def api_key_usable(api_key: ApiKey) -> bool:
    """Not revoked, not expired, and its tenant is active (no I/O: the tenant is loaded)."""
    return api_key.is_usable and api_key.tenant.is_active


def api_key_use_due(api_key: ApiKey) -> bool:
    """Whether last_used_at is due a write: at most once a minute per key, so a busy key does
    not turn every call into a database write."""
    last = api_key.last_used_at
    return last is None or timezone.now() - last > LAST_USED_WRITE_INTERVAL


def _well_formed(key: str) -> bool:
    """A key as api_key_issue makes them: anything else is refused without a query."""
    body = key[len(API_KEY_SCHEME) :]
    return (
        key.startswith(API_KEY_SCHEME)
        and len(body) == KEY_BODY_LENGTH
        and all(ch in KEY_ALPHABET for ch in body)
    )


def api_key_authenticate(*, key: str) -> ApiKey | None:
    """The usable key matching `key`, with its tenant; None for unknown, revoked or expired.
    Blocking (database).

    The key is looked up under API_KEY_PEPPER and every API_KEY_OLD_PEPPERS in one query; one
    found under an old pepper is re-keyed to the current pepper in place, so a rotation
    completes as keys are used. Its last use is the caller's to record (api_key_for_request
    queues it), so a key's first call waits on one read, not on a write's commit too."""
    if not _well_formed(key):
        return None
    old_peppers = [pepper for pepper in settings.API_KEY_OLD_PEPPERS if pepper]
    peppers = dict.fromkeys([settings.API_KEY_PEPPER, *old_peppers])  # current first
    digests = [api_key_digest(key, pepper=pepper) for pepper in peppers]
    api_key = ApiKey.objects.select_related("tenant").filter(digest__in=digests).first()
    if api_key is None:
        return None
    current_digest, current_pepper_id = digests[0], api_key_pepper_id(settings.API_KEY_PEPPER)
    if (api_key.digest, api_key.pepper_id) != (current_digest, current_pepper_id):
        ApiKey.objects.filter(pk=api_key.pk).update(
            digest=current_digest, pepper_id=current_pepper_id
        )
        api_key.digest, api_key.pepper_id = current_digest, current_pepper_id
    if not api_key_usable(api_key):
        return None
    return api_key


def _record_uses(uses: dict[int, datetime]) -> None:
    """Each key's own time, USES_PER_WRITE keys per UPDATE."""
    ids = list(uses)
    for start in range(0, len(ids), USES_PER_WRITE):
        chunk = ids[start : start + USES_PER_WRITE]
        stamps = [When(pk=pk, then=Value(uses[pk])) for pk in chunk]
        ApiKey.objects.filter(pk__in=chunk).update(
            last_used_at=Case(*stamps, output_field=DateTimeField())
        )


def _record_uses_and_disconnect(uses: dict[int, datetime]) -> None:
    """The background write, on a pool thread that keeps no idle connection."""
    try:
        _record_uses(uses)
    finally:
        connection.close()


# This worker's copies of the keys it has seen, by digest (see controlplane.config_version).
_known_keys: VersionedCache[str, ApiKey] = VersionedCache()
# Stamps due a write, by key id, and the task that writes them (referenced here until done).
_due_uses: dict[int, datetime] = {}
_uses_writer: asyncio.Task[None] | None = None


def _note_use(api_key: ApiKey) -> None:
    """When its last use is due a write: stamp this worker's copy now (it is not due again for
    a while) and queue the write."""
    global _uses_writer
    if not api_key_use_due(api_key):
        return
    now = timezone.now()
    api_key.last_used_at = now
    _due_uses[api_key.pk] = now
    loop = asyncio.get_running_loop()
    if _uses_writer is None or _uses_writer.done() or _uses_writer.get_loop() is not loop:
        _uses_writer = loop.create_task(_write_uses_soon())


async def _write_uses_soon() -> None:
    """Until none are due (uses noted during a write go in the next). Best effort: a database
    that is down loses last_used_at stamps, never a call."""
    while _due_uses:
        await asyncio.sleep(USES_WRITE_DELAY_SECONDS)
        uses = dict(_due_uses)
        _due_uses.clear()
        try:
            await sync_to_async(_record_uses_and_disconnect, thread_sensitive=False)(uses)
        except DatabaseError:
            logger.info(
                "last use of %d API keys not recorded: database unavailable",
                len(uses),
                extra={"event": "key_use_unrecorded"},
            )


def _authenticate_request(key: str) -> ApiKey | None:
    """Start of a request's database work, like Django's request_started: drop a connection
    that is too old or broken (and health-check a kept one) once, here; the rest of the
    request's hops reuse it."""
    close_old_connections()
    return api_key_authenticate(key=key)


class TooManyFailedAuthentications(ApplicationError):
    """This client address sent too many unknown keys; `retry_after` is in seconds."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class _FailedAuthentications:
    """This worker's count of unknown keys per client address, in fixed windows: a flood of
    invented keys costs at most AUTH_FAILURES_PER_ADDRESS queries per address and minute.
    Counts start over with each configuration version, so a key issued meanwhile is never held
    back (without Redis there are no versions: it may wait out the window)."""

    version: str | None = None
    window_start: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)

    def _current(self, version: str | None) -> dict[str, int]:
        now = time.monotonic()
        if version != self.version or now - self.window_start >= FAILED_AUTH_WINDOW_SECONDS:
            self.version, self.window_start, self.counts = version, now, {}
        return self.counts

    def check(self, address: str, version: str | None) -> None:
        if self._current(version).get(address, 0) >= settings.AUTH_FAILURES_PER_ADDRESS:
            left = FAILED_AUTH_WINDOW_SECONDS - (time.monotonic() - self.window_start)
            raise TooManyFailedAuthentications(
                "too many unknown API keys from this address; check the key and retry in "
                f"{max(round(left), 1)} s",
                retry_after=max(round(left), 1),
            )

    def record(self, address: str, version: str | None) -> None:
        counts = self._current(version)
        if address in counts or len(counts) < FAILED_AUTH_ADDRESSES:
            counts[address] = counts.get(address, 0) + 1


# Shared by every kind of bearer credential (API keys here, OAuth tokens in controlplane.people).
failed_authentications = _FailedAuthentications()


async def api_key_for_request(
    *, key: str, version: str | None, client_address: str = ""
) -> ApiKey | None:
    """The usable key for `key`: this worker's copy when it belongs to `version` (no I/O),
    else the database in a thread. A key's last use is recorded in the background, and a copy
    past its age is still used when the database cannot be reached, so a worker that follows
    configuration changes keeps serving known keys while the database is down. Raises
    TooManyFailedAuthentications, or DatabaseError when the database is needed and cannot be
    reached."""
    digest = api_key_digest(key)
    known = _known_keys.get(digest, version)
    if known is not None and api_key_usable(known):
        _note_use(known)
        return known
    failed_authentications.check(client_address, version)
    try:
        api_key = await sync_to_async(_authenticate_request)(key)
    except DatabaseError:
        # The copy has only aged: no announcement said the key changed. Better than a 503.
        known = _known_keys.get(digest, version, any_age=True)
        if known is not None and api_key_usable(known):
            return known
        raise
    if api_key is None:
        _known_keys.discard(digest)
        failed_authentications.record(client_address, version)
    else:
        _known_keys.put(digest, version, api_key)
        _note_use(api_key)
    return api_key
