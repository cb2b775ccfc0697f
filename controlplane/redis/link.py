"""One pipelined asyncio connection to Redis for the commands the tool-call path sends on every
call: every caller's commands share it, and replies settle the waiters in order."""

from __future__ import annotations

import asyncio
import collections
import functools
import hashlib
from typing import Any, cast

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from controlplane.redis.wire import command, handshake, open_connection


@functools.cache
def _script_sha(source: str) -> str:
    return hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()


class _Pipelined(asyncio.Protocol):
    """Replies arrive in the order commands were written: each settles the oldest waiter."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader()
        self._waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.lost: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while (reply := self._reader.gets()) is not False:
            if not self._waiting:  # a reply nobody asked for: the pairing can't be trusted
                assert self.transport is not None
                self.transport.abort()
                return
            waiter = self._waiting.popleft()
            if not waiter.done():  # its caller may have timed out
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = RedisConnectionError(f"connection to Redis lost ({exc or 'closed'})")
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(self.lost)

    def send(self, payload: bytes, replies: int) -> list[asyncio.Future[Any]]:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        waiters = [loop.create_future() for _ in range(replies)]
        self._waiting.extend(waiters)
        self.transport.write(payload)
        return waiters


class RedisLink:
    """One pipelined connection, opened on first use and again after it is lost."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self._connection: _Pipelined | None = None
        self._connecting: asyncio.Lock | None = None

    async def execute(self, *parts: str | bytes | int) -> Any:
        """Send one command and return its reply; raises redis-py's ConnectionError,
        TimeoutError or ResponseError."""
        connection = await self._connected()
        (waiter,) = connection.send(command(*parts), 1)
        try:
            async with asyncio.timeout(self.timeout):
                reply = await waiter
        except TimeoutError:
            self.close()  # a Redis that stalls once is not trusted with the next command
            raise RedisTimeoutError(f"Redis did not answer within {self.timeout} s") from None
        if isinstance(reply, hiredis.ReplyError):
            raise ResponseError(str(reply))
        return reply

    async def run_script(self, source: str, keys: list[str], args: list[int | str]) -> Any:
        """Run a Lua script by its SHA1 (EVALSHA); a Redis that lost its script cache, say
        after a restart, gets the source once (EVAL caches it again)."""
        sha = _script_sha(source)
        arguments: tuple[str | int, ...] = (len(keys), *keys, *args)
        try:
            return await self.execute("EVALSHA", sha, *arguments)
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            return await self.execute("EVAL", source, *arguments)

    async def _connected(self) -> _Pipelined:
        connection = self._connection
        if connection is not None and connection.lost is None:
            return connection
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._connection is None or self._connection.lost is not None:
                self._connection = await self._open()
            return self._connection

    async def _open(self) -> _Pipelined:
        try:
            async with asyncio.timeout(self.timeout):
                connection = await open_connection(self.url, _Pipelined)
        except (OSError, TimeoutError) as exc:
            raise RedisConnectionError(f"cannot connect to Redis: {exc}") from None
        commands = handshake(self.url, select_db=True)
        if not commands:
            return connection
        waiters = connection.send(b"".join(commands), len(commands))
        try:
            async with asyncio.timeout(self.timeout):
                replies = await asyncio.gather(*waiters)
        except TimeoutError:
            replies = ["no answer to AUTH/SELECT"]
        refused = [reply for reply in replies if not isinstance(reply, bytes)]
        if refused:
            assert connection.transport is not None
            connection.transport.abort()
            raise RedisConnectionError(f"Redis refused the connection: {refused[0]}")
        return connection

    def close(self) -> None:
        if self._connection is not None and self._connection.transport is not None:
            self._connection.transport.abort()
        self._connection = None
