"""A version of the access configuration per worker, renewed whenever anyone changes it.

API keys, tenants and policies are read on every tool call. Reading them from the database
cost ~1.4 ms of ORM work per call, and asking Redis for a shared version on every call cost a
round trip (~0.5 ms at concurrency 1, `make bench`). Instead, each worker keeps copies tagged
with a version token of its own and follows a Redis pub/sub channel: every committed change to
those models publishes a message there, and the worker takes a new token when it arrives,
which drops every copy at once.

The message is handled in the event loop's I/O callback (`data_received`), before any request
that reached the worker in the same loop turn starts, so a change applies to every call that
arrives after its announcement: in practice, the next call.

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
from typing import Any, Generic, TypeVar, cast

import hiredis
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Model
from redis.exceptions import RedisError

from controlplane.cache import REDIS_TIMEOUT_SECONDS, sync_redis
from controlplane.redis_wire import command, handshake, open_connection

logger = logging.getLogger(__name__)

CHANNEL = "config-changes"
MAX_AGE_SECONDS = 30.0
# A silent Redis (no reply to PING for two beats) counts as gone: the worker reads the database.
HEARTBEAT_SECONDS = 5.0
# Waits between attempts to subscribe again; the last one repeats.
RESUBSCRIBE_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)


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


class _Subscription(asyncio.Protocol):
    """One Redis connection in subscribed mode; each reply is handled as its bytes arrive."""

    def __init__(self, watcher: ChangeWatcher) -> None:
        self._watcher = watcher
        self._reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while (reply := self._reader.gets()) is not False:
            self._watcher.on_reply(reply, self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._watcher.on_lost()
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class ChangeWatcher:
    """Follows the announcements of one Redis; `version` is None while it could miss one."""

    def __init__(self, url: str, channel: str) -> None:
        self.url = url
        self.channel = channel
        self.version: str | None = None
        self._last_reply = 0.0

    def on_reply(self, reply: Any, subscription: _Subscription) -> None:
        self._last_reply = time.monotonic()
        if isinstance(reply, hiredis.ReplyError):
            logger.error(
                "Redis refused the configuration-change subscription (%s); reading keys and "
                "policies from the database. Check REDIS_URL's credentials.",
                reply,
                extra={"event": "config_watch_refused"},
            )
            self.version = None
            subscription.close()
        elif isinstance(reply, list) and reply and reply[0] in (b"subscribe", b"message"):
            if reply[0] == b"subscribe":
                logger.info("following configuration changes", extra={"event": "config_watch_live"})
            self.version = str(next(_tokens))

    def on_lost(self) -> None:
        if self.version is not None:
            logger.warning(
                "configuration-change subscription lost; reading keys and policies from the "
                "database until Redis is back",
                extra={"event": "config_watch_lost"},
            )
        self.version = None

    async def run(self) -> None:
        """Stay subscribed for as long as the task runs, resubscribing after every loss."""
        failures = 0
        while True:
            try:
                subscription = await self._subscribe()
            except (OSError, TimeoutError) as exc:
                if failures == 0:
                    logger.warning(
                        "cannot subscribe to configuration changes (%s); retrying",
                        exc,
                        extra={"event": "config_watch_unavailable"},
                    )
            except Exception:  # a bug here must not end the watch: the worker stays on the DB
                logger.exception(
                    "configuration-change subscription failed; retrying",
                    extra={"event": "config_watch_unavailable"},
                )
            else:
                failures = 0
                try:
                    await self._keep_alive(subscription)
                finally:
                    subscription.close()
            await asyncio.sleep(RESUBSCRIBE_DELAYS[min(failures, len(RESUBSCRIBE_DELAYS) - 1)])
            failures += 1

    async def _subscribe(self) -> _Subscription:
        subscription = _Subscription(self)
        async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
            await open_connection(self.url, lambda: subscription)
        assert subscription.transport is not None
        commands = [*handshake(self.url, select_db=False), command("SUBSCRIBE", self.channel)]
        self._last_reply = time.monotonic()
        subscription.transport.write(b"".join(commands))
        return subscription

    async def _keep_alive(self, subscription: _Subscription) -> None:
        """PING every HEARTBEAT_SECONDS until the connection closes; drop it if Redis is silent."""
        while not subscription.closed.done():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HEARTBEAT_SECONDS):
                    await asyncio.shield(subscription.closed)
            if subscription.closed.done():
                return
            if time.monotonic() - self._last_reply > 2 * HEARTBEAT_SECONDS:
                logger.warning(
                    "Redis did not answer the configuration-change heartbeat; resubscribing",
                    extra={"event": "config_watch_silent"},
                )
                self.on_lost()
                return
            assert subscription.transport is not None
            subscription.transport.write(command("PING"))


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
