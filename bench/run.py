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
command the project documents. Results: a table on stdout, bench/results/bench-<time>.json
and bench/results/latest.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import audit_scale, hosts_tracing, many_tenants
from bench.load_driver import LoadDriver
from bench.phases import Bench
from bench.report import audit_section, render, write_results
from bench.stack import BARE_APP, CONTROL_APP, ROOT, SERVING, start_stack


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
        "--hold",
        type=float,
        default=0,
        metavar="SECONDS",
        help="only start the stack, (b) and (c), print how to reach them and wait (profiling)",
    )
    parser.add_argument(
        "--many-tenants-only",
        action="store_true",
        help="only seed 10,000 tenants and run the many-tenants phase (development)",
    )
    parser.add_argument(
        "--hosts-tracing-only",
        action="store_true",
        help="only issue 18's rows: tracing on and off, 2 hosts behind HAProxy (development)",
    )
    parser.add_argument(
        "--audit-scale",
        action="store_true",
        help="also time the audit trail's operator paths at --audit-rows rows (PostgreSQL)",
    )
    parser.add_argument(
        "--audit-scale-only",
        action="store_true",
        help="development: only the audit-at-scale phase; prints its table, writes no results",
    )
    parser.add_argument("--audit-rows", type=int, default=audit_scale.DEFAULT_ROWS)
    parser.add_argument(
        "--audit-refill", action="store_true", help="drop the audit-at-scale database, fill anew"
    )
    args = parser.parse_args(argv)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
    # SIGTERM unwinds like Ctrl-C, so the servers, OpenBao and the database are cleaned up.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))
    load_before = os.getloadavg()[0]
    database_url = os.environ.get("DATABASE_URL", "")
    redis_url = os.environ.get("REDIS_URL", "")
    if args.audit_scale or args.audit_scale_only:
        audit_scale.require_postgres(database_url)
    if args.audit_scale_only:
        log_dir = Path(tempfile.mkdtemp(prefix="qmcp-bench-audit-"))
        audit = audit_scale.run(database_url, args.audit_rows, args.audit_refill, log_dir)
        print("\n" + "\n".join(audit_section(audit)), flush=True)
        sys.exit(1 if audit.get("error") else 0)
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
        if args.hosts_tracing_only:
            hosts_tracing.measure(bench)
        elif args.many_tenants_only:
            many_tenants.run(bench)
        else:
            if not args.quick:
                bench.loadgen_ceiling()
                bench.simulator_direct()
            if not args.quick and workers > 1:
                bench.bare_floor(workers)
            bench.compare()
            bench.round_trips()
            if not args.quick:
                hosts_tracing.measure(bench)
                many_tenants.run(bench)  # last: it leaves 10,000 tenants in the database
    finally:
        stack.close()
    if args.audit_scale:
        bench.facts["audit_scale"] = audit_scale.run(
            database_url, args.audit_rows, args.audit_refill, log_dir
        )
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
    out = write_results(table, started, meta, bench.rows, bench.facts)
    print(f"\nbench: wrote {out.relative_to(ROOT)} and bench/results/latest.md", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
