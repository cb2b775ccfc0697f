"""Issue 18's rows of `make bench`: what tracing costs a tool call, and two hosts behind HAProxy.

Tracing on: (c) with TRACING_ENABLED, exporting OTLP/HTTP (the SDK's batch processor, default
settings) to a receiver on loopback that counts the spans and drops them. Tracing off: its
cost is a dozen calls that return at once and their do-nothing `with` blocks, microseconds,
below what an HTTP measurement of a 2 ms call can resolve, so those hooks are timed
in-process with timeit instead.

Two hosts: two control-plane processes of one worker each behind Debian's HAProxy (README's
configuration: round robin per request, /readyz checks), sharing the bench's database, Redis
and OpenBao. On a 2-core machine they are the same two worker processes as one host of two
workers, so the row shows what HAProxy costs a call and that both hosts serve, not scaling.

The three targets (one host of two workers untraced, the same traced, the two hosts) are
served side by side and measured in alternating rounds, like bench/phases.py `compare`.
`python -m bench.hosts_tracing tracing-off-cost` is the in-process timing, run by the bench
in a process with the control plane's environment.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import timeit
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, cast

import httpx

from bench.load_driver import TOOL_CALL, Request, mcp_headers
from bench.rows import Row, merge_rounds, row_from
from bench.stack import CONTROL_APP, PYTHON, ROOT, SERVING, Server, serve, spawn
from devtools.devstack import ManagedProcess, free_port, wait_until_ready

if TYPE_CHECKING:
    from bench.phases import Bench

TRACING_OFF = "(c) control plane, tracing off"
TRACING_ON = "(c) control plane, tracing on"
HOSTS = "(c) 2 hosts x 1 worker via HAProxy"
DIRECT_SERVING = "uvicorn uvloop"
HAPROXY_SERVING = "haproxy, uvicorn uvloop"
WORKERS = 2
# The traced host's own API key: its audit rows count the calls it served, including those
# still in flight when the load generator stopped (which it does not count).
TRACED_KEY_LABEL = "bench-traced"
TRACED_CALLS = (
    "SELECT COUNT(*) FROM controlplane_toolcall AS c JOIN controlplane_apikey AS k "
    "ON c.api_key_id = k.id WHERE k.label = 'bench-traced'"
)
# The spans of one traced call: tools/call and its authenticate, policy, rate limit, token,
# GET and audit write children.
SPANS_PER_TREE = 7
CORES_NOTE = (
    "2 hosts x 1 worker are the same 2 worker processes as 1 host x 2 workers: "
    "on {cores} cores no scaling can show"
)


class OtlpSink:
    """An OTLP/HTTP trace receiver on loopback: answers every export, keeps only counts (spans,
    and `tools/call` spans, one per traced call), like a collector that drops everything."""

    def __init__(self) -> None:
        self.spans = 0
        self.trees = 0
        self.exports = 0
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the exporter's session expects

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                sink.count(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def count(self, body: bytes) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        spans = trees = 0
        for resource_spans in ExportTraceServiceRequest.FromString(body).resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans += 1
                    trees += span.name.startswith("tools/call")
        with self.lock:
            self.spans += spans
            self.trees += trees
            self.exports += 1

    def settled(self, quiet: float = 1.0, timeout: float = 15.0) -> tuple[int, int, int]:
        """(spans, trees, exports) once nothing has arrived for `quiet` seconds."""
        deadline = time.monotonic() + timeout
        last = (-1, -1, -1)
        while time.monotonic() < deadline:
            with self.lock:
                now = (self.spans, self.trees, self.exports)
            if now == last:
                break
            last = now
            time.sleep(quiet)
        return last

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Balancer:
    """Debian's HAProxy in front of the hosts; `answers` reads its per-server statistics."""

    server: Server
    stats_url: str

    def answers(self) -> dict[str, int]:
        """HTTP answers each host has given through HAProxy so far (its hrsp_* counters)."""
        response = httpx.get(f"{self.stats_url};csv", timeout=5)
        response.raise_for_status()
        header, *lines = response.text.lstrip("# ").splitlines()
        names = header.split(",")
        totals: dict[str, int] = {}
        for line in lines:
            row = dict(zip(names, line.split(","), strict=False))
            if row.get("pxname") in ("hosts", "every_host") and row.get("svname") not in (
                "FRONTEND",
                "BACKEND",
            ):
                answered = sum(
                    int(row.get(f"hrsp_{k}") or 0) for k in ("1xx", "2xx", "3xx", "4xx", "5xx")
                )
                totals[row["svname"]] = totals.get(row["svname"], 0) + answered
        return totals

    def status(self) -> dict[str, str]:
        response = httpx.get(f"{self.stats_url};csv", timeout=5)
        header, *lines = response.text.lstrip("# ").splitlines()
        names = header.split(",")
        rows = [dict(zip(names, line.split(","), strict=False)) for line in lines]
        return {
            r["svname"]: r["status"]
            for r in rows
            if r.get("pxname") == "hosts" and r["svname"] not in ("FRONTEND", "BACKEND")
        }


def start_haproxy(bench: Bench, hosts: dict[str, Server]) -> Balancer:
    """HAProxy as the README configures it (round robin per request, /readyz checks every 2 s,
    every host when none is ready), installed with apt-get when missing; added to the
    stack's processes so its CPU counts as the bench's and an interrupted run stops it."""
    from devtools.debian import ensure_command

    binary = ensure_command("haproxy", "haproxy")
    log_dir = bench.stack.log_dir
    port, stats_port = free_port(), free_port()
    addresses = {name: server.url.removeprefix("http://") for name, server in hosts.items()}
    checked = "\n".join(f"    server {n} {a} check" for n, a in addresses.items())
    unchecked = "\n".join(f"    server {n} {a}" for n, a in addresses.items())
    config = log_dir / "haproxy.cfg"
    config.write_text(
        f"""\
global
    maxconn 1024

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout check 3s

frontend mcp
    bind 127.0.0.1:{port}
    use_backend hosts if {{ nbsrv(hosts) gt 0 }}
    default_backend every_host

backend hosts
    balance roundrobin
    option httpchk
    http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host 127.0.0.1
    http-check expect status 200
    default-server inter 2s fall 2 rise 2
{checked}

backend every_host
    balance roundrobin
{unchecked}

listen stats
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /stats
"""
    )
    process = spawn("haproxy", [binary, "-db", "-f", str(config)], log_dir, dict(os.environ))
    managed = ManagedProcess(
        "haproxy", f"http://127.0.0.1:{port}", process, log_dir / "haproxy.log"
    )
    server = Server(name="haproxy", url=managed.url, process=managed, worker_count=1)
    bench.stack.processes.append(server)
    balancer = Balancer(server, f"http://127.0.0.1:{stats_port}/stats")
    wait_until_ready(managed, f"{balancer.stats_url};csv")
    deadline = time.monotonic() + 20
    while set(balancer.status().values()) != {"UP"}:
        if time.monotonic() > deadline:
            raise RuntimeError(f"HAProxy did not see every host up: {balancer.status()}")
        time.sleep(0.2)
    return balancer


def measure(bench: Bench) -> None:
    """Issue 18's rows and facts: tracing off (in-process), then tracing on and two hosts
    behind HAProxy, each in alternating rounds with one untraced host of two workers."""
    print("  tracing off: timing the per-call hooks in-process", flush=True)
    off = tracing_off_cost(bench)
    reference = _find(bench.rows, "(c) control plane", DIRECT_SERVING, WORKERS, 1)
    rows = paired_rows(bench)
    reference = reference or rows[(TRACING_OFF, 1)]
    off["reference_row"] = f"{reference.target}, w={reference.workers} c=1"
    off["reference_p50_ms"] = reference.p50_ms
    off["pct_of_p50"] = off["hooks_us_per_call"] / (reference.p50_ms * 1000) * 100
    bench.facts["tracing_off_cost"] = off
    on, plain = bench.facts["tracing_on"], (rows[(TRACING_OFF, 1)], rows[(TRACING_OFF, 16)])
    on["p50_overhead_ms_c1"] = rows[(TRACING_ON, 1)].p50_ms - plain[0].p50_ms
    on["p50_overhead_pct_c1"] = on["p50_overhead_ms_c1"] / plain[0].p50_ms * 100
    on["p99_overhead_ms_c1"] = rows[(TRACING_ON, 1)].p99_ms - plain[0].p99_ms
    on["calls_per_s_share_c16"] = rows[(TRACING_ON, 16)].calls_per_s / plain[1].calls_per_s
    hosts = bench.facts["several_hosts"]
    hosts["haproxy_p50_cost_ms_c1"] = rows[(HOSTS, 1)].p50_ms - plain[0].p50_ms
    hosts["haproxy_p99_cost_ms_c1"] = rows[(HOSTS, 1)].p99_ms - plain[0].p99_ms
    hosts["calls_per_s_share_c16"] = rows[(HOSTS, 16)].calls_per_s / plain[1].calls_per_s


def tracing_off_cost(bench: Bench) -> dict[str, Any]:
    """The hooks timed in a process with the control plane's environment (tracing off)."""
    completed = subprocess.run(  # noqa: S603 - argv is built by the bench
        [PYTHON, "-m", "bench.hosts_tracing", "tracing-off-cost"],
        capture_output=True,
        text=True,
        env=bench.stack.control_plane_env(),
        cwd=ROOT,
        check=False,
        timeout=300,
    )
    for line in completed.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            result: dict[str, Any] = json.loads(line[len("BENCH_JSON ") :])
            print(
                f"  tracing off: {result['hooks_us_per_call']:.2f} us of hooks per call "
                f"(median of {result['repeats']} x {result['number']:,})",
                flush=True,
            )
            return result
    raise RuntimeError(f"tracing-off timing failed: {completed.stderr[-2000:]}")


def paired_rows(bench: Bench) -> dict[tuple[str, int], Row]:
    """Serve one untraced host and one traced host of two workers, and two one-worker hosts
    behind HAProxy; warm them; measure all three in alternating rounds at c=1 and c=16."""
    stack, log_dir = bench.stack, bench.stack.log_dir
    sink = OtlpSink()
    traced_env = {
        **stack.control_plane_env(),
        "TRACING_ENABLED": "true",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": sink.url,
    }

    def started(name: str, workers: int, env: dict[str, str]) -> Server:
        server = serve(
            name,
            CONTROL_APP,
            workers=workers,
            serving=SERVING,
            env=env,
            log_dir=log_dir,
            probe="/healthz",
        )
        stack.processes.append(server)
        return server

    servers: list[Server] = []
    try:
        plain = started("controlplane-untraced", WORKERS, stack.control_plane_env())
        servers.append(plain)
        traced = started("controlplane-traced", WORKERS, traced_env)
        servers.append(traced)
        hosts: dict[str, Server] = {}
        for name in ("host-a", "host-b"):
            # README: each host its own audit spool.
            env = {**stack.control_plane_env(), "AUDIT_SPOOL_DIR": str(log_dir / f"spool-{name}")}
            hosts[name] = started(f"controlplane-{name}", 1, env)
            servers.append(hosts[name])
        balancer = start_haproxy(bench, hosts)
        servers.append(balancer.server)
        traced_key = stack.manage("issue_api_key", stack.slug, "--label", TRACED_KEY_LABEL)
        traced_request = Request(
            traced.url + "/mcp", "POST", mcp_headers(traced_key.split()[-1]), TOOL_CALL
        )
        return _alternate(bench, plain, (traced, traced_request), hosts, balancer, sink)
    finally:
        for server in servers:
            if server in stack.processes:
                bench.stop(server)
        sink.stop()


def _alternate(
    bench: Bench,
    plain: Server,
    traced_with: tuple[Server, Request],
    hosts: dict[str, Server],
    balancer: Balancer,
    sink: OtlpSink,
) -> dict[tuple[str, int], Row]:
    args, driver = bench.args, bench.driver
    traced, traced_request = traced_with
    requests = {
        TRACING_OFF: bench.tool_request(plain, "key"),
        TRACING_ON: traced_request,
        HOSTS: bench.tool_request(balancer.server, "key"),
    }
    targets = {TRACING_OFF: plain, TRACING_ON: traced}
    traced_calls = 0
    for label, server in targets.items():
        bench.check_tool_call(requests[label])
        made = 1 + bench.warm_every_worker(requests[label], server)
        traced_calls += made if label == TRACING_ON else 0
    bench.check_tool_call(requests[HOSTS])
    for host in hosts.values():
        bench.warm_every_worker(bench.tool_request(host, "key"), host)
    answered: dict[int, dict[str, int]] = {}
    rows: dict[tuple[str, int], Row] = {}
    per_round = args.duration / args.rounds
    for concurrency in (1, 16):
        for label, request in requests.items():
            warm = driver.timed(request, concurrency, args.warmup)
            traced_calls += int(warm["requests"]) if label == TRACING_ON else 0
        rounds: dict[str, list[dict[str, Any]]] = {label: [] for label in requests}
        before = balancer.answers()
        for _ in range(args.rounds):
            for label, request in requests.items():
                if label == HOSTS:
                    summary = _balanced_round(bench, request, balancer, concurrency, per_round)
                else:
                    summary = bench.measured_round(request, targets[label], concurrency, per_round)
                if label == TRACING_ON:
                    attempts = [summary, *summary.get("one_worker_attempts", [])]
                    traced_calls += sum(int(a["requests"]) for a in attempts)
                rounds[label].append(summary)
        after = balancer.answers()
        answered[concurrency] = {name: after.get(name, 0) - before.get(name, 0) for name in hosts}
        for label in requests:
            serving = HAPROXY_SERVING if label == HOSTS else DIRECT_SERVING
            row = row_from(merge_rounds(rounds[label]), label, serving, WORKERS, concurrency)
            row.extra["rounds"] = rounds[label]
            bench.report_row(row)
            rows[(label, concurrency)] = row
    # Stopping the traced host exports the spans its workers still hold and writes its last
    # audit rows (asgi's lifespan).
    bench.stop(traced)
    spans, trees, exports = sink.settled()
    calls = _traced_calls(bench)
    bench.facts["tracing_on"] = {
        "exporter": "otlp http/protobuf, BatchSpanProcessor defaults, loopback receiver",
        "calls": calls,
        "calls_completed_by_load_generator": traced_calls,
        "spans": spans,
        "span_trees": trees,
        "exports": exports,
        "spans_per_call": spans / max(calls, 1),
        "span_trees_per_call": trees / max(calls, 1),
        "spans_per_tree": spans / max(trees, 1),
    }
    bench.facts["several_hosts"] = {
        "haproxy": _haproxy_version(),
        "answers_per_host_c1": answered[1],
        "answers_per_host_c16": answered[16],
        "note": CORES_NOTE.format(cores=_cores()),
    }
    return rows


def _balanced_round(
    bench: Bench, request: Request, balancer: Balancer, concurrency: int, seconds: float
) -> dict[str, Any]:
    """One round through HAProxy, with how many answers each host gave in it."""
    before = balancer.answers()
    meter = bench.foreign.start()
    summary = bench.driver.timed(request, concurrency, seconds)
    summary["foreign_cpu_pct"] = bench.foreign.stop(meter)
    after = balancer.answers()
    summary["answers_per_host"] = {name: after[name] - before.get(name, 0) for name in after}
    return summary


def _traced_calls(bench: Bench) -> int:
    """Audit rows of the traced host's API key, once their count stops growing."""
    last = -1
    for _ in range(20):
        count = int(bench.stack.database._query(TRACED_CALLS)[0][0])
        if count == last:
            break
        last = count
        time.sleep(0.5)
    return last


def _haproxy_version() -> str:
    from devtools.debian import ensure_command

    done = subprocess.run(  # noqa: S603 - the installed haproxy
        [ensure_command("haproxy", "haproxy"), "-v"], capture_output=True, text=True, check=False
    )
    return " ".join(done.stdout.split()[:3])


def _cores() -> int:
    return os.cpu_count() or 0


def _find(rows: list[Row], target: str, serving: str, workers: int, conc: int) -> Row | None:
    return next(
        (
            r
            for r in rows
            if (r.target, r.serving, r.workers, r.concurrency) == (target, serving, workers, conc)
        ),
        None,
    )


# The report's lines (bench/report.py calls these).


def counter_lines(facts: dict[str, Any]) -> list[str]:
    """Issue 18's rows of the counter table, when this phase ran."""
    lines = []
    off = facts.get("tracing_off_cost")
    if off:
        lines.append(
            "| tracing off: cost of the per-call tracing hooks (in-process timeit) | "
            f"{off['hooks_us_per_call']:.2f} us (fastest repeat "
            f"{off['hooks_us_per_call_min']:.2f}) = {off['pct_of_p50']:.3f}% of the "
            f"{off['reference_p50_ms']:.2f} ms p50 of {off['reference_row']} |"
        )
    on = facts.get("tracing_on")
    if on:
        lines.append(
            "| tracing on: spans received per call / span trees per call | "
            f"{on['spans_per_call']:.2f} / {on['span_trees_per_call']:.3f} "
            f"({on['spans']:,} spans in {on['exports']:,} exports; {on['calls']:,} calls audited) |"
        )
    if on and "p50_overhead_ms_c1" in on:
        lines.append(
            "| tracing on vs off (w=2): p50 and p99 at c=1 / calls/s at c=16 | "
            f"{on['p50_overhead_ms_c1']:+.2f} ms ({on['p50_overhead_pct_c1']:+.0f}%) and "
            f"{on['p99_overhead_ms_c1']:+.2f} ms / {on['calls_per_s_share_c16']:.0%} |"
        )
    hosts = facts.get("several_hosts")
    if hosts and "haproxy_p50_cost_ms_c1" in hosts:
        lines.append(
            "| 2 hosts via HAProxy vs 1 host x 2 workers: p50 and p99 at c=1 / calls/s at c=16 | "
            f"{hosts['haproxy_p50_cost_ms_c1']:+.2f} ms and "
            f"{hosts['haproxy_p99_cost_ms_c1']:+.2f} ms / {hosts['calls_per_s_share_c16']:.0%} "
            f"({hosts['note']}) |"
        )
    if hosts:
        per = "; ".join(
            f"c={c}: " + ", ".join(f"{n} {v:,}" for n, v in hosts[f"answers_per_host_c{c}"].items())
            for c in (1, 16)
        )
        lines.append(f"| 2 hosts via HAProxy: answers per host ({hosts['haproxy']}) | {per} |")
    return lines


def verdicts(facts: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """Issue 18's targets: tracing off at no measurable cost, one span tree per traced call,
    both hosts serving."""
    checks: list[tuple[str, str, bool | None]] = []
    off = facts.get("tracing_off_cost")
    if off and "pct_of_p50" in off:
        detail = f"{off['hooks_us_per_call']:.2f} us = {off['pct_of_p50']:.3f}%"
        checks.append(("tracing off costs < 1% of (c) p50 at c=1", detail, off["pct_of_p50"] < 1))
    on = facts.get("tracing_on")
    if on:
        trees = on["span_trees_per_call"]
        detail = f"{trees:.3f} trees, {on['spans_per_tree']:.2f} spans each"
        checks.append(
            ("tracing on: one span tree per call (0.97-1.03)", detail, 0.97 <= trees <= 1.03)
        )
    hosts = facts.get("several_hosts")
    if hosts:
        counts = [*hosts["answers_per_host_c1"].values(), *hosts["answers_per_host_c16"].values()]
        detail = " / ".join(
            ", ".join(f"{v:,}" for v in hosts[f"answers_per_host_c{c}"].values()) for c in (1, 16)
        )
        checks.append(
            ("2 hosts via HAProxy: both answered at c=1 and c=16", detail, min(counts) > 0)
        )
    return checks


# In-process timing of the hooks, in a process with the control plane's settings.


def _time_hooks_while_off(number: int = 100_000, repeats: int = 9) -> dict[str, Any]:
    """The tracing calls a warm get_contact call makes while tracing is off, in the order
    mcpserver.server, mcpserver.pipeline, mcpserver.qontak_call and qontak.client make them,
    timed against an empty call (the harness), so only the hooks' own cost is left."""
    import django

    django.setup()
    from controlplane import tracing
    from mcpserver.server import ARRIVAL_STATE_KEY, _trace_origin

    if tracing.enabled():
        raise RuntimeError("tracing is on in this process")
    request = httpx.Request("GET", "http://127.0.0.1:9/api/v3.1/contacts/1")
    loop = asyncio.new_event_loop()
    done: asyncio.Future[None] = loop.create_future()
    state: dict[str, Any] = {}
    nobody = cast(Any, None)

    def hooks() -> None:
        received = tracing.now()  # mcp_endpoint: on arrival
        authenticated = tracing.now()  # ... and once the key is checked
        if received:
            state[ARRIVAL_STATE_KEY] = (received, authenticated)
        origin = _trace_origin(nobody, nobody, state)  # call_tool
        with tracing.tool_call(  # pipeline.run_tool_call
            tenant="bench", tool="get_contact", request_id="req", origin=origin
        ) as span:
            with tracing.step(tracing.POLICY):
                pass
            with tracing.step(tracing.RATE_LIMIT):
                pass
            with tracing.step(tracing.TOKEN):  # qontak_call.send
                pass
            with tracing.http_request(  # qontak.client
                request,
                base_url="http://127.0.0.1:9",
                route="/api/v3.1/contacts/{id}",
                resend_count=0,
            ) as http:
                tracing.http_response(http, 200)
            tracing.step_until_done(tracing.AUDIT_WRITE, done)
            tracing.tool_call_outcome(span, outcome="ok", is_error=False)

    def empty() -> None:
        pass

    timed = timeit.Timer(hooks).repeat(repeat=repeats, number=number)
    harness = timeit.Timer(empty).repeat(repeat=repeats, number=number)
    loop.close()
    per_call = [t / number * 1e6 for t in timed]
    per_empty = [t / number * 1e6 for t in harness]
    return {
        "hooks": "2 x now, _trace_origin, tool_call, 3 x step, http_request, http_response, "
        "step_until_done, tool_call_outcome (and their `with` blocks)",
        "number": number,
        "repeats": repeats,
        "hooks_us_per_call": statistics.median(per_call) - statistics.median(per_empty),
        "hooks_us_per_call_min": min(per_call) - min(per_empty),
        "harness_us_per_call": statistics.median(per_empty),
    }


if __name__ == "__main__":
    if sys.argv[1:] != ["tracing-off-cost"]:
        raise SystemExit("usage: python -m bench.hosts_tracing tracing-off-cost")
    print("BENCH_JSON " + json.dumps(_time_hooks_while_off()), flush=True)
