"""Tool access and rate limits, resolved from the database and cached briefly per process.

Every worker re-reads a tenant's policies at most POLICY_CACHE_SECONDS after the last read, so
an edit in the admin or through a command applies on the next call everywhere within that
bound, without a restart and without a database query on every call.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django_ratelimit.core import get_usage

from controlplane.errors import InvalidInput
from controlplane.models import RateLimitPolicy, Tenant, ToolPolicy, rate_validator


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

    def tool_allowed(self, *, tool: str, api_key_id: int) -> bool:
        """Per-key rules beat tenant rules; an exact tool name beats `*`; default is allow."""
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


_cache: dict[int, tuple[float, TenantPolicy]] = {}
_cache_lock = threading.Lock()


def tenant_policy(*, tenant_id: int) -> TenantPolicy:
    """The tenant's policies, at most POLICY_CACHE_SECONDS old. Blocking (database)."""
    now = time.monotonic()
    with _cache_lock:
        cached = _cache.get(tenant_id)
    if cached is not None and now - cached[0] < settings.POLICY_CACHE_SECONDS:
        return cached[1]
    policy = TenantPolicy(
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

    @property
    def message(self) -> str:
        return (
            f"rate limit {self.rule.rate} reached ({self.rule.scope}); "
            f"retry in {self.retry_after} s"
        )


def rate_limit_consume(
    *, policy: TenantPolicy, tenant_slug: str, key_prefix: str, tool: str
) -> RateLimitHit | None:
    """Count one call against every applicable rate; the first one exceeded is returned.

    Counters live in the shared cache (Redis in production) through django-ratelimit, so the
    limits hold across workers and hosts. Blocking (cache I/O).
    """
    for rule in policy.rates_for(tool):
        subject = f"key:{key_prefix}" if rule.per_key else f"tenant:{tenant_slug}"
        usage = get_usage(
            None,
            group=f"mcp:{rule.tool or '*'}",
            key=lambda _group, _request, subject=subject: subject,
            rate=rule.rate,
            increment=True,
        )
        if usage is not None and usage["should_limit"]:
            return RateLimitHit(rule=rule, retry_after=max(int(usage["time_left"]), 1))
    return None


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


def tool_access_set(*, tenant: Tenant, tool: str, effect: str) -> None:
    if effect not in ToolPolicy.Effect.values:
        raise InvalidInput(f"'{effect}' is not an access effect: use allow or deny")
    ToolPolicy.objects.update_or_create(
        tenant=tenant, api_key=None, tool=tool, defaults={"effect": effect}
    )
    forget_cached_policies()
