"""`make bench`, many tenants: 10,000 tenants and 100,000 API keys in the database.

The issue: a warm call's p50 stays within 10% of the one-tenant figure, a worker's memory
stays bounded, and a cold worker serves its first call in under a second. `run` measures each:

- Seed: 10,000 tenants, each with its own Vault secret (an access token of its own from the
  simulator), a rate limit like the bench tenant's, and 10 keys made and digested as
  `tenants.api_key_issue` does, written with bulk_create by a child process with the control
  plane's settings (`python -m bench.many_tenants seed`).
- Memory (first, so the warm rows run on full caches): one control plane (2 workers), calls
  over fresh keys of every tenant, ~10,000 at a time, at c=16, until a worker has seen
  1.5 x WORKER_CACHE_ENTRIES distinct keys; each worker's RSS after each batch. The bound is
  the one-tenant RSS (+10%, the growth the one-tenant RSS check accepts) plus the copies a
  worker may hold, each at the size tracemalloc measured in the seed process.
- Warm p50: one key each of N tenants, warmed on every worker, then rounds at c=1 rotating
  over them alternate with rounds on the bench tenant's one key, driven the same way, on the
  same server, in pairs whose order swaps each time; the median of the pairs' p50 changes is
  the figure the target is checked on. A worker's copy of a key or policy lives
  config_version.MAX_AGE_SECONDS (30 s) and is read again after it; a warm call is one whose
  copies are live, so N is as many tenants as come back REUSES_PER_COPY times in that life at
  the one-tenant rate (100..1,000), and the keys are warmed again before a pair of rounds
  would outlive the copies made together.
- Cold worker: a new 1-worker server, ready on /readyz as a balancer would see it, then its
  first tools/call with a key never used, of a tenant no process has served (Vault read,
  database reads and the token included); COLD_STARTS fresh processes, the worst counts.

`python -m bench.many_tenants drive ...` is the load generator for rotating keys (wrk cannot
stop after a count); timed rows use wrk with a generated script when wrk is the driver.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import secrets
import statistics
import subprocess
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from bench.counters import audit_log_size, redis_counters, vault_reads
from bench.load_driver import LUA, TOOL_CALL, Request, _summary, mcp_headers
from bench.loadgen import Tally, _read_response, build_request
from bench.rows import Row, merge_rounds, row_from
from bench.stack import CONTROL_APP, PYTHON, ROOT, SERVING, Server, serve

if TYPE_CHECKING:
    from bench.phases import Bench
    from bench.stack import Stack

TENANTS = 10_000
KEYS_PER_TENANT = 10
# Tenants (one key each) the warm rounds rotate over: as many as come back REUSES_PER_COPY
# times within a copy's life at the one-tenant c=1 rate, so at most ~1/REUSES_PER_COPY of the
# calls read a key or policy again; all 10,000 at ~400 calls/s would come back every ~25 s.
MIN_CALLED_TENANTS = 100
MAX_CALLED_TENANTS = 1_000
REUSES_PER_COPY = 20
# Paired rounds in the warm row, in --rounds: this machine's p50 drifts by more than 10% from
# one round to the next (5.4-7.7 ms over one tenant's rounds of one run), so the row is set
# against the one-tenant round beside it, pair by pair, and the pairs' median change decides.
PAIRED_ROUNDS_FACTOR = 3
# A walk's connections open this far apart: a burst lands on whichever worker's accept loop
# wakes first (often all on one), one at a time they spread over the workers; and the walk is
# tried again up to WARM_ATTEMPTS times until every worker held one.
WALK_STAGGER_SECONDS = 0.05
WARM_ATTEMPTS = 5
# Tenants no drive ever calls: the cold workers' first calls use their keys.
COLD_STARTS = 3
# The memory phase uses key numbers 1..8 (0 is the warm rounds', 9 the cold workers').
MEMORY_KEY_NUMBERS = range(1, 9)
MEMORY_TARGET_FACTOR = 1.5  # distinct keys per worker, in WORKER_CACHE_ENTRIES
RSS_ALLOWANCE = 0.10  # the growth "RSS growth 1,000 -> N calls <= 10%" accepts for one tenant
TARGET = "(c) control plane, 10,000 tenants"
SIMULATOR_ACCOUNT = "bench-many-tenants"
SEED_BATCH = 5_000
VAULT_THREADS = 4
ENTRY_SAMPLE = 500
# Rotates the Authorization header over the keys in BENCH_KEYS_FILE, one per request, on top
# of bench/load.lua (method, body, the BENCH_JSON summary).
WRK_ROTATION = """dofile("{load_lua}")
local keys = {{}}
for line in io.lines(os.getenv("BENCH_KEYS_FILE")) do keys[#keys + 1] = line end
local next_key = 0
request = function()
  next_key = next_key % #keys + 1
  wrk.headers["Authorization"] = "Bearer " .. keys[next_key]
  return wrk.format()
end
"""


# The phase (in the bench process)


def run(bench: Bench) -> None:
    """Seed, then the memory bound, the warm rows and the cold workers (module docstring)."""
    stack = bench.stack
    started = time.monotonic()
    facts: dict[str, Any] = {"tenants": TENANTS, "keys_per_tenant": KEYS_PER_TENANT}
    bench.facts["many_tenants"] = facts
    print(f"many tenants: seeding {TENANTS:,} tenants and {TENANTS * KEYS_PER_TENANT:,} keys")
    keys_path = stack.log_dir / "many-tenants-keys.tsv"
    facts.update(seed(stack, keys_path))
    keys = _read_keys(keys_path)  # keys[number][tenant]
    workers = bench.args.workers
    server = bench.serve_target("controlplane-many", CONTROL_APP, workers, SERVING)
    try:
        one = bench.tool_request(server, "key")
        bench.check_tool_call(one)
        bench.check_tool_call(_with_key(one, keys[0][0]))
        bench.warm_every_worker(one, server)
        bench.driver.counted(one, 16, 1000)
        facts["rss_kib_one_tenant"] = server.worker_rss_kib()
        memory(bench, server, keys, facts)
        warm_rows(bench, server, keys[0], facts)
    finally:
        bench.stop(server)
    _bound(facts)
    cold_workers(bench, [keys[KEYS_PER_TENANT - 1][-1 - n] for n in range(COLD_STARTS)], facts)
    facts["phase_s"] = round(time.monotonic() - started, 1)


def seed(stack: Stack, keys_path: Path) -> dict[str, Any]:
    """The child process seeds (its progress goes to our stdout); returns its timings."""
    summary_path = keys_path.with_suffix(".json")
    started = time.monotonic()
    completed = subprocess.run(  # noqa: S603 - argv is built by the bench
        [PYTHON, "-m", "bench.many_tenants", "seed", str(keys_path), str(summary_path)],
        env=stack.control_plane_env(),
        cwd=ROOT,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"many-tenants seed failed with status {completed.returncode}")
    summary: dict[str, Any] = json.loads(summary_path.read_text())
    summary["seed_process_s"] = round(time.monotonic() - started, 1)
    print(
        f"  seeded in {summary['seed_s']:.1f} s (Vault {summary['vault_write_s']:.1f} s); "
        f"copy sizes {summary['entry_bytes']} B in {summary['entry_bytes_s']:.1f} s",
        flush=True,
    )
    return summary


def _read_keys(path: Path) -> list[list[str]]:
    keys: list[list[str]] = [[""] * TENANTS for _ in range(KEYS_PER_TENANT)]
    for line in path.read_text().splitlines():
        tenant, number, key = line.split("\t")
        keys[int(number)][int(tenant)] = key
    return keys


def _with_key(request: Request, key: str) -> Request:
    return Request(request.url, request.method, mcp_headers(key), request.body)


def _keys_file(bench: Bench, name: str, keys: list[str]) -> Path:
    path = bench.stack.log_dir / f"many-tenants-{name}.keys"
    path.write_text("\n".join(keys) + "\n")
    path.chmod(0o600)
    return path


def _census(server: Server, after: float) -> tuple[threading.Timer, list[list[int]]]:
    """How the workers share the connections, looked at `after` seconds from now."""
    seen: list[list[int]] = []
    timer = threading.Timer(
        after, lambda: seen.append(list(server.connections_per_worker().values()))
    )
    timer.start()
    return timer, seen


def _drive(url: str, keys_file: Path, connections: int, *limits: str) -> dict[str, Any]:
    """bench.many_tenants' own generator: keys rotated per request (see `drive`)."""
    argv = [PYTHON, "-m", "bench.many_tenants", "drive", url, str(keys_file)]
    return _summary([*argv, "-c", str(connections), *limits], dict(os.environ))


def _timed(bench: Bench, url: str, keys_file: Path, seconds: float) -> dict[str, Any]:
    """A c=1 run of `seconds` rotating over the keys: wrk with a generated script when the
    bench uses wrk (as the (c) rows do), else this module's generator."""
    if bench.driver.kind != "wrk":
        return _drive(url, keys_file, 1, "--duration", str(seconds))
    script = bench.stack.log_dir / "many-tenants-rotate.lua"
    script.write_text(WRK_ROTATION.format(load_lua=LUA))
    argv = ["wrk", "-t1", "-c1", f"-d{max(1, round(seconds))}s", "--timeout", "10s"]
    argv += ["-s", str(script)]
    for name, value in mcp_headers(None):
        argv += ["-H", f"{name}: {value}"]
    env = {**os.environ, "BENCH_METHOD": "POST", "BENCH_BODY": TOOL_CALL}
    return _summary([*argv, url], {**env, "BENCH_KEYS_FILE": str(keys_file)})


def _warm_keys(bench: Bench, server: Server, keys: list[str]) -> list[list[int]]:
    """Every key on every worker: 8 connections each call with every key, again until each
    worker held one of them (each tenant's Vault read is then behind every worker)."""
    keys_file = _keys_file(bench, "warm", keys)
    splits: list[list[int]] = []
    for _ in range(WARM_ATTEMPTS):
        timer, seen = _census(server, 2.0)
        summary = _drive(server.url + "/mcp", keys_file, 8, "--walk")
        timer.join()
        splits += seen
        print(
            f"  warmed {len(keys):,} keys on {summary['requests']:,} calls, connections per "
            f"worker {seen[0] if seen else '?'}, errors {_errors(summary)}",
            flush=True,
        )
        if _errors(summary):
            raise RuntimeError(f"warming the many tenants' keys failed: {summary}")
        if seen and min(seen[0]) > 0:
            break
    return splits


def _errors(summary: dict[str, Any]) -> int:
    return sum(
        int(summary[k])
        for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )


def warm_rows(bench: Bench, server: Server, candidates: list[str], facts: dict[str, Any]) -> None:
    """c=1 rounds over many tenants' keys alternating with rounds on the bench tenant's key,
    same server and generator: the row, and its one-tenant reference beside it."""
    stack = bench.stack
    url = server.url + "/mcp"
    files = {"one": _keys_file(bench, "one", [stack.api_key])}
    warmup = _timed(bench, url, files["one"], max(bench.args.warmup, 2.0))
    rate = warmup["requests"] / (warmup["duration_us"] / 1e6)
    called = round(rate * float(facts["copy_life_s"]) / REUSES_PER_COPY)
    many = candidates[: min(max(called, MIN_CALLED_TENANTS), MAX_CALLED_TENANTS)]
    files["many"] = _keys_file(bench, "many", many)
    per_round = bench.args.duration / bench.args.rounds
    copy_life = float(facts["copy_life_s"])
    warmed_at = copied_by = 0.0
    facts["rewarms"] = -1

    def warm() -> None:
        # Copies warmed together age out together, and a round that meets that moment
        # re-reads on most of its calls; a steady load spreads those re-reads out. So the
        # keys are warmed again before a pair would outlive the copies, once the copies have
        # aged out: a call on a live copy does not read it again, and would leave it to age
        # out in the next round.
        nonlocal warmed_at, copied_by
        if copied_by:
            time.sleep(max(0.0, copied_by + copy_life + 0.5 - time.monotonic()))
        warmed_at = time.monotonic()
        facts["warm_connections_per_worker"] = _warm_keys(bench, server, many)
        copied_by = time.monotonic()
        _timed(bench, url, files["many"], bench.args.warmup)
        facts["rewarms"] += 1

    warm()
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in files}
    offset = audit_log_size(stack.audit_log)
    for pair in range(bench.args.rounds * PAIRED_ROUNDS_FACTOR):
        # Warming loads the machine for a while after it: at a pair's start, so that what
        # follows a warm falls on the one tenant's round as often as on the many tenants'.
        if time.monotonic() + 2 * per_round + 1 > warmed_at + copy_life - 1:
            warm()
        for name in ("one", "many") if pair % 2 == 0 else ("many", "one"):
            path = files[name]
            meter = bench.foreign.start()
            before = _server_counts(stack)
            summary = _timed(bench, url, path, per_round)
            summary["foreign_cpu_pct"] = bench.foreign.stop(meter)
            summary.update(_per_call(before, _server_counts(stack), int(summary["requests"])))
            print(
                f"  {name} round: p50 {summary['p50_us'] / 1000:.2f} ms, "
                + ", ".join(f"{k} {v:.2f}" for k, v in summary.items() if k.endswith("_per_call")),
                flush=True,
            )
            rounds[name].append(summary)
    reads, _ = vault_reads(stack.audit_log, stack.secret_path, offset)
    facts["rss_kib_after_warm"] = server.worker_rss_kib()
    reference = row_from(
        merge_rounds(rounds["one"]),
        "(c) control plane, one tenant, paired",
        "uvicorn uvloop",
        server.worker_count,
        1,
    )
    row = row_from(merge_rounds(rounds["many"]), TARGET, "uvicorn uvloop", server.worker_count, 1)
    reference.extra["rounds"], row.extra["rounds"] = rounds["one"], rounds["many"]
    row.extra["distinct_keys"] = len(many)
    bench.report_row(row)
    print(f"  (one tenant, same rounds: p50 {reference.p50_ms:.2f} ms)", flush=True)
    facts["called_tenants"] = len(many)
    pairs = zip(rounds["one"], rounds["many"], strict=True)
    changes = [many_round["p50_us"] / one_round["p50_us"] - 1 for one_round, many_round in pairs]
    facts["paired_p50_changes"] = [round(c, 4) for c in changes]
    facts["paired_p50_change"] = statistics.median(changes)
    # Each key and policy copy is read again once per copy life: the share of calls that do.
    facts["copy_rereads_per_call"] = len(many) / (row.calls_per_s * facts["copy_life_s"])
    facts["one_tenant_paired"] = asdict(reference)
    facts["vault_reads_in_warm_rounds"] = reads
    facts["per_call_in_warm_rounds"] = {name: _mean_per_call(rounds[name]) for name in rounds}
    compared = [
        r
        for r in bench.rows
        if (r.target, r.serving, r.workers, r.concurrency)
        == ("(c) control plane", "uvicorn uvloop", server.worker_count, 1)
    ]
    if compared:
        facts["compare_one_tenant_p50_ms"] = compared[0].p50_ms


def _server_counts(stack: Stack) -> dict[str, int]:
    """Redis commands and database transactions served so far, server-wide."""
    counts = dict(stack.database.server_counters() or {})
    redis = redis_counters(stack.redis_url)
    if redis is not None:
        counts["redis_commands"] = redis["commands"]
    return counts


def _per_call(before: dict[str, int], after: dict[str, int], calls: int) -> dict[str, float]:
    """What a round cost per call (PostgreSQL reports its counters up to a second late)."""
    return {f"{name}_per_call": (after[name] - before[name]) / max(calls, 1) for name in before}


def _mean_per_call(rounds: list[dict[str, Any]]) -> dict[str, float]:
    """The rounds' per-call counters, weighted by their calls."""
    calls = sum(int(r["requests"]) for r in rounds)
    names = [k for k in rounds[0] if k.endswith("_per_call")] if rounds else []
    return {k: sum(r[k] * int(r["requests"]) for r in rounds) / max(calls, 1) for k in names}


def memory(bench: Bench, server: Server, keys: list[list[str]], facts: dict[str, Any]) -> None:
    """Fresh keys of every tenant at c=16, a batch of ~10,000 at a time, each worker's RSS
    after each batch, until a worker has seen MEMORY_TARGET_FACTOR x the cache's size (the
    others' shares are estimated from how the connections were spread)."""
    entries = int(facts["worker_cache_entries"])
    seen = {str(pid): 0.0 for pid in server.workers()}
    steps: list[dict[str, Any]] = []
    driven = 0
    for number in MEMORY_KEY_NUMBERS:
        batch = keys[number][: TENANTS - COLD_STARTS]
        keys_file = _keys_file(bench, f"memory-{number}", batch)
        timer, census = _census(server, 3.0)
        summary = _drive(server.url + "/mcp", keys_file, 16, "--requests", str(len(batch)))
        timer.join()
        driven += len(batch)
        split = census[0] if census else []
        pids = [str(pid) for pid in server.workers()]
        for pid, share in zip(pids, split, strict=False):
            seen[pid] = seen.get(pid, 0.0) + len(batch) * share / max(sum(split), 1)
        rss = {str(pid): kib for pid, kib in server.worker_rss_kib().items()}
        steps.append(
            {
                "distinct_keys": driven,
                "calls_per_s": summary["requests"] / (summary["duration_us"] / 1e6),
                "errors": _errors(summary),
                "connections_per_worker": split,
                "keys_seen_per_worker": {pid: round(n) for pid, n in seen.items()},
                "rss_kib": rss,
            }
        )
        print(
            f"  {driven:,} distinct keys ({steps[-1]['calls_per_s']:.0f} calls/s, errors "
            f"{steps[-1]['errors']}): keys seen per worker ~"
            f"{', '.join(f'{n:,.0f}' for n in seen.values())}; RSS MiB "
            f"{', '.join(f'{kib / 1024:.1f}' for kib in rss.values())}",
            flush=True,
        )
        if max(seen.values()) >= MEMORY_TARGET_FACTOR * entries:
            break
    facts["memory_steps"] = steps
    facts["distinct_keys_driven"] = driven


def _bound(facts: dict[str, Any]) -> None:
    """The RSS bound per worker, and each worker's largest RSS seen after the one-tenant
    figure (the memory batches and the warm rows)."""
    entries = int(facts["worker_cache_entries"])
    samples = [step["rss_kib"] for step in facts.get("memory_steps", [])]
    samples.append({str(pid): kib for pid, kib in facts.get("rss_kib_after_warm", {}).items()})
    final: dict[str, int] = {}
    for sample in samples:
        for pid, kib in sample.items():
            final[pid] = max(final.get(pid, 0), kib)
    facts["rss_kib_final"] = final
    sizes = facts["entry_bytes"]
    baseline = max(facts["rss_kib_one_tenant"].values())
    copies = (
        entries * sizes["api_key"]
        + min(entries, TENANTS) * sizes["policy"]
        + TENANTS * sizes["qontak_token"]
    )
    facts["bound_kib"] = round(baseline * (1 + RSS_ALLOWANCE) + copies / 1024)
    facts["bound_formula"] = (
        f"one-tenant RSS {baseline / 1024:.1f} MiB x {1 + RSS_ALLOWANCE:.2f} + "
        f"{entries:,} keys x {sizes['api_key']:,} B + {min(entries, TENANTS):,} policies x "
        f"{sizes['policy']:,} B + {TENANTS:,} Qontak tokens x {sizes['qontak_token']:,} B "
        f"(tokens are kept per tenant, not bounded by WORKER_CACHE_ENTRIES)"
    )


def cold_workers(bench: Bench, keys: list[str], facts: dict[str, Any]) -> None:
    """A fresh 1-worker server per key: ready on /readyz, then its first call, timed."""
    stack = bench.stack
    first: list[float] = []
    ready: list[float] = []
    second: list[float] = []
    for index, key in enumerate(keys):
        started = time.monotonic()
        server = serve(
            f"controlplane-cold-{index}",
            CONTROL_APP,
            workers=1,
            serving=SERVING,
            env=stack.control_plane_env(),
            log_dir=stack.log_dir,
            probe="/readyz",
        )
        stack.processes.append(server)
        ready.append(time.monotonic() - started)
        try:
            request = _with_key(bench.tool_request(server, False), key)
            with httpx.Client(timeout=30) as client:
                for timings in (first, second):
                    began = time.perf_counter()
                    answer = client.post(
                        request.url, headers=dict(request.headers), content=request.body
                    )
                    timings.append((time.perf_counter() - began) * 1000)
                    result = answer.json().get("result") or {}
                    if answer.status_code != 200 or result.get("isError"):
                        raise RuntimeError(f"cold worker's call failed: {answer.text[:500]}")
        finally:
            bench.stop(server)
        print(
            f"  cold worker {index + 1}: ready in {ready[-1]:.1f} s, first call "
            f"{first[-1]:.0f} ms, second {second[-1]:.1f} ms",
            flush=True,
        )
    facts["cold_ready_s"] = [round(s, 2) for s in ready]
    facts["cold_first_call_ms"] = [round(ms, 1) for ms in first]
    facts["cold_second_call_ms"] = [round(ms, 2) for ms in second]


# The report's part (bench/report.py calls these)


def counter_lines(facts: dict[str, Any]) -> list[str]:
    """Rows of the report's counter table."""
    many = facts.get("many_tenants")
    if not many or "seed_s" not in many:
        return []

    def mib(sample: dict[str, int]) -> str:
        return "/".join(f"{kib / 1024:.1f}" for kib in sample.values())

    lines = [
        f"| 10,000 tenants: seeded tenants / API keys / Vault secrets | {many['tenants']:,} / "
        f"{many['api_keys']:,} / {many['vault_secrets']:,} in {many['seed_s']:.1f} s (Vault "
        f"{many['vault_write_s']:.1f} s, {many['vault_writes_per_s']:.0f} writes/s) |"
    ]
    steps = many.get("memory_steps")
    if steps:
        seen = steps[-1]["keys_seen_per_worker"]
        lines.append(
            f"| 10,000 tenants: distinct keys driven at c=16 (seen per worker, est.) | "
            f"{many['distinct_keys_driven']:,} ({', '.join(f'{n:,}' for n in seen.values())}); "
            f"worker cache {many['worker_cache_entries']:,} copies per kind |"
        )
        series = " -> ".join(mib(step["rss_kib"]) for step in steps)
        lines.append(
            "| 10,000 tenants: worker RSS MiB, one tenant -> each ~10,000 more distinct keys "
            f"-> after the warm rows | {mib(many['rss_kib_one_tenant'])} -> {series} -> "
            f"{mib(many.get('rss_kib_after_warm', {}))} |"
        )
    if "bound_kib" in many:
        lines.append(
            f"| 10,000 tenants: RSS bound per worker | {many['bound_kib'] / 1024:.1f} MiB = "
            f"{many['bound_formula']} |"
        )
    paired = many.get("one_tenant_paired")
    if paired:
        compare = many.get("compare_one_tenant_p50_ms")
        lines.append(
            f"| 10,000 tenants: c=1 row rotates over one key each of | {many['called_tenants']:,} "
            f"tenants, warmed again {many.get('rewarms', 0)} times so no copy ages out in a "
            f"round (a steady load at this rate would re-read a copy over "
            f"{many['copy_life_s']:.0f} s old on ~{many['copy_rereads_per_call']:.1%} of calls); "
            f"one tenant in the same rounds: p50 "
            f"{paired['p50_ms']:.2f} ms"
            + (f", in the (c) row above {compare:.2f} ms" if compare else "")
            + f"; Vault reads meanwhile {many['vault_reads_in_warm_rounds']} |"
        )
    changes = many.get("paired_p50_changes")
    if changes:
        lines.append(
            "| 10,000 tenants: p50 change against the one-tenant round beside it, pair by pair "
            f"(median) | {', '.join(f'{c:+.1%}' for c in changes)} "
            f"({many['paired_p50_change']:+.1%}) |"
        )
    costs = many.get("per_call_in_warm_rounds")
    if costs and costs.get("many"):

        def cost(name: str) -> str:
            per = costs[name]
            return " / ".join(
                f"{per[k]:.2f}"
                for k in ("transactions_per_call", "redis_commands_per_call")
                if k in per
            )

        lines.append(
            "| 10,000 tenants: per call in those rounds, DB transactions / Redis commands "
            f"(one tenant's rounds) | {cost('many')} ({cost('one')}) |"
        )
    cold = many.get("cold_first_call_ms")
    if cold:
        lines.append(
            "| 10,000 tenants: cold worker's first call ms (ready on /readyz in s; second "
            f"call ms) | {', '.join(f'{ms:.0f}' for ms in cold)} "
            f"({', '.join(f'{s:.1f}' for s in many['cold_ready_s'])}; "
            f"{', '.join(f'{ms:.1f}' for ms in many['cold_second_call_ms'])}) |"
        )
    return lines


def verdicts(rows: list[Row], facts: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """The issue's three targets."""
    many = facts.get("many_tenants") or {}
    checks: list[tuple[str, str, bool | None]] = []
    row = next((r for r in rows if r.target == TARGET and r.concurrency == 1), None)
    paired = many.get("one_tenant_paired")
    if row and paired:
        change = float(many["paired_p50_change"])
        detail = (
            f"median of {len(many['paired_p50_changes'])} paired rounds {change:+.1%} "
            f"(rounds' median p50 {row.p50_ms:.2f} vs {paired['p50_ms']:.2f} ms)"
        )
        checks.append(("10,000 tenants: p50 within 10% of one tenant", detail, change <= 0.10))
    cold = many.get("cold_first_call_ms")
    if cold:
        detail = f"{max(cold):.0f} ms worst of {len(cold)}"
        checks.append(("cold worker's first call < 1 s", detail, max(cold) < 1000))
    final, bound = many.get("rss_kib_final"), many.get("bound_kib")
    if final and bound:
        worst = max(final.values())
        detail = f"{worst / 1024:.1f} <= {bound / 1024:.1f} MiB"
        checks.append(("worker RSS within the bound", detail, worst <= bound))
    return checks


# Child processes: `python -m bench.many_tenants seed|drive ...`


def _seed_main(keys_path: Path, summary_path: Path) -> None:
    """With the control plane's settings (Stack.control_plane_env): tenants, Vault secrets,
    credential rows, rate limits and keys; the clear keys go to `keys_path` (mode 0600)."""
    import django

    django.setup()
    from django.conf import settings

    from controlplane import config_version, vault
    from controlplane.models import ApiKey, QontakCredential, RateLimitPolicy, Tenant
    from controlplane.tenants import (
        API_KEY_SCHEME,
        PREFIX_LENGTH,
        api_key_digest,
        api_key_pepper_id,
        tenant_qontak_base_url,
    )
    from devtools.devstack import create_simulator_account

    summary: dict[str, Any] = {}
    simulator = settings.QONTAK_BASE_URL
    seeding = clock = time.monotonic()

    # One simulator account, an access token of its own for each tenant (grants rotate the
    # refresh token; each tenant keeps the one it got, unused while its access token lives).
    refresh = create_simulator_account(simulator, SIMULATOR_ACCOUNT)
    grants: list[dict[str, Any]] = []
    with httpx.Client(base_url=simulator, timeout=10) as client:
        for index in range(TENANTS):
            began = time.time()
            answer = client.post(
                "/oauth/token", data={"grant_type": "refresh_token", "refresh_token": refresh}
            )
            answer.raise_for_status()
            body = answer.json()
            refresh = str(body["refresh_token"])
            grants.append(
                {
                    "refresh_token": refresh,
                    "access_token": str(body["access_token"]),
                    "issued_at": began,
                    "expires_at": began + float(body["expires_in"]),
                }
            )
            if (index + 1) % 2_500 == 0:
                print(f"  simulator access tokens: {index + 1:,}", flush=True)
    summary["token_grants_s"] = round(time.monotonic() - clock, 1)

    clock = time.monotonic()
    run = f"{os.getpid()}"
    tenants = Tenant.objects.bulk_create(
        [
            Tenant(slug=f"many-{run}-{i:05d}", name=f"Many {i}", qontak_base_url=simulator)
            for i in range(TENANTS)
        ],
        batch_size=SEED_BATCH,
    )
    summary["tenant_rows_s"] = round(time.monotonic() - clock, 1)
    print(f"  tenants: {len(tenants):,} rows", flush=True)

    clock = time.monotonic()
    refs = [vault.tenant_secret_ref(tenant.pk) for tenant in tenants]
    done = [0]
    lock = threading.Lock()

    def store(index: int) -> int:
        grant = grants[index]
        version = vault.write_secret(
            refs[index], base_url=tenant_qontak_base_url(tenants[index]), cas=0, **grant
        )
        with lock:
            done[0] += 1
            if done[0] % 1_000 == 0:
                print(f"  Vault secrets: {done[0]:,}", flush=True)
        return version

    with ThreadPoolExecutor(max_workers=VAULT_THREADS) as pool:
        versions = list(pool.map(store, range(TENANTS)))
    vault_s = time.monotonic() - clock
    summary["vault_secrets"] = TENANTS
    summary["vault_write_s"] = round(vault_s, 1)
    summary["vault_writes_per_s"] = round(TENANTS / vault_s)

    clock = time.monotonic()
    QontakCredential.objects.bulk_create(
        [
            QontakCredential(
                tenant=tenant,
                vault_mount=ref.mount,
                vault_path=ref.path,
                vault_version=version,
                status=QontakCredential.Status.VALID,
            )
            for tenant, ref, version in zip(tenants, refs, versions, strict=True)
        ],
        batch_size=SEED_BATCH,
    )
    # Like the bench tenant's (`set_rate_limit ... 1000000/m`): a limit never reached.
    RateLimitPolicy.objects.bulk_create(
        [RateLimitPolicy(tenant=tenant, rate="1000000/m") for tenant in tenants],
        batch_size=SEED_BATCH,
    )
    pepper_id = api_key_pepper_id(settings.API_KEY_PEPPER)
    prefixes = set(ApiKey.objects.values_list("prefix", flat=True))
    lines: list[str] = []
    for number in range(KEYS_PER_TENANT):
        batch = []
        for index, tenant in enumerate(tenants):
            key = ""
            while not key or key[:PREFIX_LENGTH] in prefixes:
                key = API_KEY_SCHEME + secrets.token_urlsafe(32)  # as tenants.api_key_issue
            prefixes.add(key[:PREFIX_LENGTH])
            batch.append(
                ApiKey(
                    tenant=tenant,
                    label=f"many {number}",
                    prefix=key[:PREFIX_LENGTH],
                    digest=api_key_digest(key),
                    pepper_id=pepper_id,
                )
            )
            lines.append(f"{index}\t{number}\t{key}")
        ApiKey.objects.bulk_create(batch, batch_size=SEED_BATCH)
        print(f"  API keys: {(number + 1) * TENANTS:,}", flush=True)
    summary["key_rows_s"] = round(time.monotonic() - clock, 1)
    summary["api_keys"] = TENANTS * KEYS_PER_TENANT
    keys_path.write_text("\n".join(lines) + "\n")
    keys_path.chmod(0o600)
    config_version.announce_change()  # bulk_create sends no post_save
    summary["seed_s"] = round(time.monotonic() - seeding, 1)
    summary["worker_cache_entries"] = settings.WORKER_CACHE_ENTRIES
    summary["copy_life_s"] = config_version.MAX_AGE_SECONDS
    clock = time.monotonic()
    summary["entry_bytes"] = _entry_bytes([tenant.pk for tenant in tenants[:ENTRY_SAMPLE]])
    summary["entry_bytes_s"] = round(time.monotonic() - clock, 1)
    summary_path.write_text(json.dumps(summary))


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def _entry_bytes(tenant_ids: list[int]) -> dict[str, int]:
    """What one worker copy costs, measured with tracemalloc as the workers hold them: a key
    (with its tenant) by digest, a tenant's policy, a tenant's Qontak access token."""
    from controlplane import policies, tokens
    from controlplane.config_version import VersionedCache
    from controlplane.models import ApiKey

    tracemalloc.start()
    keys: VersionedCache[str, ApiKey] = VersionedCache(max_entries=len(tenant_ids))
    start = _traced()
    for api_key in (
        ApiKey.objects.select_related("tenant")
        .filter(tenant_id__in=tenant_ids, label="many 0")
        .iterator()
    ):
        if len(keys) < len(tenant_ids):
            keys.put(api_key.digest.encode().decode(), "1", api_key)
    per_key = (_traced() - start) / len(keys)
    start = _traced()
    for tenant_id in tenant_ids:
        policies.tenant_policy(tenant_id=tenant_id, version="1")
    per_policy = (_traced() - start) / len(tenant_ids)
    copies: dict[int, tokens.CachedToken] = {}
    start = _traced()
    for tenant_id in tenant_ids:
        copies[tenant_id] = tokens.CachedToken(
            access_token=secrets.token_urlsafe(32),
            expires_at=time.time() + 21600.0,
            refresh_at=time.time() + 21300.0,
            base_url=b"http://127.0.0.1:65535".decode(),
        )
    per_token = (_traced() - start) / len(tenant_ids)
    tracemalloc.stop()
    return {
        "api_key": round(per_key),
        "policy": round(per_policy),
        "qontak_token": round(per_token),
    }


async def drive(
    url: str, keys: list[str], connections: int, *, walk: bool, requests: int, duration: float
) -> dict[str, Any]:
    """Tool calls with a key per request: shared rotation over `keys` (stopping after
    `requests`), or with `walk` every connection calls with every key once."""
    host, port, _ = build_request(url, "POST", [], None)
    encoded = [build_request(url, "POST", mcp_headers(key), TOOL_CALL.encode())[2] for key in keys]
    tally = Tally()
    cursor = [0]
    budget = requests if requests > 0 else 2**62
    deadline = time.monotonic() + duration

    async def client(own: list[int], start_after: float) -> None:
        await asyncio.sleep(start_after)
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            tally.connect_errors += 1
            return
        clock = time.perf_counter_ns
        try:
            while time.monotonic() < deadline:
                position = own if walk else cursor
                if position[0] >= (len(encoded) if walk else budget):
                    break
                request = encoded[position[0] % len(encoded)]
                position[0] += 1
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

    started = time.perf_counter()
    stagger = WALK_STAGGER_SECONDS if walk else 0.0
    await asyncio.gather(*(client([0], n * stagger) for n in range(connections)))
    elapsed = time.perf_counter() - started
    return tally.summary(elapsed)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.many_tenants")
    commands = parser.add_subparsers(dest="command", required=True)
    seeding = commands.add_parser("seed", help="seed the tenants (control plane environment)")
    seeding.add_argument("keys", type=Path)
    seeding.add_argument("summary", type=Path)
    driving = commands.add_parser("drive", help="tool calls rotating over keys")
    driving.add_argument("url")
    driving.add_argument("keys", type=Path)
    driving.add_argument("--connections", "-c", type=int, default=1)
    driving.add_argument("--walk", action="store_true", help="each connection uses every key")
    driving.add_argument("--requests", type=int, default=-1)
    driving.add_argument("--duration", type=float, default=600.0)
    args = parser.parse_args(argv)
    if args.command == "seed":
        _seed_main(args.keys, args.summary)
        return
    keys = args.keys.read_text().split()
    runner = asyncio.Runner()
    with contextlib.suppress(ImportError):
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    with runner:
        summary = runner.run(
            drive(
                args.url,
                keys,
                args.connections,
                walk=args.walk,
                requests=args.requests,
                duration=args.duration,
            )
        )
    print("BENCH_JSON " + json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
