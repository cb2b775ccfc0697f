"""A Redis cache backend whose connection pool is shared by the whole process.

Django keeps one cache object per async context, and the built-in RedisCache builds a new
connection pool for each object: under ASGI that is a new Redis connection for nearly every
request (measured by `make bench`: one connection and ~4 ms per tool call). Rate-limit
counters, locks and the health check all go through this backend, so they share one pool.
"""

from __future__ import annotations

import threading
from functools import cached_property
from typing import Any

from django.core.cache.backends.redis import RedisCache, RedisCacheClient

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
