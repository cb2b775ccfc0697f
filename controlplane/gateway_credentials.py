"""A Mekari API Gateway tenant's HMAC credential for its tool calls: the client id from the
database, the secret from Vault, read once per worker (on the token threads, never the event
loop) and kept until a configuration change is announced (set_hmac_credential announces one),
or for at most HMAC_COPY_SECONDS without a live subscription. Calls in flight keep the
credential they started with.
"""

from __future__ import annotations

import asyncio
import time

from asgiref.sync import sync_to_async
from django.db import close_old_connections, connection

from controlplane import vault
from controlplane.errors import CredentialMissing
from controlplane.models import QontakCredential, Tenant
from controlplane.tokens import secret_ref, single_flight, token_threads
from qontak import mekari

HMAC_COPY_SECONDS = 30.0
_hmac_copies: dict[int, tuple[mekari.HmacCredential, str | None, float]] = {}


async def hmac_credential(*, tenant: Tenant, version: str | None) -> mekari.HmacCredential:
    """The tenant's gateway credential for a tool call: this worker's copy while it belongs to
    `version` (or is young enough without one), else Vault on a token thread."""
    copy = _hmac_copies.get(tenant.pk)
    if copy is not None:
        credential, copied_under, copied_at = copy
        if (version is not None and copied_under == version) or (
            version is None and time.monotonic() - copied_at < HMAC_COPY_SECONDS
        ):
            return credential
    return await asyncio.shield(_hmac_flight(tenant, version))


def _hmac_flight(tenant: Tenant, version: str | None) -> asyncio.Task[mekari.HmacCredential]:
    async def read() -> mekari.HmacCredential:
        credential = await sync_to_async(
            _pooled_hmac, thread_sensitive=False, executor=token_threads
        )(tenant)
        _hmac_copies[tenant.pk] = (credential, version, time.monotonic())
        return credential

    return single_flight(("hmac", tenant.pk, version), read)


def _pooled_hmac(tenant: Tenant) -> mekari.HmacCredential:
    close_old_connections()
    try:
        return hmac_credential_for(tenant=tenant)
    finally:
        connection.close()  # a token thread keeps no idle connection


def hmac_credential_for(*, tenant: Tenant) -> mekari.HmacCredential:
    """The tenant's client id (database) and client secret (Vault). Raises CredentialMissing
    or CredentialUnavailable."""
    credential = QontakCredential.objects.get(tenant=tenant)
    found = vault.read_fields(secret_ref(credential))
    secret = "" if found is None else str(found[0].get("client_secret", ""))
    if not secret or not credential.client_id or credential.vault_version is None:
        raise CredentialMissing(
            f"no Mekari HMAC credential stored for tenant '{tenant.slug}': store it (admin: "
            f"Set HMAC secret, or `manage.py set_hmac_credential {tenant.slug} --client-id ID`)"
        )
    return mekari.HmacCredential(client_id=credential.client_id, client_secret=secret)
