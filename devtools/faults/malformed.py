"""Malformed requests to /mcp: what a broken or hostile client sends.

Every kind must be refused with a 4xx or answered with a JSON-RPC or tool error; a 5xx, a
dropped connection or a slower answer to the good calls sent meanwhile is a finding. Each
request carries its own X-Request-Id, so audit rows written for them can be told apart.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx

from bench.load_driver import META, TOOL, mcp_headers
from devtools.faults.traffic import CLIENT_TIMEOUT, Traffic

SENDERS = 4


@dataclass(frozen=True)
class Malformed:
    kind: str
    body: bytes
    headers: dict[str, str]
    method: str = "POST"


def _rpc(message: object) -> bytes:
    return json.dumps(message).encode()


def _call(name: str = TOOL, arguments: object = None, request_id: object = 7) -> bytes:
    params: dict[str, object] = {"name": name, "_meta": META}
    if arguments is not None:
        params["arguments"] = arguments
    return _rpc({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params})


def _kinds(key: str) -> list[Malformed]:
    good = dict(mcp_headers(key))
    no_key = dict(mcp_headers(None))
    one = _call(arguments={"id": 1})
    deep: object = {"id": 1}
    for _ in range(200):
        deep = {"nested": deep}

    def rpc(**message: object) -> bytes:
        return _rpc({"jsonrpc": "2.0", "id": 1, **message})

    def with_header(name: str, value: str) -> dict[str, str]:
        return {**good, name: value}

    return [
        Malformed("truncated JSON", b'{"jsonrpc": "2.0", "id": 1, "method": "tools/ca', good),
        Malformed("not JSON", b"\x00\xff\xfe garbage \x81", good),
        Malformed("empty body", b"", good),
        Malformed("JSON-RPC 1.0", rpc(jsonrpc="1.0", method="tools/call"), good),
        Malformed("no method", rpc(params={}), good),
        Malformed("params as a list", rpc(method="tools/call", params=[1]), good),
        Malformed("unknown method", rpc(method="tools/explode"), good),
        Malformed("empty batch", b"[]", good),
        Malformed("batch of calls", b"[" + one + b"," + one + b"]", good),
        Malformed("huge integer id", _call(request_id=10**400), good),
        Malformed("2**64 id", _call(request_id=2**64), good),
        Malformed("float id", _call(request_id=1e308), good),
        Malformed("object id", _call(request_id={"a": [1, 2]}), good),
        Malformed("100 kB string id", _call(request_id="i" * 100_000), good),
        Malformed("unknown tool", _call(name="no_such_tool"), good),
        Malformed("1 kB tool name", _call(name="x" * 1000), good),
        Malformed("arguments of the wrong type", _call(arguments={"id": "one"}), good),
        Malformed("arguments missing", _call(), good),
        Malformed("arguments as a list", _call(arguments=[1]), good),
        Malformed("arguments nested 200 deep", _call(arguments=deep), good),
        Malformed("2 MB body", _call(arguments={"id": 1, "pad": "p" * 2_000_000}), good),
        Malformed("no key", one, no_key),
        Malformed("unknown key", one, with_header("Authorization", "Bearer qmcp_NotAKey000000")),
        Malformed("basic auth", one, with_header("Authorization", "Basic dXNlcjpwdw==")),
        Malformed("8 kB key", one, with_header("Authorization", "Bearer " + "k" * 8000)),
        Malformed("wrong content type", one, with_header("Content-Type", "text/plain")),
        Malformed("unknown protocol", one, with_header("MCP-Protocol-Version", "1999-01-01")),
        Malformed("GET", b"", good, method="GET"),
        Malformed("DELETE", b"", good, method="DELETE"),
    ]


def malformed_requests(key: str, count: int) -> Iterator[Malformed]:
    kinds = _kinds(key)
    for index in range(count):
        yield kinds[index % len(kinds)]


@dataclass
class MalformedTally:
    """Answers by HTTP status (`no answer` for a dropped connection), and the kinds that got a
    5xx or no answer."""

    sent: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    server_errors: Counter[str] = field(default_factory=Counter)


async def send_malformed(traffic: Traffic, count: int) -> MalformedTally:
    """Send `count` malformed requests from SENDERS connections, each after the previous
    answer, while the scenario's callers keep making good calls."""
    tally = MalformedTally()
    queue = iter(malformed_requests(traffic.key, count))
    by_status, server_errors = tally.by_status, tally.server_errors

    async def sender() -> None:
        async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT) as client:
            for request in queue:
                headers = {**request.headers, "X-Request-Id": traffic.next_request_id("m")}
                tally.sent += 1
                try:
                    answer = await client.request(
                        request.method, traffic.url, headers=headers, content=request.body
                    )
                except httpx.HTTPError as exc:
                    by_status["no answer"] += 1
                    server_errors[f"{request.kind}: {type(exc).__name__}"] += 1
                    continue
                by_status[str(answer.status_code)] += 1
                if answer.status_code >= 500:
                    server_errors[f"{request.kind}: HTTP {answer.status_code}"] += 1

    await asyncio.gather(*(sender() for _ in range(SENDERS)))
    return tally
