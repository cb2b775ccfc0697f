"""Operators' work on a tenant's Qontak credential: storing a refresh token, rotating ahead of
use, and testing the connection. The admin, the commands and cron call these; the tool-call
path only ever asks controlplane.tokens for an access token."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from controlplane import tokens, vault
from controlplane.errors import (
    ApplicationError,
    InvalidInput,
    ReauthorizationRequired,
    UpstreamError,
)
from controlplane.models import QontakCredential, Tenant
from controlplane.tenants import tenant_qontak_base_url
from qontak import oauth

logger = logging.getLogger(__name__)


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


def _credential(tenant: Tenant) -> QontakCredential:
    return QontakCredential.objects.get(tenant=tenant)


def stored_version(*, tenant: Tenant) -> int | None:
    """The KV version of the tenant's secret now (None when absent); no lock taken."""
    secret = vault.read_secret(tokens.secret_ref(_credential(tenant)))
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
        credential = _credential(tenant)
        if dry_run:
            secret = tokens.stored_secret(tenant, credential)
            due = force or secret.expires_at - time.time() <= window
            detail = _expiry_detail(secret.expires_at)
            return Rotation(tenant.slug, "would_rotate" if due else "fresh", detail)
        if credential.status == QontakCredential.Status.NEEDS_REAUTHORIZATION:
            tokens.access_token_for(tenant=tenant)  # raises the reason, as a tool call would
        with tokens.refreshing(tenant):
            credential.refresh_from_db()
            secret = tokens.stored_secret(tenant, credential)
            if secret.version != seen_version:
                detail = "rotated by a concurrent run; " + _expiry_detail(secret.expires_at)
                return Rotation(tenant.slug, "fresh", detail, secret.expires_at)
            if not force and secret.expires_at - time.time() > window:
                return Rotation(
                    tenant.slug, "fresh", _expiry_detail(secret.expires_at), secret.expires_at
                )
            entry = tokens.refresh(tenant, credential, secret)
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
    with tokens.refresh_lock(tenant):
        credential = _credential(tenant)
        current = vault.read_secret(tokens.secret_ref(credential))
        try:
            token_grant = tokens.grant(tenant, refresh_token)
        except ReauthorizationRequired as exc:
            raise ReauthorizationRequired(
                "Qontak rejected this refresh token (invalid_grant): it was already used or "
                "revoked. Generate a new one in Qontak and try again."
            ) from exc
        tokens.keep_grant(tenant, credential, token_grant, cas=current.version if current else 0)
    logger.info(
        "refresh token validated and stored, Vault version %s",
        credential.vault_version,
        extra={"event": "token_stored", "tenant": tenant.slug},
    )


def _probe(tenant: Tenant, access_token: str) -> int:
    try:
        return oauth.verify_access_token(
            base_url=tenant_qontak_base_url(tenant), access_token=access_token
        )
    except oauth.GrantError as exc:
        raise UpstreamError(exc.message, status=exc.status) from exc


def tenant_connection_test(*, tenant: Tenant) -> str:
    """Vault secret -> access token -> one Qontak API read; a sentence saying how it went.

    Raises the same domain errors as a tool call would, so the admin shows the same reasons.
    """
    token = tokens.access_token_for(tenant=tenant)
    status = _probe(tenant, token)
    if status == 401:
        token = tokens.access_token_for(tenant=tenant, stale_token=token)
        status = _probe(tenant, token)
    if status != 200:
        raise UpstreamError(f"Qontak answered HTTP {status} to a read with this tenant's token")
    return f"{tenant.slug}: Vault, token refresh and the Qontak API all answered"
