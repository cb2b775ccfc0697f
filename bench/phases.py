"""The phases of `make bench`: each one serves targets, drives them and records rows and facts.

`Bench` holds what a run has measured so far: `rows` for the latency table and `facts` for
the counters (Vault reads, database round trips, Redis traffic, worker memory). Every server a
phase starts is added to `Stack.processes`, so an interrupted run still stops it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.counters import ForeignLoad, audit_log_size, redis_counters, vault_reads
from bench.load_driver import TOOL_CALL, LoadDriver, Request, mcp_headers
from bench.oauth import mint_access_token
from bench.pgwire import PostgresWireCounter
from bench.report import OAUTH_TARGET, RESULTS
from bench.rows import Row, merge_rounds, row_from
from bench.stack import (
    ASYNCIO_SERVING,
    BARE_APP,
    CONTROL_APP,
    PYTHON,
    SERVING,
    Server,
    Stack,
    serve,
    spawn,
)
from devtools.devstack import ManagedProcess, free_port, wait_until_ready

# Waves of concurrent fresh-connection calls that warm each worker before anything is measured.
WARM_WAVES = 5
# Times a concurrency-16 round is run again when one worker got every connection.
ONE_WORKER_RETRIES = 2


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

    def tool_request(self, server: Server, credential: str | bool) -> Request:
        """`credential`: True or "key" for the API key, "oauth" for a person's OAuth token
        (minted on this server), False for none."""
        if credential == "oauth":
            bearer: str | None = mint_access_token(
                server.url, self.stack.person, self.stack.person_password
            )
        else:
            bearer = self.stack.api_key if credential else None
        return Request(server.url + "/mcp", "POST", mcp_headers(bearer), TOOL_CALL)

    def check_tool_call(self, request: Request) -> None:
        answer = httpx.post(
            request.url, headers=dict(request.headers), content=request.body, timeout=30
        )
        answer.raise_for_status()
        result = answer.json().get("result") or {}
        if result.get("isError") or "John" not in json.dumps(result):
            raise RuntimeError(f"tool call did not succeed: {answer.text[:500]}")

    def measured_round(
        self, request: Request, server: Server, concurrency: int, seconds: float
    ) -> dict[str, Any]:
        """One round, with how its connections were shared between the workers. A round in
        which one worker of several got every connection measured one worker, not the
        server: it is run again, up to ONE_WORKER_RETRIES times (every attempt is kept)."""
        attempts: list[dict[str, Any]] = []
        for _ in range(1 + ONE_WORKER_RETRIES):
            meter = self.foreign.start()
            split: list[list[int]] = []
            census = threading.Timer(
                seconds / 2,
                lambda split=split: split.append(
                    sorted(server.connections_per_worker().values(), reverse=True)
                ),
            )
            census.start()
            summary = self.driver.timed(request, concurrency, seconds)
            census.join()
            summary["foreign_cpu_pct"] = self.foreign.stop(meter)
            summary["connections_per_worker"] = split[0] if split else []
            attempts.append(summary)
            shares = summary["connections_per_worker"]
            if concurrency == 1 or server.worker_count == 1 or (shares and min(shares) > 0):
                break
        attempts[-1]["one_worker_attempts"] = attempts[:-1]
        return attempts[-1]

    def warm_every_worker(self, request: Request, server: Server) -> int:
        """Calls on fresh connections, many at once, until every worker has served some, so
        no worker's first (cold) call lands in the measured rounds; returns the calls made."""
        made = 0
        for _ in range(WARM_WAVES):
            with ThreadPoolExecutor(max_workers=4 * server.worker_count) as pool:
                list(
                    pool.map(
                        lambda _: self.check_tool_call(request), range(4 * server.worker_count)
                    )
                )
            made += 4 * server.worker_count
        return made

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
            request = self.tool_request(server, False)
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
        # (label, server, credential, name): one request per name, the OAuth row on the same
        # server as the API-key row, so the two differ in the credential only.
        targets: list[tuple[str, Server, str | bool, str]] = [
            ("(b) bare MCP server", bare, False, bare.name),
            ("(c) control plane", control, "key", control.name),
            (OAUTH_TARGET, control, "oauth", f"{control.name}-oauth"),
        ]
        if workers > 1 and not self.args.quick:
            single = self.serve_target("controlplane-1", CONTROL_APP, 1, SERVING)
            targets.append(("(c) control plane", single, "key", single.name))
        requests = {name: self.tool_request(server, cred) for _, server, cred, name in targets}
        calls = dict.fromkeys(requests, 0)
        try:
            for _, server, _, name in targets:
                self.check_tool_call(requests[name])
                calls[name] += self.warm_every_worker(requests[name], server)
            warm = self.driver.counted(requests[control.name], 16, 1000 - 1)
            calls[control.name] += int(warm["requests"])
            self.facts["rss_kib_after_1000_calls"] = control.worker_rss_kib()
            offset = audit_log_size(stack.audit_log)
            redis_before = redis_counters(stack.redis_url)
            audited_before = sum(stack.database.tool_call_outcomes().values())
            per_round = self.args.duration / self.args.rounds
            for concurrency in (1, 16):
                for *_, name in targets:
                    self.driver.timed(requests[name], concurrency, self.args.warmup)
                rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in requests}
                for _ in range(self.args.rounds):
                    for _, server, _, name in targets:
                        summary = self.measured_round(
                            requests[name], server, concurrency, per_round
                        )
                        rounds[name].append(summary)
                for target, server, _, name in targets:
                    row = row_from(
                        merge_rounds(rounds[name]),
                        target,
                        "uvicorn uvloop",
                        server.worker_count,
                        concurrency,
                    )
                    row.extra["rounds"] = rounds[name]
                    calls[name] += row.requests
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
            for server in {id(server): server for _, server, _, _ in targets}.values():
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
            request = self.tool_request(server, "key")
            self.driver.counted(request, 4, 500)
            before = counter.snapshot()
            calls = 2000
            summary = self.driver.counted(request, 4, calls)
            after = counter.snapshot()
            # The same with a person's OAuth token: warm, it is checked without the database.
            oauth = self.tool_request(server, "oauth")
            self.driver.counted(oauth, 4, 500)
            oauth_before = counter.snapshot()
            self.driver.counted(oauth, 4, calls)
            oauth_after = counter.snapshot()
        finally:
            self.stop(server)
            counter.stop()
        self.facts["db_round_trips_per_oauth_call"] = (
            oauth_after.round_trips - oauth_before.round_trips
        ) / calls
        self.facts["db_reads_per_call"] = (after.reads - before.reads) / calls
        self.facts["db_reads_per_oauth_call"] = (oauth_after.reads - oauth_before.reads) / calls
        self.facts["db_wire_counting_calls"] = summary["requests"]
        self.facts["db_round_trips_per_call"] = (after.round_trips - before.round_trips) / calls
        self.facts["db_connections_per_call"] = (after.connections - before.connections) / calls
        self.facts["db_queries_per_call"] = (
            after.queries + after.syncs - before.queries - before.syncs
        ) / calls
