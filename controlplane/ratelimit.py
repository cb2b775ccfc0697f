"""Counting tool calls, and requests sent to Qontak, against the limits a TenantPolicy sets.

The windows are django-ratelimit's fixed windows: its rate syntax, its staggered windows and
its cache keys. With Redis, every window a call touches is counted by one Lua script in one
round trip on the event loop, where django-ratelimit's `get_usage` would take a thread hop and
several commands per window. To count the very windows django-ratelimit reads, this module
uses three of its private helpers (`_split_rate`, `_get_window`, `_make_cache_key`), here and
nowhere else; tests/test_ratelimit.py counts here and reads with the public `get_usage`, so it
fails if the library changes underneath. Without Redis the counters live in this process's
memory, where `get_usage` itself counts, without I/O.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache

from django.conf import settings
from django.core.cache import cache
from django_ratelimit.core import (
    EXPIRATION_FUDGE,
    _get_window,
    _make_cache_key,
    _split_rate,
    get_usage,
)
from redis.exceptions import RedisError

from controlplane.backoff import Pause, local_pause, pause_key
from controlplane.errors import CountersUnavailable, QontakPaused
from controlplane.policies import RateRule, TenantPolicy
from controlplane.redis import redis_link

logger = logging.getLogger(__name__)


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
# get_usage would). Before the window at position ARGV[#ARGV] (0: none), check the tenant's
# Qontak pause, the last key. Returns {0} when every window admits the call, {i} for the
# first window past its limit, or {-1, milliseconds left, reason} when Qontak is paused.
COUNT_WINDOWS_LUA = """
local windows = (#ARGV - 1) / 2
local gate = tonumber(ARGV[#ARGV])
for i = 1, windows do
  if i == gate then
    local left = redis.call('PTTL', KEYS[windows + 1])
    if left > 0 then
      return {-1, left, redis.call('GET', KEYS[windows + 1]) or ''}
    end
  end
  redis.call('SET', KEYS[i], 0, 'EX', ARGV[2 * i], 'NX')
  if redis.call('INCR', KEYS[i]) > tonumber(ARGV[2 * i - 1]) then
    return {i}
  end
end
return {0}
"""


@lru_cache(maxsize=4096)
def _counter_key(group: str, rate: str, subject: str, ends_at: int) -> str:
    """The Redis key of one window's counter; it changes only when the window rolls over, so
    it is not hashed anew on every call."""
    return cache.make_key(_make_cache_key(group, ends_at, rate, subject, ""))


async def _count_on_redis(
    windows: Sequence[Window], gate: int, tenant_slug: str
) -> Window | Pause | None:
    link = redis_link()
    assert link is not None
    keys: list[str] = []
    arguments: list[int] = []
    for window in windows:
        limit, period = window.limit_and_period
        keys.append(_counter_key(window.group, window.rate, window.subject, window.ends_at()))
        arguments += [limit, period + EXPIRATION_FUDGE]
    if gate:
        keys.append(pause_key(tenant_slug))
    try:
        reply = await link.run_script(COUNT_WINDOWS_LUA, keys, [*arguments, gate])
    except RedisError as exc:
        logger.warning(
            "rate-limit counters unreachable (%s)",
            type(exc).__name__,
            extra={"event": "counters_unavailable", "tenant": tenant_slug or None},
        )
        raise CountersUnavailable(
            "the control plane cannot reach its rate-limit counters (Redis); retry shortly"
        ) from None
    position = int(reply[0])
    if position < 0:
        return Pause(seconds=int(reply[1]) / 1000, reason=reply[2].decode())
    return windows[position - 1] if position else None


def _count_in_memory(
    windows: Sequence[Window], gate: int, tenant_slug: str
) -> Window | Pause | None:
    for position, window in enumerate(windows, start=1):
        if position == gate and (pause := local_pause(tenant_slug)) is not None:
            return pause
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


async def _count(
    windows: Sequence[Window], *, gate: int = 0, tenant_slug: str = ""
) -> RateLimitHit | None:
    """Count one event in every window; the hit for the first window past its limit. Before
    the window at position `gate` (the Qontak ceiling), the tenant's Qontak pause is checked:
    raises QontakPaused, and that window and the ones after it are not counted."""
    if redis_link() is not None:
        outcome = await _count_on_redis(windows, gate, tenant_slug)
    else:
        outcome = _count_in_memory(windows, gate, tenant_slug)
    if isinstance(outcome, Pause):
        raise QontakPaused(outcome.message, retry_after=max(round(outcome.seconds), 1))
    return None if outcome is None else outcome.exceeded()


def _rate_windows(
    policy: TenantPolicy, *, tenant_slug: str, caller_subject: str, tool: str
) -> list[Window]:
    return [
        Window(
            group=f"mcp:{rule.tool or '*'}",
            subject=caller_subject if rule.per_key else f"tenant:{tenant_slug}",
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
    *,
    policy: TenantPolicy,
    tenant_slug: str,
    caller_subject: str,
    tool: str,
    reaches_qontak: bool = True,
) -> RateLimitHit | None:
    """Count a tool call against every applicable rate and, when it will reach Qontak, its
    first request against the ceiling, in one round trip; the first limit exceeded, if any.

    Every authenticated call counts, refused or not; `tool` is "" for a name that is no tool,
    so invented names count against the all-tools limits only. Counters live in the shared
    cache (Redis in production), so the limits hold across workers and hosts. Raises
    CountersUnavailable when Redis cannot be reached, and QontakPaused when the call would
    reach Qontak while the tenant's requests are paused (controlplane.backoff).
    """
    windows = _rate_windows(
        policy, tenant_slug=tenant_slug, caller_subject=caller_subject, tool=tool
    )
    if not reaches_qontak:
        return await _count(windows)
    windows.append(_qontak_window(policy, tenant_slug=tenant_slug))
    return await _count(windows, gate=len(windows), tenant_slug=tenant_slug)


LISTING_SCOPE = "tools/list requests of this API key or person"


async def admit_listing(*, caller_subject: str) -> RateLimitHit | None:
    """Count a tools/list request against TOOLS_LIST_RATE: listing costs a policy lookup and a
    schema dump, so it is throttled per key (or person) apart from the tool-call limits.
    `caller_subject` is Caller.rate_subject."""
    rate = settings.TOOLS_LIST_RATE
    rule = RateRule(rate=rate, tool="", per_key=True)
    window = Window(
        group="mcp:tools/list",
        subject=caller_subject,
        rate=rate,
        hit=RateLimitHit(rule=rule, retry_after=0, scope=LISTING_SCOPE),
    )
    return await _count([window])


async def admit_qontak_retry(*, policy: TenantPolicy, tenant_slug: str) -> RateLimitHit | None:
    """Count one more request to Qontak (a retry) against the tenant's ceiling; raises
    QontakPaused when the tenant's requests are paused (controlplane.backoff)."""
    return await _count(
        [_qontak_window(policy, tenant_slug=tenant_slug)], gate=1, tenant_slug=tenant_slug
    )
