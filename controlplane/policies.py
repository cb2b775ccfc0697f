"""Tool access and rate limits as operators set them: resolved from the database and cached per
worker. Counting calls against the limits is controlplane.ratelimit's job.

A worker keeps each tenant's policies for one configuration version (controlplane.config_version),
so an edit in the admin or through a command applies on the next call everywhere, without a
restart and without reading the database on every call.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError
from django.db.models import Model
from django.db.models.signals import post_delete

from controlplane.config_version import VersionedCache
from controlplane.errors import DatabaseUnavailable, InvalidInput
from controlplane.models import ApiKey, RateLimitPolicy, Tenant, ToolPolicy, rate_validator


@dataclass(frozen=True)
class ToolRule:
    api_key_id: int | None
    tool: str
    allow: bool


@dataclass(frozen=True)
class RateRule:
    rate: str
    tool: str
    per_key: bool

    @property
    def scope(self) -> str:
        what = f"tool {self.tool}" if self.tool else "all tools"
        who = "this API key" if self.per_key else "this tenant"
        return f"{what}, {who}"


@dataclass(frozen=True)
class TenantPolicy:
    tool_rules: tuple[ToolRule, ...]
    rate_rules: tuple[RateRule, ...]
    qontak_ceiling: str

    def tool_allowed(
        self, *, tool: str, api_key_id: int, key_read_only: bool, tool_read_only: bool
    ) -> bool:
        """A read-only key sees read-only tools only; then per-key rules beat tenant rules,
        an exact tool name beats `*`, and the default is allow."""
        if key_read_only and not tool_read_only:
            return False
        for key_scope in (api_key_id, None):
            for name in (tool, "*"):
                for rule in self.tool_rules:
                    if rule.api_key_id == key_scope and rule.tool == name:
                        return rule.allow
        return True

    def rates_for(self, tool: str) -> tuple[RateRule, ...]:
        rules = tuple(rule for rule in self.rate_rules if rule.tool in ("", tool))
        if not any(rule.tool == "" and not rule.per_key for rule in rules):
            rules = (RateRule(rate=settings.DEFAULT_RATE_LIMIT, tool="", per_key=False), *rules)
        return rules


logger = logging.getLogger(__name__)

_policies: VersionedCache[int, TenantPolicy] = VersionedCache()


def cached_tenant_policy(*, tenant_id: int, version: str | None) -> TenantPolicy | None:
    """This worker's copy when it is still current; no I/O, safe on the event loop."""
    return _policies.get(tenant_id, version)


async def policy_for_call(*, tenant_id: int, version: str | None) -> TenantPolicy:
    """The tenant's policies for a tool call: this worker's copy when current (no thread hop),
    else the database in a thread; while the database cannot be reached, this worker's copy
    of any age (no announcement said it changed). Raises DatabaseUnavailable."""
    cached = cached_tenant_policy(tenant_id=tenant_id, version=version)
    if cached is not None:
        return cached
    try:
        return await sync_to_async(tenant_policy)(tenant_id=tenant_id, version=version)
    except DatabaseError:
        aged = _policies.get(tenant_id, version, any_age=True)
        if aged is not None:
            return aged
        raise DatabaseUnavailable(
            "the control plane cannot reach its database to read this tenant's policies; "
            "retry shortly"
        ) from None


def tenant_policy(*, tenant_id: int, version: str | None = None) -> TenantPolicy:
    """The tenant's policies, cached under `version`. Blocking (database) on a miss; read
    `version` before calling, so a change committed meanwhile is not cached as current."""
    cached = cached_tenant_policy(tenant_id=tenant_id, version=version)
    if cached is not None:
        return cached
    ceiling = (
        Tenant.objects.filter(pk=tenant_id).values_list("qontak_request_ceiling", flat=True).first()
    )
    policy = TenantPolicy(
        qontak_ceiling=ceiling or settings.QONTAK_REQUEST_CEILING,
        tool_rules=tuple(
            ToolRule(api_key_id=api_key_id, tool=tool, allow=effect == ToolPolicy.Effect.ALLOW)
            for api_key_id, tool, effect in ToolPolicy.objects.filter(
                tenant_id=tenant_id
            ).values_list("api_key_id", "tool", "effect")
        ),
        rate_rules=tuple(
            RateRule(rate=rate, tool=tool, per_key=per_key)
            for rate, tool, per_key in RateLimitPolicy.objects.filter(
                tenant_id=tenant_id
            ).values_list("rate", "tool", "per_key")
        ),
    )
    _policies.put(tenant_id, version, policy)
    return policy


def forget_cached_policies() -> None:
    _policies.clear()


def rate_limit_set(*, tenant: Tenant, rate: str, tool: str = "", per_key: bool = False) -> None:
    try:
        rate_validator(rate)
    except Exception:
        raise InvalidInput(
            f"'{rate}' is not a rate: write COUNT/UNIT with UNIT s, m, h or d (e.g. 120/m)"
        ) from None
    RateLimitPolicy.objects.update_or_create(
        tenant=tenant, tool=tool, per_key=per_key, defaults={"rate": rate}
    )


def tool_access_set(
    *, tenant: Tenant, tool: str, effect: str, api_key: ApiKey | None = None
) -> None:
    if effect not in ToolPolicy.Effect.values:
        raise InvalidInput(f"'{effect}' is not an access effect: use allow or deny")
    if api_key is not None and api_key.tenant_id != tenant.pk:
        raise InvalidInput(f"API key {api_key.prefix} belongs to another tenant")
    ToolPolicy.objects.update_or_create(
        tenant=tenant, api_key=api_key, tool=tool, defaults={"effect": effect}
    )


def policy_changed(sender: type[Model], instance: Model, **kwargs: Any) -> None:
    """Log every change to a policy row, whichever path made it (admin, command, shell).

    Connected to post_save and post_delete in the app config; workers pick the change up
    through the configuration version (controlplane.config_version).
    """
    tenant = getattr(instance, "tenant", None)
    logger.info(
        "%s %s: %s",
        sender._meta.verbose_name,
        "deleted" if kwargs.get("signal") is post_delete else "saved",
        instance,
        extra={"event": "policy_changed", "tenant": getattr(tenant, "slug", None)},
    )
