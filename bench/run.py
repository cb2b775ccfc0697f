"""`make bench`: what control costs a tool call, measured over real HTTP.

Three targets in one run, each driven by wrk (or bench/loadgen.py when wrk cannot be
installed) at concurrency 1 and 16:

  (a) the Qontak simulator directly, GET /api/v3.1/contacts/1;
  (b) bench/bare_server.py: the same MCP SDK and serving command, no control at all;
  (c) the control plane: API key, tool policy, rate limit, cached token, audit row.

(c) against (b) is the price of control. The run also counts Vault reads per 1,000 warm
calls (OpenBao's audit log), database round trips per call (a wire counter in front of
PostgreSQL, see bench/pgwire.py), worker RSS after 1,000 and 10,000+ calls, 1 -> 2 worker
scaling, and shows the multi-worker latency floor of `--loop asyncio` next to the serving
command the project documents. Results: a table on stdout and bench/results/<time>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.pgwire import PostgresWireCounter
from bench.stack import (
    PYTHON,
    ROOT,
    ForeignLoad,
    Server,
    Stack,
    audit_log_size,
    redis_counters,
    serve,
    spawn,
    start_stack,
    vault_reads,
)
from devtools.devstack import ManagedProcess, free_port, wait_until_ready

RESULTS = ROOT / "bench" / "results"
BARE_APP = "bench.bare_server:application"
CONTROL_APP = "controlplane.asgi:application"
LUA = ROOT / "bench" / "load.lua"

# The serving command measured for (b) and (c): the README's `uvicorn ... --workers N` with
# the event loop and HTTP parser named, so a missing uvloop fails at start instead of silently
# falling back to asyncio (which has the ~40 ms multi-worker floor shown in the asyncio row).
SERVING = ["--loop", "uvloop", "--http", "httptools", "--lifespan", "on"]
ASYNCIO_SERVING = ["--loop", "asyncio", "--http", "httptools", "--lifespan", "on"]

PROTOCOL_VERSION = "2026-07-28"
TOOL = "get_contact"
META = {
    "io.modelcontextprotocol/protocolVersion": PROTOCOL_VERSION,
    "io.modelcontextprotocol/clientInfo": {"name": "mcp", "version": "0.1.0"},
    "io.modelcontextprotocol/clientCapabilities": {},
}
# What the official client (mcp 2.3, 2026-07-28 era) sends for one tools/call.
TOOL_CALL = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": TOOL, "arguments": {"id": 1}, "_meta": META},
    },
    separators=(",", ":"),
)


def mcp_headers(key: str | None) -> list[tuple[str, str]]:
    headers = [
        ("Content-Type", "application/json"),
        ("Accept", "application/json, text/event-stream"),
        ("MCP-Protocol-Version", PROTOCOL_VERSION),
        ("Mcp-Method", "tools/call"),
        ("Mcp-Name", TOOL),
    ]
    if key:
        headers.append(("Authorization", f"Bearer {key}"))
    return headers


@dataclass(frozen=True)
class Request:
    url: str
    method: str
    headers: list[tuple[str, str]]
    body: str | None = None


@dataclass
class Row:
    target: str
    serving: str
    workers: int
    concurrency: int
    calls_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    requests: int
    errors: int
    foreign_cpu_pct: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class LoadDriver:
    """wrk when available (installed with apt-get when root), else bench/loadgen.py."""

    def __init__(self, prefer: str) -> None:
        self.kind = "python"
        if prefer in ("auto", "wrk") and self._ensure_wrk():
            self.kind = "wrk"
        elif prefer == "wrk":
            raise SystemExit("wrk is not installed and cannot be installed (not root?)")

    @staticmethod
    def _ensure_wrk() -> bool:
        if shutil.which("wrk"):
            return True
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            return False
        print("bench: installing wrk with apt-get", flush=True)
        if _apt("install", "-y", "-q", "wrk") != 0:
            _apt("update", "-q")
            _apt("install", "-y", "-q", "wrk")
        return shutil.which("wrk") is not None

    def command(
        self, request: Request, connections: int, seconds: float
    ) -> tuple[list[str], dict[str, str]]:
        """The generator's argv and environment for a timed run."""
        if self.kind == "wrk":
            argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
            argv += ["--timeout", "10s", "-s", str(LUA)]
            for name, value in request.headers:
                argv += ["-H", f"{name}: {value}"]
            env = {**os.environ, "BENCH_METHOD": request.method, "BENCH_BODY": request.body or ""}
            return [*argv, request.url], env
        return self._python_argv(request, connections, ["--duration", str(seconds)]), dict(
            os.environ
        )

    def timed(self, request: Request, connections: int, seconds: float) -> dict[str, Any]:
        return _summary(*self.command(request, connections, seconds))

    def counted(
        self, request: Request, connections: int, calls: int, limit_s: float = 60
    ) -> dict[str, Any]:
        """`calls` requests, or fewer if `limit_s` runs out (wrk only runs for a duration)."""
        return self._python(
            request, connections, ["--requests", str(calls), "--duration", str(limit_s)]
        )

    @staticmethod
    def _python_argv(request: Request, connections: int, limit: list[str]) -> list[str]:
        argv = [PYTHON, "-m", "bench.loadgen", request.url, "--method", request.method]
        argv += ["-c", str(connections), *limit]
        for name, value in request.headers:
            argv += ["-H", f"{name}: {value}"]
        if request.body is not None:
            argv += ["--body", request.body]
        return argv

    def _python(self, request: Request, connections: int, limit: list[str]) -> dict[str, Any]:
        return _summary(self._python_argv(request, connections, limit), dict(os.environ))


def _apt(*args: str) -> int:
    return subprocess.run(  # noqa: S603 - fixed arguments
        ["apt-get", *args],  # noqa: S607 - apt-get from PATH, as an operator would
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    ).returncode


def _summary(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    completed = subprocess.run(  # noqa: S603 - argv is built by the bench
        argv, capture_output=True, text=True, env=env, cwd=ROOT, check=False, timeout=900
    )
    for line in completed.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            summary: dict[str, Any] = json.loads(line[len("BENCH_JSON ") :])
            return summary
    raise RuntimeError(
        f"load generator failed: {completed.stdout[-500:]} {completed.stderr[-500:]}"
    )


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def merge_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Rounds of one target: counts add up; calls/s and latency percentiles are the rounds'
    median. Each round opens new connections, and how the workers' accept loops share them
    out varies from round to round (see `connections_per_worker`): one round where a worker
    got 15 of 16 connections must not decide the row."""
    merged: dict[str, Any] = {}
    for name in rounds[0]:
        values = [r[name] for r in rounds]
        if name.endswith("_us") and name != "duration_us":
            merged[name] = _median(values)
        elif name == "foreign_cpu_pct":
            merged[name] = sum(values) / len(values)
        elif isinstance(values[0], (int, float)):
            merged[name] = sum(values)
    merged["calls_per_s"] = _median([r["requests"] / (r["duration_us"] / 1e6) for r in rounds])
    return merged


def row_from(
    summary: dict[str, Any], target: str, serving: str, workers: int, concurrency: int
) -> Row:
    errors = sum(
        int(summary[k])
        for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    return Row(
        foreign_cpu_pct=float(summary.get("foreign_cpu_pct", 0.0)),
        target=target,
        serving=serving,
        workers=workers,
        concurrency=concurrency,
        calls_per_s=summary.get(
            "calls_per_s", summary["requests"] / (summary["duration_us"] / 1e6)
        ),
        p50_ms=summary["p50_us"] / 1000,
        p95_ms=summary["p95_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
        requests=int(summary["requests"]),
        errors=errors,
    )


class Bench:
    def __init__(self, args: argparse.Namespace, stack: Stack, driver: LoadDriver) -> None:
        self.args = args
        self.stack = stack
        self.driver = driver
        self.rows: list[Row] = []
        self.facts: dict[str, Any] = {}
        self.foreign = ForeignLoad(stack)

    def measure(
        self, request: Request, target: str, serving: str, workers: int, concurrency: int
    ) -> Row:
        self.driver.timed(request, concurrency, self.args.warmup)
        meter = self.foreign.start()
        summary = self.driver.timed(request, concurrency, self.args.duration)
        summary["foreign_cpu_pct"] = self.foreign.stop(meter)
        row = row_from(summary, target, serving, workers, concurrency)
        self.report_row(row)
        return row

    def report_row(self, row: Row) -> None:
        self.rows.append(row)
        target, serving, workers, concurrency = (
            row.target,
            row.serving,
            row.workers,
            row.concurrency,
        )
        print(
            f"  {target:<28} {serving:<16} w={workers} c={concurrency:<3} "
            f"{row.calls_per_s:8.0f}/s  p50 {row.p50_ms:6.2f}  p95 {row.p95_ms:6.2f}  "
            f"p99 {row.p99_ms:6.2f} ms  errors {row.errors}",
            flush=True,
        )

    def serve_target(self, name: str, app: str, workers: int, serving: list[str]) -> Server:
        if app.startswith("controlplane"):
            env, probe = self.stack.control_plane_env(), "/healthz"
        else:
            env, probe = self.stack.bare_env(), "/"
        server = serve(
            name,
            app,
            workers=workers,
            serving=serving,
            env=env,
            log_dir=self.stack.log_dir,
            probe=probe,
        )
        self.stack.processes.append(server)
        return server

    def stop(self, server: Server) -> None:
        server.stop()
        self.stack.processes.remove(server)

    def tool_request(self, server: Server, with_key: bool) -> Request:
        key = self.stack.api_key if with_key else None
        return Request(server.url + "/mcp", "POST", mcp_headers(key), TOOL_CALL)

    def check_tool_call(self, request: Request) -> None:
        answer = httpx.post(
            request.url, headers=dict(request.headers), content=request.body, timeout=30
        )
        answer.raise_for_status()
        result = answer.json().get("result") or {}
        if result.get("isError") or "John" not in json.dumps(result):
            raise RuntimeError(f"tool call did not succeed: {answer.text[:500]}")

    # Phases

    def loadgen_ceiling(self) -> None:
        """The generator against a server that does nothing: its own ceiling, for reference."""
        port = free_port()
        argv = [PYTHON, "-m", "bench.nullserver", str(port)]
        process = spawn("null-server", argv, self.stack.log_dir, dict(os.environ))
        managed = ManagedProcess(
            "null-server",
            f"http://127.0.0.1:{port}",
            process,
            self.stack.log_dir / "null-server.log",
        )
        try:
            wait_until_ready(managed, managed.url + "/")
            request = Request(managed.url + "/", "POST", mcp_headers("x"), TOOL_CALL)
            for concurrency in (1, 16):
                summary = self.driver.timed(request, concurrency, 2)
                row = row_from(summary, "load generator ceiling", "null server", 1, concurrency)
                self.facts[f"loadgen_ceiling_c{concurrency}"] = asdict(row)
                print(
                    f"  load generator ({self.driver.kind}) vs null server c={concurrency}: "
                    f"{row.calls_per_s:.0f}/s p50 {row.p50_ms:.3f} ms",
                    flush=True,
                )
        finally:
            managed.stop()

    def simulator_direct(self) -> None:
        url = f"{self.stack.simulator.url}/api/v3.1/contacts/1"
        headers = [("Authorization", f"Bearer {self.stack.access_token}")]
        request = Request(url, "GET", headers)
        for concurrency in (1, 16):
            self.measure(request, "(a) simulator direct", "uvicorn (1 proc)", 1, concurrency)

    def bare_floor(self, workers: int) -> None:
        """(b) served with `--loop asyncio`: the multi-worker latency floor, for reference."""
        server = self.serve_target(f"bare-asyncio-{workers}", BARE_APP, workers, ASYNCIO_SERVING)
        try:
            request = self.tool_request(server, with_key=False)
            self.check_tool_call(request)
            self.measure(request, "(b) bare MCP server", "uvicorn asyncio", workers, 1)
        finally:
            self.stop(server)

    def compare(self) -> None:
        """(b) and (c) with N workers, and (c) with one worker, served side by side and
        measured in alternating rounds, so background load on the machine hits them alike."""
        stack = self.stack
        workers = self.args.workers
        before_db = stack.database.server_counters()
        bare = self.serve_target(f"bare-{workers}", BARE_APP, workers, SERVING)
        control = self.serve_target(f"controlplane-{workers}", CONTROL_APP, workers, SERVING)
        targets = [("(b) bare MCP server", bare, False), ("(c) control plane", control, True)]
        if workers > 1 and not self.args.quick:
            single = self.serve_target("controlplane-1", CONTROL_APP, 1, SERVING)
            targets.append(("(c) control plane", single, True))
        requests = {server.name: self.tool_request(server, key) for _, server, key in targets}
        calls = dict.fromkeys(requests, 0)
        try:
            for name, request in requests.items():
                self.check_tool_call(request)
                calls[name] += 1
            warm = self.driver.counted(requests[control.name], 16, 1000 - 1)
            calls[control.name] += int(warm["requests"])
            self.facts["rss_kib_after_1000_calls"] = control.worker_rss_kib()
            offset = audit_log_size(stack.audit_log)
            redis_before = redis_counters(stack.redis_url)
            audited_before = sum(stack.database.tool_call_outcomes().values())
            per_round = self.args.duration / self.args.rounds
            for concurrency in (1, 16):
                for _, server, _ in targets:
                    self.driver.timed(requests[server.name], concurrency, self.args.warmup)
                rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in requests}
                for _ in range(self.args.rounds):
                    for _, server, _ in targets:
                        meter = self.foreign.start()
                        split: list[list[int]] = []
                        census = threading.Timer(
                            per_round / 2,
                            lambda server=server, split=split: split.append(
                                sorted(server.connections_per_worker().values(), reverse=True)
                            ),
                        )
                        census.start()
                        summary = self.driver.timed(requests[server.name], concurrency, per_round)
                        census.join()
                        summary["foreign_cpu_pct"] = self.foreign.stop(meter)
                        summary["connections_per_worker"] = split[0] if split else []
                        rounds[server.name].append(summary)
                for target, server, _ in targets:
                    row = row_from(
                        merge_rounds(rounds[server.name]),
                        target,
                        "uvicorn uvloop",
                        server.worker_count,
                        concurrency,
                    )
                    row.extra["rounds"] = rounds[server.name]
                    calls[server.name] += row.requests
                    self.report_row(row)
            audited = sum(stack.database.tool_call_outcomes().values()) - audited_before
            reads, _ = vault_reads(stack.audit_log, stack.secret_path, offset)
            redis_after = redis_counters(stack.redis_url)
            self.facts["warm_calls"] = audited
            self.facts["vault_reads_warm"] = reads
            self.facts["vault_reads_per_1000_warm_calls"] = reads * 1000 / max(audited, 1)
            if redis_before is not None and redis_after is not None:
                self.facts["redis_per_call"] = {
                    name: (redis_after[name] - redis_before[name]) / max(audited, 1)
                    for name in redis_before
                }
            if self.args.profile:
                self.profile(control, requests[control.name])
            if calls[control.name] < 10_000:
                more = self.driver.counted(requests[control.name], 16, 10_000 - calls[control.name])
                calls[control.name] += int(more["requests"])
            self.facts["audit_outcomes"] = stack.database.tool_call_outcomes()
            self.facts["calls_before_final_rss"] = calls[control.name]
            self.facts["rss_kib_after_final_calls"] = control.worker_rss_kib()
        finally:
            for _, server, _ in targets:
                self.stop(server)
        after_db = stack.database.server_counters()
        if before_db is not None and after_db is not None:
            audited_total = sum(stack.database.tool_call_outcomes().values())
            self.facts["pg_stat_database_per_call"] = {
                name: (after_db[name] - before_db[name] - 1) / max(audited_total, 1)
                for name in before_db
            }

    def profile(self, server: Server, request: Request) -> None:
        """py-spy on every worker while the generator holds concurrency 16."""
        py_spy = Path(PYTHON).parent / "py-spy"
        if not py_spy.exists():
            print("bench: installing py-spy into the virtualenv", flush=True)
            subprocess.run(  # noqa: S603 - fixed arguments
                [PYTHON, "-m", "pip", "install", "--quiet", "py-spy"], check=False
            )
        if not py_spy.exists():
            print("  (py-spy could not be installed: no profile)", flush=True)
            return
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        seconds = max(5, round(self.args.duration))
        spies = []
        for index, pid in enumerate(server.workers()):
            for fmt, suffix in (("speedscope", "speedscope.json"), ("raw", "folded.txt")):
                out = RESULTS / f"profile-{stamp}-w{index}.{suffix}"
                argv = [str(py_spy), "record", "--pid", str(pid), "--duration", str(seconds)]
                argv += ["--rate", "200", "--format", fmt, "--output", str(out), "--nonblocking"]
                spies.append(
                    spawn(f"py-spy-{index}-{fmt}", argv, self.stack.log_dir, dict(os.environ))
                )
        time.sleep(1)
        self.driver.timed(request, 16, seconds + 1)
        for spy in spies:
            spy.wait(timeout=60)
        print(f"  profiles: bench/results/profile-{stamp}-w*.*", flush=True)

    def round_trips(self) -> None:
        """Database round trips per call, counted on the wire (PostgreSQL only)."""
        stack = self.stack
        if stack.database.vendor != "postgresql":
            self.facts["db_round_trips_per_call"] = None
            return
        counter = PostgresWireCounter(*stack.database.address())
        port = counter.start()
        env = stack.control_plane_env(stack.database.url_through("127.0.0.1", port))
        server = serve(
            "controlplane-wire",
            CONTROL_APP,
            workers=self.args.workers,
            serving=SERVING,
            env=env,
            log_dir=stack.log_dir,
            probe="/healthz",
        )
        stack.processes.append(server)
        try:
            request = self.tool_request(server, with_key=True)
            self.driver.counted(request, 4, 500)
            before = counter.snapshot()
            calls = 2000
            summary = self.driver.counted(request, 4, calls)
            after = counter.snapshot()
        finally:
            self.stop(server)
            counter.stop()
        self.facts["db_wire_counting_calls"] = summary["requests"]
        self.facts["db_round_trips_per_call"] = (after.round_trips - before.round_trips) / calls
        self.facts["db_connections_per_call"] = (after.connections - before.connections) / calls
        self.facts["db_queries_per_call"] = (
            after.queries + after.syncs - before.queries - before.syncs
        ) / calls


def _cell(value: float | None, fmt: str = "{:.2f}") -> str:
    return "n/a" if value is None else fmt.format(value)


def _find(rows: list[Row], target: str, serving: str, workers: int, conc: int) -> Row | None:
    for row in rows:
        if (row.target, row.serving, row.workers, row.concurrency) == (
            target,
            serving,
            workers,
            conc,
        ):
            return row
    return None


def verdicts(rows: list[Row], facts: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    bare = "(b) bare MCP server"
    cp = "(c) control plane"
    b16, c16 = _find(rows, bare, "uvicorn uvloop", 2, 16), _find(rows, cp, "uvicorn uvloop", 2, 16)
    b1, c1 = _find(rows, bare, "uvicorn uvloop", 2, 1), _find(rows, cp, "uvicorn uvloop", 2, 1)
    one16 = _find(rows, cp, "uvicorn uvloop", 1, 16)
    floor = _find(rows, bare, "uvicorn asyncio", 2, 1)
    checks: list[tuple[str, str, bool | None]] = []
    if b16 and c16:
        share = c16.calls_per_s / b16.calls_per_s
        checks.append(("(c) >= 70% of (b) calls/s at c=16", f"{share:.0%}", share >= 0.70))
    if b1 and c1:
        d50, d99 = c1.p50_ms - b1.p50_ms, c1.p99_ms - b1.p99_ms
        checks.append(("p50(c) - p50(b) <= 1 ms at c=1", f"{d50:+.2f} ms", d50 <= 1.0))
        checks.append(("p99(c) - p99(b) <= 5 ms at c=1", f"{d99:+.2f} ms", d99 <= 5.0))
    vault = facts.get("vault_reads_per_1000_warm_calls")
    if vault is not None:
        checks.append(("Vault reads per 1,000 warm calls = 0", f"{vault:.2f}", vault == 0))
    trips = facts.get("db_round_trips_per_call")
    checks.append(
        ("DB round trips per call <= 3", _cell(trips), None if trips is None else trips <= 3)
    )
    if one16 and c16:
        scale = c16.calls_per_s / one16.calls_per_s
        detail = f"{scale:.2f}x (p99 {one16.p99_ms:.1f} -> {c16.p99_ms:.1f} ms)"
        checks.append(("1 -> 2 workers >= 1.7x calls/s at c=16", detail, scale >= 1.7))
    first, last = facts.get("rss_kib_after_1000_calls"), facts.get("rss_kib_after_final_calls")
    if first and last:
        growth = max(last[pid] / first[pid] - 1 for pid in first if pid in last)
        calls = facts.get("calls_before_final_rss", 0)
        checks.append(
            (f"RSS growth 1,000 -> {calls:,} calls <= 10%", f"{growth:+.1%} worst", growth <= 0.10)
        )
    if b1:
        detail = f"p50 {b1.p50_ms:.2f} ms" + (f" (asyncio: {floor.p50_ms:.1f} ms)" if floor else "")
        checks.append(("no multi-worker floor: (b) w=2 c=1 p50 < 10 ms", detail, b1.p50_ms < 10))
    outcomes = facts.get("audit_outcomes")
    if outcomes:
        ok = outcomes.get("ok", 0) == sum(outcomes.values())
        checks.append(("every audited call succeeded (none limited)", str(outcomes), ok))
    return checks


def render(rows: list[Row], facts: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [
        f"Qontak MCP control plane bench  {meta['started']}  ({meta['machine']})",
        f"stack: database {meta['database']}, cache {meta['cache']}, OpenBao, simulator; "
        f"load generator {meta['loadgen']}; {meta['duration']:.0f} s per row; "
        f"1-min load average {meta['load_average_1m'][0]} at start, "
        f"{meta['load_average_1m'][1]} at end",
        f"serving (b) and (c): uvicorn APP --workers N {' '.join(SERVING)}",
        "",
        "| target | serving | workers | conc | calls/s | p50 ms | p95 ms | p99 ms | errors "
        "| other load |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.target} | {row.serving} | {row.workers} | {row.concurrency} | "
            f"{row.calls_per_s:,.0f} | {row.p50_ms:.2f} | {row.p95_ms:.2f} | {row.p99_ms:.2f} | "
            f"{row.errors} | {row.foreign_cpu_pct:.0f}% |"
        )
    lines += ["", "| counter | value |", "|---|---:|"]
    for row in rows:
        splits = [r.get("connections_per_worker") for r in row.extra.get("rounds", [])]
        if row.workers > 1 and row.concurrency > 1 and all(splits):
            lines.append(
                f"| {row.target}, w={row.workers} c={row.concurrency}: connections per worker, "
                f"each round | {', '.join('/'.join(map(str, s)) for s in splits)} |"
            )
    lines.append(
        "| Vault reads per 1,000 warm calls | "
        f"{_cell(facts.get('vault_reads_per_1000_warm_calls'))} "
        f"({facts.get('vault_reads_warm', 'n/a')} in {facts.get('warm_calls', 0):,} calls) |"
    )
    lines.append(
        f"| DB round trips per call (wire) | {_cell(facts.get('db_round_trips_per_call'))} |"
    )
    lines.append(
        f"| DB connections opened per call | {_cell(facts.get('db_connections_per_call'))} |"
    )
    pg = facts.get("pg_stat_database_per_call")
    if pg:
        lines.append(
            f"| pg_stat_database per call: transactions / sessions | "
            f"{pg['transactions']:.2f} / {pg['sessions']:.2f} |"
        )
    redis_per_call = facts.get("redis_per_call")
    if redis_per_call:
        lines.append(
            "| Redis per call (server-wide): commands / connections opened | "
            f"{redis_per_call['commands']:.2f} / {redis_per_call['connections']:.2f} |"
        )
    first, last = facts.get("rss_kib_after_1000_calls"), facts.get("rss_kib_after_final_calls")
    if first and last:
        pairs = ", ".join(f"{first[p] / 1024:.1f} -> {last.get(p, 0) / 1024:.1f}" for p in first)
        lines.append(
            f"| worker RSS MiB after 1,000 -> {facts.get('calls_before_final_rss', 0):,} calls | "
            f"{pairs} |"
        )
    lines += ["", "| target | measured | met |", "|---|---:|:---:|"]
    for name, value, met in verdicts(rows, facts):
        mark = "n/a" if met is None else ("yes" if met else "NO")
        lines.append(f"| {name} | {value} | {mark} |")
    return "\n".join(lines)


def trace(bench: Bench, concurrency: int) -> None:
    """Time each step of (b) then (c), each in one instrumented in-process worker."""
    for bare in (True, False):
        _trace_one(bench, concurrency, bare)


def _trace_one(bench: Bench, concurrency: int, bare: bool) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    request = Request(url, "POST", mcp_headers(bench.stack.api_key), TOOL_CALL)
    load, load_env = bench.driver.command(request, concurrency, bench.args.duration)
    env = bench.stack.control_plane_env()
    for extra in (bench.stack.bare_env(), load_env):
        env.update({k: v for k, v in extra.items() if k.startswith("BENCH_")})
    flags = ["--bare"] if bare else []
    completed = subprocess.run(  # noqa: S603 - argv is built by the bench
        [PYTHON, "-m", "bench.trace_phases", "--port", str(port), *flags, *load],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
        timeout=600,
    )
    for line in completed.stdout.splitlines():
        if line.startswith("BENCH_TRACE "):
            result = json.loads(line[len("BENCH_TRACE ") :])
            what = "(b) bare MCP server" if bare else "(c) control plane"
            print(f"\n{what}: {result['calls']} calls at concurrency {concurrency}, one worker")
            print(f"{'step':<44} {'n/call':>7} {'ms/call':>8} {'p50 ms':>8} {'p99 ms':>8}")
            for name, row in result["phases"].items():
                print(
                    f"{name:<44} {row['count_per_call']:7.2f} {row['ms_per_call']:8.3f} "
                    f"{row['p50_ms']:8.3f} {row['p99_ms']:8.3f}"
                )
            return
    print(completed.stdout[-3000:], completed.stderr[-3000:])


def hold(bench: Bench, seconds: float) -> None:
    """Serve (b) and (c) for `seconds` so a person can drive and profile them by hand."""
    workers = bench.args.workers
    bare = bench.serve_target("bare-hold", BARE_APP, workers, SERVING)
    control = bench.serve_target("controlplane-hold", CONTROL_APP, workers, SERVING)
    info = {
        "bare_url": bare.url + "/mcp",
        "bare_workers": bare.workers(),
        "control_plane_url": control.url + "/mcp",
        "control_plane_workers": control.workers(),
        "api_key": bench.stack.api_key,
        "simulator_url": bench.stack.simulator.url,
        "access_token": bench.stack.access_token,
        "database_url": bench.stack.database.url,
        "logs": str(bench.stack.log_dir),
    }
    print("BENCH_HOLD " + json.dumps(info), flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        time.sleep(seconds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per measured row")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per row")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before each row")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--profile", action="store_true", help="py-spy the (c) workers")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="only (b) and (c) at the chosen worker count, the counters and memory",
    )
    parser.add_argument(
        "--trace",
        type=int,
        default=0,
        metavar="CONCURRENCY",
        help="only time the pipeline's steps in one in-process worker at this concurrency",
    )
    parser.add_argument(
        "--hold",
        type=float,
        default=0,
        metavar="SECONDS",
        help="only start the stack, (b) and (c), print how to reach them and wait (profiling)",
    )
    args = parser.parse_args(argv)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
    # SIGTERM unwinds like Ctrl-C, so the servers, OpenBao and the database are cleaned up.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))
    load_before = os.getloadavg()[0]
    database_url = os.environ.get("DATABASE_URL", "")
    redis_url = os.environ.get("REDIS_URL", "")
    driver = LoadDriver(args.loadgen)
    started = datetime.now(UTC)
    log_dir = Path(tempfile.mkdtemp(prefix="qmcp-bench-"))
    print(f"bench: logs in {log_dir}", flush=True)
    stack = start_stack(log_dir, database_url, redis_url)
    bench = Bench(args, stack, driver)
    workers = args.workers
    try:
        stack.seed()
        if args.hold:
            hold(bench, args.hold)
            return
        if args.trace:
            trace(bench, args.trace)
            return
        if not args.quick:
            bench.loadgen_ceiling()
            bench.simulator_direct()
        if not args.quick and workers > 1:
            bench.bare_floor(workers)
        bench.compare()
        bench.round_trips()
    finally:
        stack.close()
    meta = {
        "started": started.isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, {platform.python_implementation()} "
        f"{platform.python_version()}",
        "database": stack.database.vendor,
        "cache": "redis" if redis_url else "locmem",
        "loadgen": driver.kind,
        "duration": args.duration,
        "serving": ["uvicorn", "APP", "--workers", "N", *SERVING],
        "elapsed_s": round((datetime.now(UTC) - started).total_seconds(), 1),
        "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    table = render(bench.rows, bench.facts, meta)
    print("\n" + table, flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"bench-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(
        json.dumps(
            {
                "meta": meta,
                "rows": [asdict(row) for row in bench.rows],
                "facts": bench.facts,
                "targets": [
                    {"target": n, "measured": v, "met": m}
                    for n, v, m in verdicts(bench.rows, bench.facts)
                ],
                "table": table,
            },
            indent=2,
            default=str,
        )
        + "\n"
    )
    (RESULTS / "latest.md").write_text(table + "\n")
    print(f"\nbench: wrote {out.relative_to(ROOT)} and bench/results/latest.md", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
