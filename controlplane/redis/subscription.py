"""A subscription to one Redis channel that stays up for as long as its task runs.

Each message is handed to the listener in the event loop's I/O callback (`data_received`), so
it is applied before any request that reached the worker in the same loop turn starts. The
listener is told when the subscription becomes live and when it is lost (closed, refused, or
silent for two heartbeats); the subscription then reconnects with growing waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Protocol, cast

import hiredis

from controlplane.redis.clients import REDIS_TIMEOUT_SECONDS
from controlplane.redis.wire import command, handshake, open_connection

logger = logging.getLogger(__name__)

# Waits between attempts to subscribe again; the last one repeats.
RESUBSCRIBE_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)


class Listener(Protocol):
    def on_live(self) -> None:
        """Redis confirmed the subscription: from now on no message is missed."""

    def on_message(self) -> None:
        """A message arrived on the channel."""

    def on_lost(self, reason: str) -> None:
        """Messages may be missed from now on, until `on_live` again."""


class _Connection(asyncio.Protocol):
    """One Redis connection in subscribed mode; each reply is handled as its bytes arrive."""

    def __init__(self, subscription: Subscription) -> None:
        self._subscription = subscription
        self._reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while (reply := self._reader.gets()) is not False:
            self._subscription.on_reply(reply, self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._subscription.listener.on_lost("connection closed")
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class Subscription:
    """Follows `channel` on the Redis of `url`, PINGing every `heartbeat` seconds."""

    def __init__(self, url: str, channel: str, listener: Listener, *, heartbeat: float) -> None:
        self.url = url
        self.channel = channel
        self.listener = listener
        self.heartbeat = heartbeat
        self._last_reply = 0.0

    def on_reply(self, reply: Any, connection: _Connection) -> None:
        self._last_reply = time.monotonic()
        if isinstance(reply, hiredis.ReplyError):
            self.listener.on_lost(f"Redis refused the subscription ({reply})")
            connection.close()
        elif isinstance(reply, list) and reply and reply[0] == b"subscribe":
            self.listener.on_live()
        elif isinstance(reply, list) and reply and reply[0] == b"message":
            self.listener.on_message()

    async def run(self) -> None:
        """Stay subscribed for as long as the task runs, resubscribing after every loss."""
        failures = 0
        while True:
            try:
                connection = await self._subscribe()
            except (OSError, TimeoutError) as exc:
                if failures == 0:
                    self.listener.on_lost(f"cannot subscribe ({exc})")
            except Exception:  # a bug here must not end the subscription
                logger.exception(
                    "subscription to %s failed; retrying",
                    self.channel,
                    extra={"event": "redis_subscription_failed"},
                )
            else:
                failures = 0
                try:
                    await self._keep_alive(connection)
                finally:
                    connection.close()
            await asyncio.sleep(RESUBSCRIBE_DELAYS[min(failures, len(RESUBSCRIBE_DELAYS) - 1)])
            failures += 1

    async def _subscribe(self) -> _Connection:
        connection = _Connection(self)
        async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
            await open_connection(self.url, lambda: connection)
        assert connection.transport is not None
        commands = [*handshake(self.url, select_db=False), command("SUBSCRIBE", self.channel)]
        self._last_reply = time.monotonic()
        connection.transport.write(b"".join(commands))
        return connection

    async def _keep_alive(self, connection: _Connection) -> None:
        """PING every heartbeat until the connection closes; drop it if Redis is silent."""
        while not connection.closed.done():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.heartbeat):
                    await asyncio.shield(connection.closed)
            if connection.closed.done():
                return
            if time.monotonic() - self._last_reply > 2 * self.heartbeat:
                self.listener.on_lost("Redis did not answer the heartbeat")
                return
            assert connection.transport is not None
            connection.transport.write(command("PING"))
