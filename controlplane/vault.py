"""The only module that talks to Vault (KV v2, through hvac).

One secret per tenant, at the path its QontakCredential row names: `qontak/tenants/<tenant
id>-<random>` under VAULT_KV_MOUNT for tenants created now (never reused, so a re-created slug,
or an id reused after a database restore, cannot inherit an old customer's token; older
tenants keep their slug path). A legacy OAuth
tenant's holds `refresh_token`, `access_token`, `issued_at` and `expires_at` (unix seconds)
and `base_url`, the Qontak the tokens were issued by; a Mekari gateway tenant's holds
`client_secret`. Every call is blocking: callers on the event loop must
go through `sync_to_async`. Connection problems surface as CredentialUnavailable
(VaultUnreachable when Vault did not answer at all) so the MCP edge can tell the assistant the
credential store is down instead of failing with a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import hvac
import hvac.exceptions
import requests
from django.conf import settings

from controlplane.errors import CredentialUnavailable

logger = logging.getLogger(__name__)

TENANT_SECRET_ROOT = "qontak/tenants"  # noqa: S105 - a path, not a password
# A token with less left than this, and no way to renew it, is reported as a problem.
TOKEN_TTL_WARNING_SECONDS = 3600.0


@dataclass(frozen=True)
class SecretRef:
    """Where one tenant's secret lives (from its QontakCredential row)."""

    mount: str
    path: str


@dataclass(frozen=True)
class TenantSecret:
    refresh_token: str
    access_token: str
    issued_at: float
    expires_at: float
    version: int
    base_url: str = ""

    def __repr__(self) -> str:  # never let a token reach a log through repr()
        return f"TenantSecret(version={self.version}, expires_at={self.expires_at})"


class VersionConflict(CredentialUnavailable):
    """Someone else wrote the secret since we read it (check-and-set failed)."""


class VaultUnreachable(CredentialUnavailable):
    """Vault did not answer (connection refused, timeout): other requests will not fare
    better for a moment."""


_client: hvac.Client | None = None
_client_lock = threading.Lock()


def tenant_secret_ref(tenant_id: int) -> SecretRef:
    """Where a new tenant's secret goes: its id and a random suffix, so even an id reused
    after a database restore names a fresh path. The credential row keeps the reference."""
    suffix = secrets.token_hex(4)
    return SecretRef(
        mount=settings.VAULT_KV_MOUNT, path=f"{TENANT_SECRET_ROOT}/{tenant_id}-{suffix}"
    )


def _build_client() -> hvac.Client:
    verify: bool | str = settings.VAULT_CACERT or not settings.VAULT_SKIP_VERIFY
    client = hvac.Client(
        url=settings.VAULT_ADDR,
        token=settings.VAULT_TOKEN or None,
        namespace=settings.VAULT_NAMESPACE or None,
        verify=verify,
        timeout=settings.VAULT_TIMEOUT,
    )
    if settings.VAULT_ROLE_ID and settings.VAULT_SECRET_ID:
        try:
            client.auth.approle.login(
                role_id=settings.VAULT_ROLE_ID, secret_id=settings.VAULT_SECRET_ID
            )
        except hvac.exceptions.VaultError as exc:
            raise CredentialUnavailable(
                "credential store refused access: the AppRole login failed; check "
                "VAULT_ROLE_ID and VAULT_SECRET_ID"
            ) from exc
    return client


def _vault() -> hvac.Client:
    global _client
    with _client_lock:
        if _client is None:
            try:
                _client = _build_client()
            except CredentialUnavailable:
                raise
            except (requests.RequestException, hvac.exceptions.VaultError) as exc:
                raise _unavailable(exc) from exc
        return _client


def reset_client() -> None:
    """Forget the cached client (after settings change, or to re-login with AppRole)."""
    global _client
    with _client_lock:
        _client = None


def _unavailable(exc: Exception) -> CredentialUnavailable:
    if isinstance(exc, requests.RequestException):
        return VaultUnreachable(
            f"credential store unavailable: cannot reach Vault at {settings.VAULT_ADDR}"
        )
    if isinstance(exc, hvac.exceptions.Forbidden | hvac.exceptions.Unauthorized):
        reset_client()
        return CredentialUnavailable(
            "credential store refused access: check VAULT_TOKEN or the AppRole credentials "
            "and the policy on the KV mount"
        )
    return CredentialUnavailable(f"credential store error: {type(exc).__name__}")


# After Vault fails to answer a read, reads fail at once for this long instead of each waiting
# for the timeout again (writes always try: a rotated refresh token must not be dropped).
QUIET_SECONDS = 5.0
_quiet_until = 0.0


def read_fields(ref: SecretRef) -> tuple[dict[str, Any], int] | None:
    """The secret's fields and KV version, or None when nothing has been stored yet. Raises
    VaultUnreachable at once for QUIET_SECONDS after Vault last failed to answer a read."""
    global _quiet_until
    quiet = _quiet_until - time.monotonic()
    if quiet > 0:
        raise VaultUnreachable(
            "credential store unavailable: Vault did not answer a moment ago; retry in "
            f"{max(round(quiet), 1)} s"
        )
    try:
        answer = _vault().secrets.kv.v2.read_secret_version(
            path=ref.path, mount_point=ref.mount, raise_on_deleted_version=True
        )
    except hvac.exceptions.InvalidPath:
        return None
    except (requests.RequestException, hvac.exceptions.VaultError) as exc:
        failure = _unavailable(exc)
        if isinstance(failure, VaultUnreachable):
            _quiet_until = time.monotonic() + QUIET_SECONDS
        raise failure from exc
    return dict(answer["data"]["data"]), int(answer["data"]["metadata"]["version"])


def write_fields(ref: SecretRef, fields: dict[str, Any], *, cas: int | None) -> int:
    """Store the fields and return the new KV version.

    `cas` is the version we read (0 when the secret must not exist yet); a mismatch raises
    VersionConflict rather than overwriting what another process just wrote.
    """
    try:
        answer = _vault().secrets.kv.v2.create_or_update_secret(
            path=ref.path, secret=fields, cas=cas, mount_point=ref.mount
        )
    except hvac.exceptions.InvalidRequest as exc:
        if "check-and-set" in str(exc):
            raise VersionConflict("the secret changed while we were updating it; retry") from exc
        raise _unavailable(exc) from exc
    except (requests.RequestException, hvac.exceptions.VaultError) as exc:
        raise _unavailable(exc) from exc
    return int(answer["data"]["version"])


def read_secret(ref: SecretRef) -> TenantSecret | None:
    """The tenant's OAuth tokens, or None when nothing has been stored yet."""
    found = read_fields(ref)
    if found is None:
        return None
    data, version = found
    return TenantSecret(
        refresh_token=str(data.get("refresh_token", "")),
        access_token=str(data.get("access_token", "")),
        issued_at=float(data.get("issued_at") or 0),
        expires_at=float(data.get("expires_at") or 0),
        version=version,
        base_url=str(data.get("base_url", "")),
    )


def write_secret(
    ref: SecretRef,
    *,
    refresh_token: str,
    access_token: str,
    issued_at: float,
    expires_at: float,
    base_url: str,
    cas: int | None,
) -> int:
    """Store the tenant's OAuth tokens (check-and-set, see write_fields); the new version."""
    return write_fields(
        ref,
        {
            "refresh_token": refresh_token,
            "access_token": access_token,
            "issued_at": issued_at,
            "expires_at": expires_at,
            "base_url": base_url,
        },
        cas=cas,
    )


def destroy_secret(ref: SecretRef) -> None:
    """Delete every version and the metadata: nothing of the secret can be read or undeleted."""
    try:
        _vault().secrets.kv.v2.delete_metadata_and_all_versions(
            path=ref.path, mount_point=ref.mount
        )
    except hvac.exceptions.InvalidPath:
        return
    except (requests.RequestException, hvac.exceptions.VaultError) as exc:
        raise _unavailable(exc) from exc


@dataclass(frozen=True)
class TokenLease:
    """What Vault says of the token the control plane uses: seconds left (None: it never
    expires) and whether it can be renewed."""

    ttl: float | None
    renewable: bool
    lifetime: float | None = None  # the TTL it was created with

    @property
    def detail(self) -> str:
        if self.ttl is None:
            return "token does not expire"
        renewal = "renewable" if self.renewable else "not renewable"
        return f"token valid for {self.ttl:.0f} s ({renewal})"


def token_lease() -> TokenLease:
    """One request (lookup-self): proves Vault answers and accepts our token, and says for how
    long. Raises CredentialUnavailable."""
    try:
        data = _vault().auth.token.lookup_self()["data"]
    except (requests.RequestException, hvac.exceptions.VaultError) as exc:
        raise _unavailable(exc) from exc
    ttl = float(data.get("ttl") or 0)
    lifetime = float(data.get("creation_ttl") or 0)
    return TokenLease(
        ttl=ttl if ttl > 0 else None,
        renewable=bool(data.get("renewable")),
        lifetime=lifetime if lifetime > 0 else None,
    )


@dataclass(frozen=True)
class VaultStatus:
    reachable: bool
    authenticated: bool
    mount_ok: bool
    detail: str
    lease: TokenLease | None = None


def vault_status() -> VaultStatus:
    """Reachability, authentication, KV v2 mount and the token's lease, for check_vault."""
    try:
        client = _vault()
        client.sys.read_health_status(method="GET")
    except CredentialUnavailable as exc:
        return VaultStatus(False, False, False, exc.message)
    except requests.RequestException as exc:
        return VaultStatus(False, False, False, _unavailable(exc).message)
    except hvac.exceptions.VaultError as exc:
        # Sealed or standby answers with an error status but proves reachability.
        return VaultStatus(True, False, False, f"Vault is not ready: {type(exc).__name__}")
    try:
        if not client.is_authenticated():
            return VaultStatus(True, False, False, "Vault rejected the configured credentials")
    except requests.RequestException as exc:
        return VaultStatus(False, False, False, _unavailable(exc).message)
    try:
        client.secrets.kv.v2.read_configuration(mount_point=settings.VAULT_KV_MOUNT)
    except (requests.RequestException, hvac.exceptions.VaultError) as exc:
        return VaultStatus(
            True,
            True,
            False,
            f"KV v2 mount '{settings.VAULT_KV_MOUNT}' is not readable ({type(exc).__name__})",
        )
    try:
        lease = token_lease()
    except CredentialUnavailable as exc:
        return VaultStatus(True, True, True, exc.message)
    return VaultStatus(True, True, True, "ok", lease)


# Renew our own Vault token when less than this share of its lifetime is left.
RENEW_AT_SHARE = 1 / 3
RENEW_CHECK_SECONDS = 60.0


def renew_token_if_due() -> TokenLease | None:
    """Renew the control plane's Vault token ahead of its expiry: a renewable token with a
    third of its lifetime left is renewed; with AppRole, a token that cannot be renewed is
    replaced by logging in again. Returns the lease afterwards (None: nothing to watch)."""
    lease = token_lease()
    if lease.ttl is None:
        return None
    if lease.ttl > (lease.lifetime or lease.ttl) * RENEW_AT_SHARE:
        return lease
    if lease.renewable:
        try:
            _vault().auth.token.renew_self()
        except (requests.RequestException, hvac.exceptions.VaultError) as exc:
            raise _unavailable(exc) from exc
        renewed = token_lease()
        logger.info(
            "Vault token renewed: %s",
            renewed.detail,
            extra={"event": "vault_token_renewed"},
        )
        return renewed
    if settings.VAULT_ROLE_ID and settings.VAULT_SECRET_ID:
        reset_client()  # the next use logs in again
        return token_lease()
    logger.warning(
        "the Vault token cannot be renewed and expires in %.0f s: give the control plane a "
        "renewable token or AppRole credentials",
        lease.ttl,
        extra={"event": "vault_token_expiring"},
    )
    return lease


@contextlib.asynccontextmanager
async def keeping_token_alive() -> AsyncIterator[None]:
    """For the life of the worker (its ASGI lifespan): check the token's lease every minute
    and renew it when due, off the event loop."""
    from asgiref.sync import sync_to_async

    async def watch() -> None:
        while True:
            try:
                await sync_to_async(renew_token_if_due, thread_sensitive=False)()
            except CredentialUnavailable as exc:
                logger.warning(
                    "Vault token lease not checked: %s",
                    exc.message,
                    extra={"event": "vault_token_unchecked"},
                )
            await asyncio.sleep(RENEW_CHECK_SECONDS)

    task = asyncio.get_running_loop().create_task(watch())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
