"""The bench's report: the tables printed at the end, the targets met, and the result files.

`render` gives the Markdown that is printed and saved as bench/results/latest.md;
`write_results` also saves bench/results/bench-<time>.json with every row, every round and
every counter, which the README's figures cite.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import hosts_tracing, many_tenants
from bench.rows import Row
from bench.stack import ROOT, SERVING

RESULTS = ROOT / "bench" / "results"
OAUTH_TARGET = "(c) control plane, OAuth token"


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
    oauth1 = _find(rows, OAUTH_TARGET, "uvicorn uvloop", 2, 1)
    oauth16 = _find(rows, OAUTH_TARGET, "uvicorn uvloop", 2, 16)
    if c1 and oauth1:
        d50 = oauth1.p50_ms - c1.p50_ms
        checks.append(
            ("OAuth token p50 - API key p50 <= 0.1 ms at c=1", f"{d50:+.2f} ms", d50 <= 0.1)
        )
    if c16 and oauth16:
        share = oauth16.calls_per_s / c16.calls_per_s
        detail = f"{share:.0%} ({oauth16.calls_per_s:.0f} vs {c16.calls_per_s:.0f} calls/s)"
        checks.append(("OAuth token >= 95% of API key calls/s at c=16", detail, share >= 0.95))
    vault = facts.get("vault_reads_per_1000_warm_calls")
    if vault is not None:
        checks.append(("Vault reads per 1,000 warm calls = 0", f"{vault:.2f}", vault == 0))
    trips = facts.get("db_round_trips_per_call")
    checks.append(
        ("DB round trips per call <= 3", _cell(trips), None if trips is None else trips <= 3)
    )
    # Reads, not round trips: the audit writer's batches add round trips that depend on how
    # calls fall into batches, not on the credential.
    reads, oauth_reads = facts.get("db_reads_per_call"), facts.get("db_reads_per_oauth_call")
    if reads is not None and oauth_reads is not None:
        checks.append(
            (
                "OAuth token: no DB read per warm call (SELECTs per call <= the key's + 0.01)",
                f"{oauth_reads:.3f} vs {reads:.3f}",
                oauth_reads <= reads + 0.01,
            )
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
    checks += hosts_tracing.verdicts(facts)
    checks += many_tenants.verdicts(rows, facts)
    return checks


def audit_section(audit: dict[str, Any]) -> list[str]:
    """The audit-at-scale table (bench/audit_scale.py); "met" is judged on the median."""
    lines = [
        f"audit at {audit['rows']:,} rows (database {audit['database']}, anchor "
        f"{audit['anchor']}, commit {audit['commit']}; median and max of {audit['repeats']} "
        f"runs, met on the median; {audit.get('cores')} cores, 1-min load average "
        f"{'/'.join(map(str, audit.get('load_average_1m', [])))} at start/end)",
        "",
        "| measure | median ms | max ms | target | met |",
        "|---|---:|---:|---|:---:|",
    ]
    for item in audit["measures"]:
        mark = "n/a" if item["met"] is None else ("yes" if item["met"] else "NO")
        error = f" ({item['error']})" if item.get("error") else ""
        lines.append(
            f"| {item['measure']}{error} | {_cell(item['median_ms'], '{:,.1f}')} | "
            f"{_cell(item['max_ms'], '{:,.1f}')} | {item['target']} | {mark} |"
        )
    if audit.get("error"):
        lines += ["", f"audit-scale FAILED: {audit['error']}"]
    return lines


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
        "| DB round trips per call with an OAuth token (wire) | "
        f"{_cell(facts.get('db_round_trips_per_oauth_call'))} |"
    )
    lines.append(
        "| DB reads (SELECTs) per call, API key / OAuth token (wire) | "
        f"{_cell(facts.get('db_reads_per_call'), '{:.3f}')} / "
        f"{_cell(facts.get('db_reads_per_oauth_call'), '{:.3f}')} |"
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
    lines += hosts_tracing.counter_lines(facts)
    lines += many_tenants.counter_lines(facts)
    lines += ["", "| target | measured | met |", "|---|---:|:---:|"]
    for name, value, met in verdicts(rows, facts):
        mark = "n/a" if met is None else ("yes" if met else "NO")
        lines.append(f"| {name} | {value} | {mark} |")
    if facts.get("audit_scale"):
        lines += ["", *audit_section(facts["audit_scale"])]
    return "\n".join(lines)


def write_results(
    table: str, started: datetime, meta: dict[str, Any], rows: list[Row], facts: dict[str, Any]
) -> Path:
    """Save the run as bench/results/bench-<started>.json and `table` as latest.md."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"bench-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(
        json.dumps(
            {
                "meta": meta,
                "rows": [asdict(row) for row in rows],
                "facts": facts,
                "targets": [
                    {"target": n, "measured": v, "met": m} for n, v, m in verdicts(rows, facts)
                ],
                "table": table,
            },
            indent=2,
            default=str,
        )
        + "\n"
    )
    (RESULTS / "latest.md").write_text(table + "\n")
    return out
