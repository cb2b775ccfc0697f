"""Tool access and rate limits: resolved from the database, cached per worker, counted on Redis.

A worker keeps each tenant's policies for one configuration version (controlplane.config_version),
so an edit in the admin or through a command applies on the next call everywhere, without a
restart and without reading the database on every call.

Rate limits are django-ratelimit's fixed windows: its rate syntax, its staggered windows and
its cache keys. With Redis, all the windows a call touches are counted by one Lua script in
one round trip on the event loop; django-ratelimit's `get_usage` takes two to three Redis
commands per window from a thread (`make bench`: 8.7 commands and a 1.4 ms hop per call). It
reads the same keys, so either can inspect the other's counts. Without Redis the counters
live in this process's memory, where `get_usage` itself counts, without I/O.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db.models import Model
from django.db.models.signals import post_delete
from django_ratelimit.core import (
    EXPIRATION_FUDGE,
    _get_window,
    _make_cache_key,
    _split_rate,
    get_usage,
)
from redis.exceptions import RedisError

from controlplane.config_version import VersionedCache
from controlplane.errors import CountersUnavailable, InvalidInput
from controlplane.models import ApiKey, RateLimitPolicy, Tenant, ToolPolicy, rate_validator
from controlplane.redis import redis_link


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


@dataclass(frozen=True)
class Window:
    """One fixed window of one limit, as django-ratelimit keys and times it."""

    group: str
    subject: str
    rate: str
    hit: RateLimitHit

    @cached_property
    def limit_and_period(self) -> tuple[int, int]:
        limit, period = _split_rate(self.rate)
        return int(limit), int(period)

    def ends_at(self) -> int:
        return int(_get_window(self.subject, self.limit_and_period[1]))

    def exceeded(self) -> RateLimitHit:
        retry_after = max(self.ends_at() - int(time.time()), 1)
        return RateLimitHit(rule=self.hit.rule, retry_after=retry_after, scope=self.hit.scope)


# Count each window in order, and stop at the first one past its limit (as a loop over
# get_usage would): returns that window's 1-based position, or 0 when all admit the call.
COUNT_WINDOWS_LUA = """
for i, key in ipairs(KEYS) do
  redis.call('SET', key, 0, 'EX', ARGV[2 * i], 'NX')
  if redis.call('INCR', key) > tonumber(ARGV[2 * i - 1]) then
    return i
  end
end
return 0
"""


@lru_cache(maxsize=4096)
def _counter_key(group: str, rate: str, subject: str, ends_at: int) -> str:
    """The Redis key of one window's counter; it changes only when the window rolls over,
    and hashing it anew cost ~10 us per window on every call."""
    return cache.make_key(_make_cache_key(group, ends_at, rate, subject, ""))


async def _count_on_redis(windows: Sequence[Window]) -> Window | None:
    link = redis_link()
    assert link is not None
    keys: list[str] = []
    limits_and_ttls: list[int] = []
    for window in windows:
        limit, period = window.limit_and_period
        keys.append(_counter_key(window.group, window.rate, window.subject, window.ends_at()))
        limits_and_ttls += [limit, period + EXPIRATION_FUDGE]
    try:
        exceeded = int(await link.run_script(COUNT_WINDOWS_LUA, keys, limits_and_ttls))
    except RedisError:
        logger.warning("rate-limit counters unreachable", exc_info=True)
        raise CountersUnavailable(
            "the control plane cannot reach its rate-limit counters (Redis); retry shortly"
        ) from None
    return windows[exceeded - 1] if exceeded else None


def _count_in_memory(windows: Sequence[Window]) -> Window | None:
    for window in windows:
        usage = get_usage(
            None,
            group=window.group,
            key=lambda _group, _request, subject=window.subject: subject,
            rate=window.rate,
            increment=True,
        )
        if usage is not None and usage["should_limit"]:
            return window
    return None


async def _count(windows: Sequence[Window]) -> RateLimitHit | None:
    """Count one event in every window; the hit for the first window past its limit."""
    if redis_link() is not None:
        exceeded = await _count_on_redis(windows)
    else:
        exceeded = _count_in_memory(windows)
    return None if exceeded is None else exceeded.exceeded()


def _rate_windows(
    policy: TenantPolicy, *, tenant_slug: str, key_prefix: str, tool: str
) -> list[Window]:
    return [
        Window(
            group=f"mcp:{rule.tool or '*'}",
            subject=f"key:{key_prefix}" if rule.per_key else f"tenant:{tenant_slug}",
            rate=rule.rate,
            hit=RateLimitHit(rule=rule, retry_after=0),
        )
        for rule in policy.rates_for(tool)
    ]


QONTAK_CEILING_SCOPE = "requests sent to this tenant's Qontak account"


def _qontak_window(policy: TenantPolicy, *, tenant_slug: str) -> Window:
    """The ceiling that protects the customer's Qontak quota, one event per request sent."""
    return Window(
        group="qontak",
        subject=f"tenant:{tenant_slug}",
        rate=policy.qontak_ceiling,
        hit=RateLimitHit(
            rule=RateRule(rate=policy.qontak_ceiling, tool="", per_key=False),
            retry_after=0,
            scope=QONTAK_CEILING_SCOPE,
        ),
    )


async def admit_call(
    *, policy: TenantPolicy, tenant_slug: str, key_prefix: str, tool: str
) -> RateLimitHit | None:
    """Count a tool call against every applicable rate and its first Qontak request against
    the ceiling, in one round trip; the first limit exceeded, if any.

    Counters live in the shared cache (Redis in production), so the limits hold across
    workers and hosts. Raises CountersUnavailable when Redis cannot be reached.
    """
    windows = _rate_windows(policy, tenant_slug=tenant_slug, key_prefix=key_prefix, tool=tool)
    return await _count([*windows, _qontak_window(policy, tenant_slug=tenant_slug)])


async def admit_qontak_retry(*, policy: TenantPolicy, tenant_slug: str) -> RateLimitHit | None:
    """Count one more request to Qontak (a retry) against the tenant's ceiling."""
    return await _count([_qontak_window(policy, tenant_slug=tenant_slug)])


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
