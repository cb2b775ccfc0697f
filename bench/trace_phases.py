"""Where a control-plane tool call spends its time, step by step (`python -m bench.run --trace`).

Serves the control plane in this process with uvicorn (one worker, the bench's serving
settings) and wraps, without changing their code, the steps of the pipeline: every
`sync_to_async` hop (time waiting for the thread vs. time running in it), the key check, the
rate-limit round trip, the Qontak request, the audit batch written after the answer, the
live-feed publish and the whole ASGI request (which ends after the audit write, so it is
longer than what the client waits). A load generator given on the command line drives it;
the table printed at the end is per call, in milliseconds.

Run through bench/run.py, which starts the stack and passes the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")

_spans: dict[str, list[float]] = defaultdict(list)


def _record(name: str, started: float) -> None:
    _spans[name].append((time.perf_counter() - started) * 1000)


def _timed_async(name: str, func: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await func(*args, **kwargs)
        finally:
            _record(name, started)

    return wrapper


def _timed_hops(original: Callable[..., Any]) -> Callable[..., Any]:
    """A sync_to_async that records, per function, the hop and the work in the thread."""

    def factory(func: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
        name = getattr(func, "__name__", repr(func))

        def in_thread(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                _record(f"  {name}: in thread", started)

        hop = original(in_thread)

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await hop(*args, **kwargs)
            finally:
                _record(f"{name} (hop total)", started)

        return wrapper

    return factory


def instrument() -> Any:
    from asgiref.sync import sync_to_async

    from controlplane import asgi, live, policies
    from mcpserver import audit_writer, pipeline, server

    hops = _timed_hops(sync_to_async)
    patches = [
        (pipeline, "sync_to_async", hops),
        (server, "sync_to_async", hops),
        (audit_writer, "sync_to_async", hops),
        (server, "_authenticated_key", None),
        (policies, "admit_call", None),
        (pipeline, "qontak_request", None),
        (pipeline, "run_tool_call", None),
        (audit_writer, "_write_with_retries", None),
        (live, "publish_tool_call", None),
    ]
    for module, name, replacement in patches:
        original = getattr(module, name)
        setattr(module, name, replacement or _timed_async(name, original))
    from qontak import client as qontak_client

    qontak_client._http = _timed_client(
        qontak_client._http, "request", "  upstream request (httpx)"
    )
    return _timed_app(asgi.application)


def instrument_bare() -> Any:
    """The bare server (b) with its one upstream request timed, for comparison."""
    from bench import bare_server

    bare_server._http = _timed_client(bare_server._http, "get", "upstream GET")
    return _timed_app(bare_server.application)


def _timed_client(factory: Callable[[], Any], method: str, label: str) -> Callable[[], Any]:
    """Wrap a pooled-client factory so the client's `method` is timed under `label`, once."""

    def timed_factory() -> Any:
        client = factory()
        if not getattr(client, "_bench_timed", False):
            setattr(client, method, _timed_async(label, getattr(client, method)))
            client._bench_timed = True
        return client

    return timed_factory


def _timed_app(app: Any) -> Any:
    """The ASGI app with each HTTP request's server-side time recorded."""

    async def application(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await app(scope, receive, send)
        started = time.perf_counter()
        try:
            await app(scope, receive, send)
        finally:
            _record("ASGI request (server side)", started)

    return application


def report(calls: int) -> dict[str, dict[str, float]]:
    table = {}
    for name, values in sorted(_spans.items(), key=lambda item: -sum(item[1])):
        values.sort()
        table[name] = {
            "count_per_call": len(values) / max(calls, 1),
            "ms_per_call": sum(values) / max(calls, 1),
            "p50_ms": values[len(values) // 2],
            "p99_ms": values[min(len(values) - 1, int(len(values) * 0.99))],
        }
    return table


async def serve_and_drive(port: int, load: list[str], bare: bool) -> int:
    import uvicorn

    app = instrument_bare() if bare else instrument()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
        await asyncio.sleep(0.05)
    process = await asyncio.create_subprocess_exec(*load, stdout=asyncio.subprocess.PIPE)
    output, _ = await process.communicate()
    server.should_exit = True
    await task
    calls = 0
    for line in output.decode().splitlines():
        if line.startswith("BENCH_JSON "):
            calls = int(json.loads(line[len("BENCH_JSON ") :])["requests"])
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.trace_phases", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bare", action="store_true", help="trace (b) instead of (c)")
    parser.add_argument("load", nargs=argparse.REMAINDER, help="the load generator's argv")
    args = parser.parse_args()
    import uvloop

    _spans.clear()
    calls = uvloop.run(serve_and_drive(args.port, args.load, args.bare))
    # The warm-up calls were measured too; a second pass would need a second server, so the
    # driver runs long enough that the cold first calls do not matter.
    print("BENCH_TRACE " + json.dumps({"calls": calls, "phases": report(calls)}), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
