"""One shared token that changes whenever access configuration changes, so workers may cache it.

API keys, tenants and policies are read on every tool call; reading them from the database
cost ~1.4 ms of ORM work per call (`make bench`). Each worker instead keeps its own copy,
tagged with the version it was read under, and reads the shared version once per request
(one Redis GET on the event loop). Every committed change to those models announces a new
version, so a revocation or a policy edit made anywhere applies on the next call everywhere.

Without a shared store (no REDIS_URL) there is nothing to compare against: `current()` is
None and every call reads the database. A copy is also dropped after MAX_AGE_SECONDS, so
an announcement lost to a Redis outage cannot keep a revoked key alive for longer than that.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any, Generic, TypeVar

from django.core.cache import cache
from django.db import transaction
from django.db.models import Model
from redis.exceptions import RedisError

from controlplane.cache import async_redis, sync_redis

logger = logging.getLogger(__name__)

VERSION_KEY = "config-version"
MAX_AGE_SECONDS = 30.0


def _redis_key() -> str:
    return cache.make_key(VERSION_KEY)


def announce_change() -> None:
    """Publish a new version now. Blocking (Redis); call it after the change is committed."""
    client = sync_redis()
    if client is None:
        return
    try:
        client.set(_redis_key(), uuid.uuid4().hex)
    except RedisError:
        logger.error(
            "configuration change not announced: Redis unreachable; workers apply it within %d s",
            MAX_AGE_SECONDS,
            exc_info=True,
            extra={"event": "config_announce_failed"},
        )


def announce_change_on_commit() -> None:
    """Announce once the current transaction commits (at once outside a transaction), so no
    worker can read the old rows under the new version."""
    transaction.on_commit(announce_change)


def config_changed(sender: type[Model], instance: Model, **kwargs: Any) -> None:
    """post_save/post_delete receiver for every model that decides who may call what."""
    announce_change_on_commit()


async def current() -> str | None:
    """The shared version, or None when there is none to trust (no Redis, or Redis down)."""
    client = async_redis()
    if client is None:
        return None
    try:
        value = await client.get(_redis_key())
    except RedisError:
        logger.warning(
            "configuration version unreadable; reading keys and policies from the database",
            exc_info=True,
            extra={"event": "config_version_unavailable"},
        )
        return None
    return value.decode() if isinstance(value, bytes) else str(value or "")


Key = TypeVar("Key")
Value = TypeVar("Value")


class VersionedCache(Generic[Key, Value]):
    """A worker's copies, each valid for the version it was read under and MAX_AGE_SECONDS."""

    def __init__(self) -> None:
        self._entries: dict[Key, tuple[str, float, Value]] = {}
        self._lock = threading.Lock()

    def get(self, key: Key, version: str | None) -> Value | None:
        if version is None:
            return None
        with self._lock:
            entry = self._entries.get(key)
        if entry is None:
            return None
        entry_version, read_at, value = entry
        if entry_version != version or time.monotonic() - read_at > MAX_AGE_SECONDS:
            return None
        return value

    def put(self, key: Key, version: str | None, value: Value) -> None:
        if version is None:
            return
        with self._lock:
            self._entries[key] = (version, time.monotonic(), value)

    def discard(self, key: Key) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
