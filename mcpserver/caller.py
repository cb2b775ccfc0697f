"""Who is calling: established by the credential alone, never by a tool argument."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from controlplane.models import Tenant


@dataclass(frozen=True)
class Caller:
    """An authenticated request's caller: an API key, or a person through an OAuth token.

    `config_version` is the worker's configuration version when the credential was checked;
    the request's cached policies must belong to it. `qontak_user` is the Mekari SSO id of the
    CRM user the calls act as (the key's or member's, else the tenant's default; empty: none).
    `scopes` are the OAuth token's (None for an API key, which scopes do not limit).
    """

    api_key_id: int | None
    key_prefix: str
    read_only: bool
    tenant: Tenant
    request_id: str
    config_version: str | None = None
    qontak_user: str = ""
    person: str = ""
    membership_id: int | None = None
    oauth_client: str = ""
    scopes: frozenset[str] | None = None

    @property
    def rate_subject(self) -> str:
        """Whom per-key rate limits count: the key, or the person's membership."""
        if self.membership_id is not None:
            return f"person:{self.membership_id}"
        return f"key:{self.key_prefix}"

    def log_context(self, **more: Any) -> dict[str, Any]:
        who = {"person": self.person} if self.person else {"key_prefix": self.key_prefix}
        return {"tenant": self.tenant.slug, **who, "request_id": self.request_id, **more}
