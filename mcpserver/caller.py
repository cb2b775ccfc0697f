"""Who is calling: established by the credential alone, never by a tool argument."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from controlplane.models import Tenant


@dataclass(frozen=True)
class Caller:
    """An authenticated request's caller.

    `config_version` is the worker's configuration version when the key was checked; the
    request's cached policies must belong to it. `qontak_user` is the Mekari SSO id of the CRM
    user the calls act as (the key's, else the tenant's default; empty: none).
    """

    api_key_id: int
    key_prefix: str
    read_only: bool
    tenant: Tenant
    request_id: str
    config_version: str | None = None
    qontak_user: str = ""

    def log_context(self, **more: Any) -> dict[str, Any]:
        return {
            "tenant": self.tenant.slug,
            "key_prefix": self.key_prefix,
            "request_id": self.request_id,
            **more,
        }
