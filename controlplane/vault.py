"""The only module that talks to Vault (KV v2, through hvac).

One secret per tenant at `<VAULT_KV_MOUNT>/qontak/tenants/<slug>` holding `refresh_token`,
`access_token`, `issued_at` and `expires_at` (unix seconds). Every call is blocking: callers on
the event loop must go through `sync_to_async`. Connection problems surface as
CredentialUnavailable so the MCP edge can tell the assistant the credential store is down
instead of failing with a 500.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import hvac
import hvac.exceptions
import requests
from django.conf import settings

from controlplane.errors import CredentialUnavailable

TENANT_SECRET_ROOT = "qontak/tenants"  # noqa: S105 - a path, not a password
# A token with less left than this, and no way to renew it, is reported as a problem.
TOKEN_TTL_WARNING_SECONDS = 3600.0


@dataclass(frozen=True)
class TenantSecret:
    refresh_token: str
    access_token: str
    issued_at: float
    expires_at: float
    version: int

    def __repr__(self) -> str:  # never let a token reach a log through repr()
        return f"TenantSecret(version={self.version}, expires_at={self.expires_at})"


class VersionConflict(CredentialUnavailable):
    """Someone else wrote the secret since we read it (check-and-set failed)."""


_client: hvac.Client | None = None
_client_lock = threading.Lock()


def tenant_secret_path(slug: str) -> str:
    return f"{TENANT_SECRET_ROOT}/{slug}"


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
        return CredentialUnavailable(
            f"credential store unavailable: cannot reach Vault at {settings.VAULT_ADDR}"
        )
    if isinstance(exc, hvac.exceptions.Forbidden | hvac.exceptions.Unauthorized):
        reset_client()
        return CredentialUnavailable(
            "credential store refused access: check VAULT_TOKEN or the AppRole credentials "
            "and the policy on the KV mount"
        )
    return CredentialUnavailable(f"credential store error: {type(exc).__name__}")


def read_tenant_secret(slug: str) -> TenantSecret | None:
    """The tenant's current secret, or None when nothing has been stored yet."""
    try:
        answer = _vault().secrets.kv.v2.read_secret_version(
            path=tenant_secret_path(slug),
            mount_point=settings.VAULT_KV_MOUNT,
            raise_on_deleted_version=True,
        )
    except hvac.exceptions.InvalidPath:
        return None
    except (requests.RequestException, hvac.exceptions.VaultError) as exc:
        raise _unavailable(exc) from exc
    data: dict[str, Any] = answer["data"]["data"]
    return TenantSecret(
        refresh_token=str(data.get("refresh_token", "")),
        access_token=str(data.get("access_token", "")),
        issued_at=float(data.get("issued_at") or 0),
        expires_at=float(data.get("expires_at") or 0),
        version=int(answer["data"]["metadata"]["version"]),
    )


def write_tenant_secret(
    slug: str,
    *,
    refresh_token: str,
    access_token: str,
    issued_at: float,
    expires_at: float,
    cas: int | None,
) -> int:
    """Store the tenant's tokens and return the new KV version.

    `cas` is the version we read (0 when the secret must not exist yet); a mismatch raises
    VersionConflict rather than overwriting a token another process just rotated.
    """
    try:
        answer = _vault().secrets.kv.v2.create_or_update_secret(
            path=tenant_secret_path(slug),
            secret={
                "refresh_token": refresh_token,
                "access_token": access_token,
                "issued_at": issued_at,
                "expires_at": expires_at,
            },
            cas=cas,
            mount_point=settings.VAULT_KV_MOUNT,
        )
    except hvac.exceptions.InvalidRequest as exc:
        if "check-and-set" in str(exc):
            raise VersionConflict(
                "the token secret changed while we were updating it; retry"
            ) from exc
        raise _unavailable(exc) from exc
    except (requests.RequestException, hvac.exceptions.VaultError) as exc:
        raise _unavailable(exc) from exc
    return int(answer["data"]["version"])


@dataclass(frozen=True)
class TokenLease:
    """What Vault says of the token the control plane uses: seconds left (None: it never
    expires) and whether it can be renewed."""

    ttl: float | None
    renewable: bool

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
    return TokenLease(ttl=ttl if ttl > 0 else None, renewable=bool(data.get("renewable")))


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
