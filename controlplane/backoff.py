"""A tenant-wide pause of the requests sent to Qontak, shared by every worker.

When Qontak answers 429 with Retry-After, or has failed BREAKER_FAILURES attempts in a row
(5xx, or could not be reached), the tenant's calls stop reaching Qontak for the wait it asked
for, or BREAKER_OPEN_SECONDS: they fail at once with the time left, instead of piling retries
onto an account that is already struggling. The pause is a Redis key checked in the same round
trip that counts the call (controlplane.ratelimit); without Redis it is this process's alone.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass

from django.core.cache import cache
from redis.exceptions import RedisError

from controlplane.redis import redis_link

logger = logging.getLogger(__name__)

BREAKER_FAILURES = 5
BREAKER_OPEN_SECONDS = 10.0
# A Retry-After beyond this is honoured only this long: an operator should look at it.
MAX_PAUSE_SECONDS = 300.0
# Consecutive failures further apart than this do not add up.
FAILURE_MEMORY_SECONDS = 30

RECORD_FAILURE_LUA = """
local retry_after = tonumber(ARGV[1])
if retry_after > 0 then
  if redis.call('PTTL', KEYS[2]) < retry_after then
    redis.call('SET', KEYS[2], ARGV[4], 'PX', retry_after)
  end
  return retry_after
end
local failures = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[5])
if failures >= tonumber(ARGV[2]) then
  redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[3])
  redis.call('DEL', KEYS[1])
  return tonumber(ARGV[3])
end
return 0
"""


@dataclass(frozen=True)
class Pause:
    seconds: float
    reason: str  # the status that caused it ("429", "503"), or "unreachable"

    @property
    def message(self) -> str:
        wait = max(round(self.seconds), 1)
        if self.reason == "429":
            cause = "Qontak is rate limiting this account (HTTP 429)"
        elif self.reason == "unreachable":
            cause = "Qontak could not be reached several times in a row for this account"
        else:
            cause = f"Qontak failed several times in a row for this account (HTTP {self.reason})"
        return f"{cause}; calls to it are paused: retry in {wait} s"


def pause_key(tenant_slug: str) -> str:
    return cache.make_key(f"qontak-pause:{tenant_slug}")


def _failures_key(tenant_slug: str) -> str:
    return cache.make_key(f"qontak-failures:{tenant_slug}")


# Without Redis: this process's pauses and failure counts, by tenant.
_local_pauses: dict[str, tuple[float, str]] = {}
_local_failures: dict[str, tuple[int, float]] = {}
# Tenants this worker saw fail: only those need their failure count reset after a success.
_failing: set[str] = set()


def local_pause(tenant_slug: str) -> Pause | None:
    until, reason = _local_pauses.get(tenant_slug, (0.0, ""))
    left = until - time.monotonic()
    return Pause(seconds=left, reason=reason) if left > 0 else None


def _reason(status: int | None) -> str:
    return "unreachable" if status is None else str(status)


async def attempt_failed(
    *, tenant_slug: str, status: int | None, retry_after: float | None
) -> None:
    """Record a failed attempt (429, 5xx, or `status` None: unreachable). Best effort: a
    Redis that cannot be reached only loses the pause, never the call."""
    _failing.add(tenant_slug)
    wait = min(retry_after, MAX_PAUSE_SECONDS) if retry_after else 0.0
    link = redis_link()
    if link is None:
        _record_locally(tenant_slug, _reason(status), wait)
        return
    try:
        opened = await link.run_script(
            RECORD_FAILURE_LUA,
            [_failures_key(tenant_slug), pause_key(tenant_slug)],
            [
                int(wait * 1000),
                BREAKER_FAILURES,
                int(BREAKER_OPEN_SECONDS * 1000),
                _reason(status),
                FAILURE_MEMORY_SECONDS,
            ],
        )
    except RedisError:
        logger.warning(
            "Qontak failure not recorded: Redis unreachable",
            extra={"event": "qontak_pause_unrecorded", "tenant": tenant_slug},
        )
        return
    if int(opened) and not wait:
        logger.warning(
            "Qontak failed %d times in a row; pausing calls for %.0f s",
            BREAKER_FAILURES,
            BREAKER_OPEN_SECONDS,
            extra={"event": "qontak_paused", "tenant": tenant_slug, "reason": _reason(status)},
        )


def _record_locally(tenant_slug: str, reason: str, wait: float) -> None:
    now = time.monotonic()
    if wait:
        _local_pauses[tenant_slug] = (now + wait, reason)
        return
    count, last = _local_failures.get(tenant_slug, (0, now))
    count = count + 1 if now - last <= FAILURE_MEMORY_SECONDS else 1
    if count >= BREAKER_FAILURES:
        _local_pauses[tenant_slug] = (now + BREAKER_OPEN_SECONDS, reason)
        _local_failures.pop(tenant_slug, None)
    else:
        _local_failures[tenant_slug] = (count, now)


async def attempt_succeeded(*, tenant_slug: str) -> None:
    """Reset the failure count, once, after failures this worker saw: no I/O otherwise."""
    if tenant_slug not in _failing:
        return
    _failing.discard(tenant_slug)
    _local_failures.pop(tenant_slug, None)
    link = redis_link()
    if link is not None:
        with contextlib.suppress(RedisError):  # the count expires by itself
            await link.execute("DEL", _failures_key(tenant_slug))
