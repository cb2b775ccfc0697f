"""A small keep-alive HTTP/1.1 load generator, for when wrk is missing and for fixed counts.

Each of `--connections` clients sends one pre-encoded request, reads the whole response and
sends the next, on its own connection, until `--duration` seconds or `--requests` responses.
Request bytes are built once and responses are parsed only as far as framing needs, so the
client costs a few microseconds per call; `python -m bench.run` measures its ceiling against
an in-process null server and prints it next to the results, so a reader can see that the
generator was not the bottleneck.

Prints one line, `BENCH_JSON {...}`, with the same fields as bench/load.lua.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Tally:
    latencies_us: list[int] = field(default_factory=list)
    status_errors: int = 0
    read_errors: int = 0
    connect_errors: int = 0

    def summary(self, elapsed_s: float) -> dict[str, Any]:
        """The run's figures in the shape wrk's summary script prints (load_driver reads it)."""
        values = sorted(self.latencies_us)
        return {
            "requests": len(values),
            "duration_us": int(elapsed_s * 1e6),
            "connect_errors": self.connect_errors,
            "read_errors": self.read_errors,
            "write_errors": 0,
            "status_errors": self.status_errors,
            "timeouts": 0,
            "p50_us": percentile(values, 0.50),
            "p95_us": percentile(values, 0.95),
            "p99_us": percentile(values, 0.99),
            "max_us": values[-1] if values else 0,
            "mean_us": sum(values) / len(values) if values else 0.0,
        }


def build_request(
    url: str, method: str, headers: list[tuple[str, str]], body: bytes | None
) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return host, port, head + (body or b"")


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = -1
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        lowered = name.strip().lower()
        if lowered == b"content-length":
            length = int(value.strip())
        elif lowered == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length > 0:
        await reader.readexactly(length)
    return status


async def _client(
    host: str, port: int, request: bytes, budget: list[int], deadline: float, tally: Tally
) -> None:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        tally.connect_errors += 1
        return
    clock = time.perf_counter_ns
    try:
        while time.monotonic() < deadline and budget[0] != 0:
            budget[0] -= 1
            started = clock()
            writer.write(request)
            status = await _read_response(reader)
            tally.latencies_us.append((clock() - started) // 1000)
            if status >= 400:
                tally.status_errors += 1
    except (OSError, asyncio.IncompleteReadError, ValueError):
        tally.read_errors += 1
    finally:
        writer.close()


def percentile(sorted_values: list[int], share: float) -> int:
    if not sorted_values:
        return 0
    index = min(len(sorted_values) - 1, max(0, round(share * len(sorted_values)) - 1))
    return sorted_values[index]


async def run_load(
    url: str,
    *,
    method: str = "GET",
    headers: list[tuple[str, str]] | None = None,
    body: bytes | None = None,
    connections: int = 1,
    duration: float = 10.0,
    requests: int = -1,
) -> dict[str, float]:
    """Drive `url` and return the summary (latencies in microseconds)."""
    host, port, request = build_request(url, method, headers or [], body)
    tally = Tally()
    budget = [requests]
    started = time.perf_counter()
    deadline = time.monotonic() + duration
    await asyncio.gather(
        *(_client(host, port, request, budget, deadline, tally) for _ in range(connections))
    )
    elapsed = time.perf_counter() - started
    return tally.summary(elapsed)


def _event_loop_runner() -> asyncio.Runner:
    try:
        import uvloop

        return asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        return asyncio.Runner()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--method", default="GET")
    parser.add_argument("--header", "-H", action="append", default=[], metavar="NAME: VALUE")
    parser.add_argument("--body", default=None)
    parser.add_argument("--connections", "-c", type=int, default=1)
    parser.add_argument("--duration", "-d", type=float, default=10.0)
    parser.add_argument("--requests", "-n", type=int, default=-1, help="stop after N (-1: none)")
    args = parser.parse_args(argv)
    headers = [(n.strip(), v.strip()) for n, _, v in (h.partition(":") for h in args.header)]
    with _event_loop_runner() as runner:
        summary = runner.run(
            run_load(
                args.url,
                method=args.method,
                headers=headers,
                body=args.body.encode() if args.body is not None else None,
                connections=args.connections,
                duration=args.duration,
                requests=args.requests,
            )
        )
    print("BENCH_JSON " + json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
