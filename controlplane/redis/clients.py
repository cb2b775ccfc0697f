"""The process's Redis clients: the Django cache backend, the blocking client for locks and
announcements, and each event loop's pipelined link.

Django keeps one cache object per async context, and the built-in RedisCache builds a new
connection pool for each object: under ASGI that is a new Redis connection for nearly every
request. Every cache object here shares one pool per configuration instead. Without
REDIS_URL there is no shared store, and the direct clients are None.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from functools import cached_property
from typing import Any

import redis
from django.conf import settings
from django.core.cache.backends.redis import RedisCache, RedisCacheClient

from controlplane.redis.link import RedisLink

_clients: dict[str, RedisCacheClient] = {}
_clients_lock = threading.Lock()


class SharedRedisCache(RedisCache):
    @cached_property
    def _cache(self) -> Any:
        # django-stubs does not declare RedisCache's private attributes.
        servers: list[str] = self._servers  # type: ignore[attr-defined]
        options: dict[str, Any] = self._options  # type: ignore[attr-defined]
        key = repr((servers, sorted(options.items())))
        with _clients_lock:
            client = _clients.get(key)
            if client is None:
                client = _clients[key] = RedisCacheClient(servers, **options)
            return client


# A short timeout: a call waits for Redis on its own path, and a dead Redis must fail fast.
REDIS_TIMEOUT_SECONDS = 2.0

_sync_client: tuple[str, redis.Redis] | None = None
# An asyncio connection belongs to the loop that opened it: one link per running loop.
_links: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RedisLink] = (
    weakref.WeakKeyDictionary()
)


def sync_redis() -> redis.Redis | None:
    """The process's blocking client for the shared Redis, or None without REDIS_URL. Its
    socket timeouts bound every command, so a stalled Redis cannot hold a thread."""
    global _sync_client
    url = settings.REDIS_URL
    if not url:
        return None
    with _clients_lock:
        if _sync_client is None or _sync_client[0] != url:
            _sync_client = (
                url,
                redis.Redis.from_url(
                    url,
                    socket_timeout=REDIS_TIMEOUT_SECONDS,
                    socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
                ),
            )
        return _sync_client[1]


def redis_link() -> RedisLink | None:
    """This event loop's link to the shared Redis, or None without REDIS_URL."""
    if not settings.REDIS_URL:
        return None
    loop = asyncio.get_running_loop()
    link = _links.get(loop)
    if link is None or link.url != settings.REDIS_URL:
        link = _links[loop] = RedisLink(settings.REDIS_URL, REDIS_TIMEOUT_SECONDS)
    return link
