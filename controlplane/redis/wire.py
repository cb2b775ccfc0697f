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


_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


def tls_context(url: str) -> ssl.SSLContext | None:
    """The TLS context for a rediss:// URL (None for redis:// and unix://), honouring the TLS
    options redis-py reads from the URL's query, so this client verifies the server exactly as
    the cache, the channel layer and the locks do: `ssl_ca_certs` (a CA file, which is how
    REDIS_CA_FILE reaches every client), `ssl_cert_reqs` and `ssl_check_hostname`."""
    options = parse_url(url)
    if options.get("connection_class") is not SSLConnection:
        return None
    context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
    requirement = options.get("ssl_cert_reqs", "required")
    if isinstance(requirement, str):
        if requirement.lower() not in _CERT_REQS:
            raise ValueError(f"ssl_cert_reqs must be none, optional or required: {requirement}")
        requirement = _CERT_REQS[requirement.lower()]
    check_hostname = options.get("ssl_check_hostname", True)
    context.check_hostname = bool(check_hostname) and requirement != ssl.CERT_NONE
    context.verify_mode = requirement
    return context


async def open_connection(url: str, protocol_factory: Callable[[], ProtocolType]) -> ProtocolType:
    """Connect `protocol_factory()` to the Redis of `url` (redis://, rediss:// or unix://).
    The caller bounds the wait."""
    loop = asyncio.get_running_loop()
    options = parse_url(url)
    if "path" in options:
        _, protocol = await loop.create_unix_connection(protocol_factory, options["path"])
    else:
        _, protocol = await loop.create_connection(
            protocol_factory, options["host"], options.get("port", 6379), ssl=tls_context(url)
        )
    return protocol
