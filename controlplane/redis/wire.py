"""Redis's wire format (RESP2) and connection set-up, shared by the pipelined link and the
subscription."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import TypeVar

from redis.connection import SSLConnection, parse_url

ProtocolType = TypeVar("ProtocolType", bound=asyncio.Protocol)


def command(*parts: str | bytes | int) -> bytes:
    """One command in Redis's wire format (RESP)."""
    encoded = [part if isinstance(part, bytes) else str(part).encode() for part in parts]
    return b"*%d\r\n" % len(encoded) + b"".join(
        b"$%d\r\n%s\r\n" % (len(part), part) for part in encoded
    )


def handshake(url: str, *, select_db: bool) -> list[bytes]:
    """The commands a new connection sends first: AUTH when the URL has a password, then
    SELECT its database (not for a subscription: channels ignore databases)."""
    options = parse_url(url)
    commands = []
    if options.get("password"):
        credentials = (options.get("username"), options["password"])
        commands.append(command("AUTH", *(part for part in credentials if part)))
    if select_db and int(options.get("db") or 0):
        commands.append(command("SELECT", int(options["db"])))
    return commands


async def open_connection(url: str, protocol_factory: Callable[[], ProtocolType]) -> ProtocolType:
    """Connect `protocol_factory()` to the Redis of `url` (redis://, rediss:// or unix://).
    The caller bounds the wait."""
    loop = asyncio.get_running_loop()
    options = parse_url(url)
    if "path" in options:
        _, protocol = await loop.create_unix_connection(protocol_factory, options["path"])
    else:
        tls = (
            ssl.create_default_context()
            if options.get("connection_class") is SSLConnection
            else None
        )
        _, protocol = await loop.create_connection(
            protocol_factory, options["host"], options.get("port", 6379), ssl=tls
        )
    return protocol
