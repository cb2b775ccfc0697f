"""Tool access and rate limits, resolved from the database and cached briefly per process.

Every worker re-reads a tenant's policies at most POLICY_CACHE_SECONDS after the last read, so
an edit in the admin or through a command applies on the next call everywhere within that
bound, without a restart and without a database query on every call.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db.models import Model
from django.db.models.signals import post_delete
from django_ratelimit.core import get_usage

from controlplane.errors import InvalidInput
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

_cache: dict[int, tuple[float, TenantPolicy]] = {}
_cache_lock = threading.Lock()


def cached_tenant_policy(*, tenant_id: int) -> TenantPolicy | None:
    """The cached policies while they are fresh; no I/O, safe on the event loop."""
    with _cache_lock:
        cached = _cache.get(tenant_id)
    if cached is not None and time.monotonic() - cached[0] < settings.POLICY_CACHE_SECONDS:
        return cached[1]
    return None


def tenant_policy(*, tenant_id: int) -> TenantPolicy:
    """The tenant's policies, at most POLICY_CACHE_SECONDS old. Blocking (database)."""
    cached = cached_tenant_policy(tenant_id=tenant_id)
    if cached is not None:
        return cached
    now = time.monotonic()
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
    with _cache_lock:
        _cache[tenant_id] = (now, policy)
    return policy


def forget_cached_policies() -> None:
    with _cache_lock:
        _cache.clear()


@dataclass(frozen=True)
class RateLimitHit:
    rule: RateRule
    retry_after: int
    scope: str = ""

    @property
    def message(self) -> str:
        return (
            f"rate limit {self.rule.rate} reached ({self.scope or self.rule.scope}); "
            f"retry in {self.retry_after} s"
        )


def _consume(group: str, subject: str, rate: str) -> int | None:
    """Count one event; the seconds until the window resets when the rate is exceeded."""
    usage = get_usage(
        None, group=group, key=lambda _group, _request: subject, rate=rate, increment=True
    )
    if usage is not None and usage["should_limit"]:
        return max(int(usage["time_left"]), 1)
    return None


def rate_limit_consume(
    *, policy: TenantPolicy, tenant_slug: str, key_prefix: str, tool: str
) -> RateLimitHit | None:
    """Count one call against every applicable rate; the first one exceeded is returned.

    Counters live in the shared cache (Redis in production) through django-ratelimit, so the
    limits hold across workers and hosts. Blocking (cache I/O).
    """
    for rule in policy.rates_for(tool):
        subject = f"key:{key_prefix}" if rule.per_key else f"tenant:{tenant_slug}"
        retry_after = _consume(f"mcp:{rule.tool or '*'}", subject, rule.rate)
        if retry_after is not None:
            return RateLimitHit(rule=rule, retry_after=retry_after)
    return None


QONTAK_CEILING_SCOPE = "requests sent to this tenant's Qontak account"


def qontak_request_consume(*, policy: TenantPolicy, tenant_slug: str) -> RateLimitHit | None:
    """Count one request about to be sent to Qontak (first try or retry) against the ceiling
    that protects the customer's Qontak quota. Blocking (cache I/O)."""
    retry_after = _consume("qontak", f"tenant:{tenant_slug}", policy.qontak_ceiling)
    if retry_after is None:
        return None
    return RateLimitHit(
        rule=RateRule(rate=policy.qontak_ceiling, tool="", per_key=False),
        retry_after=retry_after,
        scope=QONTAK_CEILING_SCOPE,
    )


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
    forget_cached_policies()


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
    forget_cached_policies()


def policy_changed(sender: type[Model], instance: Model, **kwargs: Any) -> None:
    """Log every change to a policy row, whichever path made it (admin, command, shell).

    Connected to post_save and post_delete in the app config. Workers other than this one
    pick the change up within POLICY_CACHE_SECONDS; this one forgets its cache at once.
    """
    forget_cached_policies()
    tenant = getattr(instance, "tenant", None)
    logger.info(
        "%s %s: %s",
        sender._meta.verbose_name,
        "deleted" if kwargs.get("signal") is post_delete else "saved",
        instance,
        extra={"event": "policy_changed", "tenant": getattr(tenant, "slug", None)},
    )
