"""A version of the access configuration per worker, renewed whenever anyone changes it.

API keys, tenants and policies are read on every tool call; reading them from the database, or
asking Redis for a shared version, on every call would cost each call a round trip. Instead,
each worker keeps copies tagged with a version token of its own and follows a Redis pub/sub
channel (controlplane.redis.subscription): every committed change to those models publishes a
message there, and the worker takes a new token when it arrives, which drops every copy at
once. A change applies to every call that arrives after its announcement: in practice, the
next call.

A worker trusts its copies only while its subscription is live. Before Redis confirms it, after
the connection drops, or when a heartbeat goes unanswered, `current()` is None and every call
reads the database; a new subscription starts with a new token, because announcements made
while it was down are lost. Copies also expire after MAX_AGE_SECONDS, a backstop for an
announcement that never reached Redis (logged at ERROR). Without REDIS_URL there is no
channel, and every call reads the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import Any, Generic, TypeVar

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Model
from redis.exceptions import RedisError

from controlplane.redis import sync_redis
from controlplane.redis.subscription import Subscription

logger = logging.getLogger(__name__)

CHANNEL = "config-changes"
MAX_AGE_SECONDS = 30.0
# A silent Redis (no reply to PING for two beats) counts as gone: the worker reads the database.
HEARTBEAT_SECONDS = 5.0


def _channel() -> str:
    return cache.make_key(CHANNEL)


def announce_change() -> None:
    """Publish a change now. Blocking (Redis); call it after the change is committed."""
    client = sync_redis()
    if client is None:
        return
    try:
        client.publish(_channel(), b"")
    except RedisError:
        logger.error(
            "configuration change not announced: Redis unreachable; workers apply it within %d s",
            MAX_AGE_SECONDS,
            exc_info=True,
            extra={"event": "config_announce_failed"},
        )


def announce_change_on_commit() -> None:
    """Announce once the current transaction commits (at once outside a transaction), so no
    worker can read the old rows under its new version."""
    transaction.on_commit(announce_change)


def config_changed(sender: type[Model], instance: Model, **kwargs: Any) -> None:
    """post_save/post_delete receiver for every model that decides who may call what."""
    announce_change_on_commit()


# Tokens are never reused in a process, so a copy can only match the subscription it was read in.
_tokens = itertools.count(1)


class ChangeWatcher:
    """Follows the announcements of one Redis; `version` is None while it could miss one."""

    def __init__(self, url: str, channel: str) -> None:
        self.url = url
        self.channel = channel
        self.version: str | None = None
        self._lost_reason = ""

    def on_live(self) -> None:
        logger.info("following configuration changes", extra={"event": "config_watch_live"})
        self._lost_reason = ""
        self.version = str(next(_tokens))

    def on_message(self) -> None:
        self.version = str(next(_tokens))

    def on_lost(self, reason: str) -> None:
        """Logged once per outage (the subscription retries quietly until it is live again)."""
        if self.version is not None or reason != self._lost_reason:
            logger.warning(
                "configuration-change subscription lost (%s); reading keys and policies from "
                "the database until Redis is back",
                reason,
                extra={"event": "config_watch_lost"},
            )
        self._lost_reason = reason
        self.version = None

    async def run(self) -> None:
        """Stay subscribed for as long as the task runs."""
        subscription = Subscription(self.url, self.channel, self, heartbeat=HEARTBEAT_SECONDS)
        await subscription.run()


_watcher: ChangeWatcher | None = None


def current() -> str | None:
    """This worker's version, or None when its copies cannot be trusted (no live subscription).
    No I/O: safe on every request."""
    return None if _watcher is None else _watcher.version


@contextlib.asynccontextmanager
async def following_changes() -> AsyncIterator[None]:
    """Follow the announcements for the life of the worker (its ASGI lifespan)."""
    global _watcher
    if not settings.REDIS_URL or _watcher is not None:
        yield
        return
    watcher = _watcher = ChangeWatcher(settings.REDIS_URL, _channel())
    task = asyncio.get_running_loop().create_task(watcher.run())
    try:
        yield
    finally:
        _watcher = None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


Key = TypeVar("Key")
Value = TypeVar("Value")


class VersionedCache(Generic[Key, Value]):
    """A worker's copies, each valid for the version it was read under and MAX_AGE_SECONDS.

    At most `max_entries` (WORKER_CACHE_ENTRIES) are kept, the oldest written dropped first,
    so a worker serving many tenants, keys or people holds a bounded amount: a dropped copy
    costs one database read when next needed."""

    def __init__(self, max_entries: int | None = None) -> None:
        self._entries: dict[Key, tuple[str, float, Value]] = {}
        self._lock = threading.Lock()
        self._max_entries = max_entries

    def get(self, key: Key, version: str | None, *, any_age: bool = False) -> Value | None:
        """The copy read under `version`; older than MAX_AGE_SECONDS only with `any_age`,
        for when the database cannot be asked again (no announcement has said it changed)."""
        if version is None:
            return None
        with self._lock:
            entry = self._entries.get(key)
        if entry is None:
            return None
        entry_version, read_at, value = entry
        if entry_version != version:
            return None
        if not any_age and time.monotonic() - read_at > MAX_AGE_SECONDS:
            return None
        return value

    def put(self, key: Key, version: str | None, value: Value) -> None:
        if version is None:
            return
        limit = self._max_entries or settings.WORKER_CACHE_ENTRIES
        with self._lock:
            self._entries.pop(key, None)  # a rewritten copy counts as the newest
            self._entries[key] = (version, time.monotonic(), value)
            while len(self._entries) > limit:
                del self._entries[next(iter(self._entries))]

    def __len__(self) -> int:
        return len(self._entries)

    def discard(self, key: Key) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
