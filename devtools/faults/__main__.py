"""`python -m devtools.faults` (`make faults`): every fault scenario once, then the table.

Each scenario starts from a stack that answers (a warm-up call must succeed), runs CALLERS
callers for a few seconds, injects its fault, waits for the first successful call after the
fault (bounded), lets the callers run a little longer, stops them and counts the audit rows.
The whole run is bounded by RUN_BUDGET; every process is stopped at the end, on Ctrl-C and on
SIGTERM. Logs stay in the run directory printed at the start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import httpx

from devtools.faults.report import (
    ScenarioResult,
    measure,
    render_notes,
    render_table,
    settle_audit_rows,
    write_calls,
    write_latest,
)
from devtools.faults.scenarios import SCENARIOS, FaultWindow, Scenario
from devtools.faults.stack import FaultStack, log_directory, start_fault_stack
from devtools.faults.traffic import CLIENT_TIMEOUT, Traffic

CALLERS = 8
BASELINE_SECONDS = 3.0  # calls before the fault
TAIL_SECONDS = 3.0  # calls after the first success that follows the fault
WARM_UP_TIMEOUT = 60.0
CALLERS_STOP_TIMEOUT = 45.0  # a call under way when the callers stop may take this long
RUN_BUDGET = 15 * 60.0  # no new scenario starts after this


async def warm_up(stack: FaultStack, key: str) -> bool:
    """True once a call succeeds; False if none does within WARM_UP_TIMEOUT."""
    traffic = Traffic(stack.mcp_url, key, "warm")
    deadline = time.monotonic() + WARM_UP_TIMEOUT
    async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT) as client:
        while time.monotonic() < deadline:
            if not (await traffic.call(client)).failed:
                return True
            await asyncio.sleep(0.5)
    return False


async def stop_callers(stop: asyncio.Event, callers: list[asyncio.Task[None]]) -> None:
    stop.set()
    _, pending = await asyncio.wait(callers, timeout=CALLERS_STOP_TIMEOUT)
    for task in pending:
        task.cancel()
    await asyncio.gather(*callers, return_exceptions=True)


async def run_scenario(stack: FaultStack, scenario: Scenario, callers: int) -> ScenarioResult:
    result = ScenarioResult(scenario.title)
    key = stack.bench.api_key
    if not await warm_up(stack, key):
        result.notes.append(f"no call succeeded within {WARM_UP_TIMEOUT:.0f} s before the fault")
    traffic = Traffic(stack.mcp_url, key, scenario.key)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(traffic.caller(stop)) for _ in range(callers)]
    window: FaultWindow | None = None
    recovered_at: float | None = None
    try:
        await asyncio.sleep(BASELINE_SECONDS)
        try:
            window = await asyncio.wait_for(
                scenario.inject(stack, traffic), timeout=scenario.inject_timeout
            )
        except TimeoutError:
            result.notes.append(f"fault not over after {scenario.inject_timeout:.0f} s")
        else:
            result.notes = [*window.notes, *result.notes]
            result.http_5xx += window.server_errors
            recovered_at = await traffic.first_success_after(
                window.end, within=scenario.recover_timeout
            )
            await asyncio.sleep(TAIL_SECONDS)
    finally:
        try:
            await scenario.undo(stack)
        finally:
            await stop_callers(stop, tasks)
    owed = {call.request_id for call in traffic.calls if call.answered}
    found = await settle_audit_rows(
        stack.database_url,
        scenario.key,
        owed,
        limit=scenario.settle_timeout,
        quiet=scenario.settle_quiet,
    )
    if window is None:  # the fault timed out: count from now
        window = FaultWindow(time.monotonic(), time.monotonic())
    measure(result, traffic, window.end, recovered_at, found)
    write_calls(stack.log_dir / f"calls-{scenario.key}.jsonl", traffic, window.start, window.end)
    return result


async def run_all(
    stack: FaultStack, scenarios: list[Scenario], callers: int, deadline: float
) -> list[ScenarioResult]:
    results = []
    for scenario in scenarios:
        if time.monotonic() > deadline:
            results.append(ScenarioResult(scenario.title, notes=["skipped: run budget spent"]))
            continue
        print(f"faults: {scenario.title} ...", flush=True)
        started = time.monotonic()
        try:
            result = await run_scenario(stack, scenario, callers)
        except Exception as exc:  # one broken scenario is reported; the run goes on
            result = ScenarioResult(scenario.title, notes=[f"failed: {type(exc).__name__} {exc}"])
        result.notes.append(f"{time.monotonic() - started:.0f} s")
        print("  " + " | ".join(result.cells()[1:]), flush=True)
        results.append(result)
    return results


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.faults", description=__doc__)
    parser.add_argument(
        "--only",
        nargs="+",
        choices=[scenario.key for scenario in SCENARIOS],
        help="run these scenarios only (printed; latest.md is left as it is)",
    )
    parser.add_argument("--callers", type=int, default=CALLERS)
    args = parser.parse_args(argv)
    scenarios = [s for s in SCENARIOS if not args.only or s.key in args.only]

    # Both stop the run through `finally` (every process stopped, paused ones resumed), also
    # when a parent shell started it with SIGINT ignored (a background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    started_at = datetime.now(UTC)
    started = time.monotonic()
    run_dir = Path(tempfile.mkdtemp(prefix="qmcp-faults-"))
    log_dir = log_directory(run_dir)
    print(f"faults: logs in {log_dir}", flush=True)
    try:
        with contextlib.ExitStack() as cleanup:
            stack = start_fault_stack(run_dir, log_dir, cleanup)
            print(f"faults: stack up in {time.monotonic() - started:.0f} s", flush=True)
            results = asyncio.run(
                run_all(stack, scenarios, args.callers, deadline=started + RUN_BUDGET)
            )
    except KeyboardInterrupt:
        print(f"faults: interrupted; every process was stopped (logs in {log_dir})")
        return 130
    duration = time.monotonic() - started
    header = (
        f"`make faults` on {started_at:%Y-%m-%d at %H:%M} UTC, {duration / 60:.1f} minutes "
        f"({os.cpu_count()} cores; {args.callers} callers, 2 uvicorn workers, private "
        f"PostgreSQL, Redis, OpenBao and simulator; logs were in {log_dir})"
    )
    print(f"\n{header}\n\n{render_table(results)}\n\n{render_notes(results)}\n")
    if not args.only:
        print(f"faults: written to {write_latest(header, results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
