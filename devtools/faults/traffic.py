"""The callers of a fault scenario: `tools/call get_contact {"id": 1}` over real HTTP.

Each call is the request the official MCP client sends in the 2026-07-28 era (the bench's
bytes, bench.load_driver), posted with httpx rather than through the client: a caller must
see the HTTP status of every answer (a 5xx is counted apart from a tool error) and name each
call with its own X-Request-Id, which the audit row keeps. Callers are paced, so a scenario's
call count is bounded by its length.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.load_driver import TOOL_CALL, mcp_headers

# Longer than the control plane's TOOL_CALL_DEADLINE (25 s): a hung call is answered by the
# server's deadline, not cut off by the client.
CLIENT_TIMEOUT = httpx.Timeout(40.0, connect=5.0)
CALL_INTERVAL = 0.05  # seconds between the starts of one caller's calls, at the least


@dataclass(frozen=True)
class Call:
    """One request and what came back. `outcome` is `ok`, `tool_error` (a result with
    isError), `rpc_error` (a JSON-RPC error), `http_error` (a status other than 200) or
    `no_answer` (connection refused or reset, timeout)."""

    request_id: str
    started: float
    ended: float
    status: int | None
    outcome: str
    detail: str = ""

    @property
    def answered(self) -> bool:
        """A tool result came back: the pipeline ran the call, so an audit row is owed."""
        return self.outcome in ("ok", "tool_error")

    @property
    def failed(self) -> bool:
        return self.outcome != "ok"


def json_rpc_payload(answer: httpx.Response) -> dict[str, Any] | None:
    """The JSON-RPC message of a JSON or a one-event SSE answer; None when there is none."""
    text = answer.text
    if answer.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
        text = data[-1] if data else ""
    try:
        payload = json.loads(text)
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def classify(request_id: str, started: float, answer: httpx.Response) -> Call:
    ended = time.monotonic()
    payload = json_rpc_payload(answer)
    if answer.status_code != 200:
        message = ""
        if payload is not None and isinstance(payload.get("error"), dict):
            message = str(payload["error"].get("message", ""))
        detail = f"HTTP {answer.status_code} {message or answer.text[:80]}"
        return Call(request_id, started, ended, answer.status_code, "http_error", detail)
    if payload is None:
        return Call(request_id, started, ended, 200, "rpc_error", "not JSON-RPC")
    if "error" in payload:
        detail = str(payload["error"].get("message", payload["error"]))
        return Call(request_id, started, ended, 200, "rpc_error", detail)
    result = payload.get("result") or {}
    if result.get("isError"):
        content = result.get("content") or [{}]
        return Call(request_id, started, ended, 200, "tool_error", str(content[0].get("text", "")))
    return Call(request_id, started, ended, 200, "ok")


@dataclass
class Traffic:
    """The calls of one scenario, in the order they ended."""

    url: str
    key: str
    prefix: str
    calls: list[Call] = field(default_factory=list)
    _sequence: int = 0
    _success: asyncio.Event = field(default_factory=asyncio.Event)

    def next_request_id(self, kind: str = "c") -> str:
        self._sequence += 1
        return f"{self.prefix}-{kind}{self._sequence}"

    async def call(self, client: httpx.AsyncClient) -> Call:
        request_id = self.next_request_id()
        headers = dict(mcp_headers(self.key))
        headers["X-Request-Id"] = request_id
        started = time.monotonic()
        try:
            answer = await client.post(self.url, headers=headers, content=TOOL_CALL)
            call = classify(request_id, started, answer)
        except httpx.HTTPError as exc:
            detail = f"{type(exc).__name__} {exc}"[:120]
            call = Call(request_id, started, time.monotonic(), None, "no_answer", detail)
        self.calls.append(call)
        if not call.failed:
            self._success.set()
        return call

    async def caller(self, stop: asyncio.Event) -> None:
        """Call until `stop` is set; a call under way is finished (the client's timeout bounds
        it). Each caller has its own keep-alive connection, as separate clients would."""
        async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT) as client:
            while not stop.is_set():
                started = time.monotonic()
                await self.call(client)
                pause = CALL_INTERVAL - (time.monotonic() - started)
                if pause > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), pause)

    async def first_success_after(self, moment: float, *, within: float) -> float | None:
        """When the first successful call answered after `moment` did (monotonic), waiting
        up to `within` seconds for one; None if none did."""
        deadline = time.monotonic() + within
        while True:
            self._success.clear()
            found = self.success_after(moment)
            if found is not None or time.monotonic() >= deadline:
                return found
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._success.wait(), max(0.0, deadline - time.monotonic()))

    def success_after(self, moment: float) -> float | None:
        ends = [call.ended for call in self.calls if not call.failed and call.ended >= moment]
        return min(ends) if ends else None

    def failures(self) -> list[Call]:
        return [call for call in self.calls if call.failed]

    def error_kinds(self, most: int = 3) -> list[tuple[str, int]]:
        """The commonest failures, by outcome and the start of their message."""
        kinds = Counter(f"{call.outcome}: {call.detail[:90]}" for call in self.failures())
        return kinds.most_common(most)
