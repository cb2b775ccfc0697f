"""Operators' work on a tenant's Qontak credential: storing a refresh token or a Mekari HMAC
credential, rotating ahead of use, and testing the connection. The admin, the commands and
cron call these; the tool-call path only ever asks controlplane.tokens for credentials."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone

from controlplane import config_version, gateway_credentials, tokens, vault
from controlplane.errors import (
    ApplicationError,
    InvalidInput,
    ReauthorizationRequired,
    UpstreamError,
)
from controlplane.models import QontakCredential, Tenant
from controlplane.tenants import tenant_qontak_base_url
from qontak import mekari, oauth

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rotation:
    """What rotate_tokens did for one tenant."""

    slug: str
    action: str  # rotated | fresh | would_rotate | failed | not_applicable
    detail: str
    expires_at: float | None = None

    @property
    def failed(self) -> bool:
        return self.action == "failed"


def _credential(tenant: Tenant) -> QontakCredential:
    return QontakCredential.objects.get(tenant=tenant)


def _version_we_may_replace(credential: QontakCredential) -> int:
    """The KV version a new secret replaces (check-and-set; 0: none yet). A secret at the
    tenant's path that this tenant never wrote is refused, not overwritten: someone must look
    at where it came from."""
    ref = tokens.secret_ref(credential)
    current = vault.read_fields(ref)
    if current is None:
        return 0
    if credential.vault_version is None:
        raise InvalidInput(
            f"Vault already holds a secret at {ref.mount}/{ref.path} that this tenant never "
            "wrote (left by an earlier installation?); nothing was stored. Have it destroyed "
            "in Vault (`bao kv metadata delete` on that path), then try again."
        )
    return current[1]


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
    if tenant.auth == Tenant.Auth.MEKARI_HMAC:
        return Rotation(tenant.slug, "not_applicable", "Mekari HMAC credential: nothing to refresh")
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
        current_version = _version_we_may_replace(credential)
        try:
            token_grant = tokens.grant(tenant, refresh_token)
        except ReauthorizationRequired as exc:
            raise ReauthorizationRequired(
                "Qontak rejected this refresh token (invalid_grant): it was already used or "
                "revoked. Generate a new one in Qontak and try again."
            ) from exc
        tokens.keep_grant(tenant, credential, token_grant, cas=current_version)
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


def store_hmac_credential(*, tenant: Tenant, client_id: str, client_secret: str) -> None:
    """Validate a Mekari HMAC credential with one signed read, then keep the secret in Vault
    and the client id on the credential row; nothing is stored when the gateway refuses it.
    Workers pick the new one up on the next call (announced); calls in flight finish with
    the old one. Raises InvalidInput (what is wrong and what to do) or UpstreamError."""
    client_id, client_secret = client_id.strip(), client_secret.strip()
    if tenant.auth != Tenant.Auth.MEKARI_HMAC:
        raise InvalidInput(
            f"tenant '{tenant.slug}' uses {tenant.get_auth_display()}: an HMAC credential is "
            "only for tenants created with --auth mekari-hmac"
        )
    if not client_id:
        raise InvalidInput(
            "the client id is empty: give --client-id from the Mekari Developer Center"
        )
    if not client_secret:
        raise InvalidInput("the client secret is empty: paste it on standard input")
    candidate = mekari.HmacCredential(client_id=client_id, client_secret=client_secret)
    status, said = _gateway_probe(tenant, candidate)
    if status == 401:
        raise InvalidInput(
            "the Mekari API Gateway refused this client id and secret"
            f"{' (' + said + ')' if said else ''}: check both in the Mekari Developer Center "
            "(the credential needs the qontak-crm:all scope); nothing was stored"
        )
    if status != 200:
        raise UpstreamError(
            f"the Mekari API Gateway answered HTTP {status} to a signed read"
            f"{' (' + said + ')' if said else ''}; nothing was stored, try again later",
            status=status,
        )
    with tokens.refresh_lock(tenant):
        credential = _credential(tenant)
        version = vault.write_fields(
            tokens.secret_ref(credential),
            {"client_secret": client_secret},
            cas=_version_we_may_replace(credential),
        )
        QontakCredential.objects.filter(pk=credential.pk).update(
            client_id=client_id,
            vault_version=version,
            status=QontakCredential.Status.VALID,
            last_error="",
            updated_at=timezone.now(),
        )
    config_version.announce_change_on_commit()
    logger.info(
        "HMAC credential validated and stored, Vault version %s",
        version,
        extra={"event": "hmac_credential_stored", "tenant": tenant.slug},
    )


def _gateway_probe(tenant: Tenant, credential: mekari.HmacCredential) -> tuple[int, str]:
    try:
        return mekari.probe(
            base_url=tenant_qontak_base_url(tenant),
            credential=credential,
            sso_user=tenant.default_qontak_user,
            timeout=settings.QONTAK_TIMEOUT,
        )
    except mekari.GatewayUnreachable as exc:
        raise UpstreamError(f"the Mekari API Gateway did not answer: {exc}") from exc


def tenant_connection_test(*, tenant: Tenant) -> str:
    """Vault secret -> credential -> one Qontak API read; a sentence saying how it went.

    Raises the same domain errors as a tool call would, so the admin shows the same reasons.
    """
    if tenant.auth == Tenant.Auth.MEKARI_HMAC:
        status, said = _gateway_probe(
            tenant, gateway_credentials.hmac_credential_for(tenant=tenant)
        )
        if status != 200:
            raise UpstreamError(
                f"the Mekari API Gateway answered HTTP {status} to a signed read"
                f"{': ' + said if said else ''}",
                status=status,
            )
        return f"{tenant.slug}: Vault and the Mekari API Gateway answered; the credential works"
    token = tokens.access_token_for(tenant=tenant)
    status = _probe(tenant, token)
    if status == 401:
        token = tokens.access_token_for(tenant=tenant, stale_token=token)
        status = _probe(tenant, token)
    if status != 200:
        raise UpstreamError(f"Qontak answered HTTP {status} to a read with this tenant's token")
    return f"{tenant.slug}: Vault, token refresh and the Qontak API all answered"
