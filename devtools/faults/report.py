"""What a scenario measured, the audit rows it left, and the table `make faults` prints.

A call is owed an audit row when a tool result came back (success or tool error): the
pipeline ran it. Rows are matched by request id in the run's private PostgreSQL once the
scenario is over, after the writer's retries and any replay from its spool have had time.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from devtools.faults.traffic import Traffic

RESULTS_DIR = Path(__file__).resolve().parent / "results"
COLUMNS = (
    "scenario",
    "calls",
    "client-visible errors",
    "HTTP 5xx",
    "audit rows lost",
    "recovery s",
)


@dataclass
class ScenarioResult:
    title: str
    calls: int = 0
    errors: int = 0
    http_5xx: int = 0
    rows_lost: int | None = None
    recovery: str = "-"
    notes: list[str] = field(default_factory=list)

    def cells(self) -> list[str]:
        lost = "?" if self.rows_lost is None else f"{self.rows_lost:,}"
        return [
            self.title,
            f"{self.calls:,}",
            f"{self.errors:,}",
            f"{self.http_5xx:,}",
            lost,
            self.recovery,
        ]


def audit_request_ids(database_url: str, prefix: str) -> set[str]:
    """Request ids of the ToolCall rows of one scenario; empty while the database is down."""
    try:
        with psycopg.connect(database_url, connect_timeout=3) as conn:
            rows = conn.execute(
                "SELECT request_id FROM controlplane_toolcall WHERE request_id LIKE %s",
                (prefix + "-%",),
            ).fetchall()
    except psycopg.OperationalError:
        return set()
    return {str(row[0]) for row in rows}


async def settle_audit_rows(
    database_url: str, prefix: str, owed: set[str], *, limit: float, quiet: float
) -> set[str]:
    """The scenario's rows once every owed one is there, or once their number has not
    changed for `quiet` seconds, or after `limit` seconds."""
    started = last_change = time.monotonic()
    last_count = -1
    while True:
        found = await asyncio.to_thread(audit_request_ids, database_url, prefix)
        now = time.monotonic()
        if owed <= found:
            return found
        if len(found) != last_count:
            last_count, last_change = len(found), now
        if now - last_change >= quiet or now - started >= limit:
            return found
        await asyncio.sleep(1.0)


def measure(
    result: ScenarioResult,
    traffic: Traffic,
    fault_end: float,
    recovered_at: float | None,
    found: set[str],
) -> None:
    """Fill `result` from the calls and the rows found (the caller adds its own notes)."""
    result.calls = len(traffic.calls)
    failures = traffic.failures()
    result.errors = len(failures)
    result.http_5xx += sum(1 for call in traffic.calls if (call.status or 0) >= 500)
    owed = {call.request_id for call in traffic.calls if call.answered}
    result.rows_lost = len(owed - found)
    if failures:
        result.recovery = "none" if recovered_at is None else f"{recovered_at - fault_end:.1f}"
        late = [call.ended - fault_end for call in failures if call.ended > fault_end]
        if late:
            result.notes.append(f"last failure answered {max(late):.1f} s after the fault ended")
        for kind, count in traffic.error_kinds():
            result.notes.append(f"{count} x {kind}")
    called = {call.request_id for call in traffic.calls}
    unanswered_rows = len(found & (called - owed))
    if unanswered_rows:
        result.notes.append(f"{unanswered_rows} rows for calls the client got no result for")
    malformed_rows = sum(1 for request_id in found if request_id.startswith(f"{traffic.prefix}-m"))
    if malformed_rows:
        result.notes.append(f"{malformed_rows} rows for malformed requests (tool errors)")


def write_calls(path: Path, traffic: Traffic, fault_start: float, fault_end: float) -> None:
    """Every call of the scenario as a JSON line, times in seconds from the fault's start
    (the fault ended at `fault_end`), for reading a result against the server logs."""
    with path.open("w") as out:
        out.write(json.dumps({"fault_start": 0.0, "fault_end": fault_end - fault_start}) + "\n")
        for call in traffic.calls:
            line = {
                **asdict(call),
                "started": round(call.started - fault_start, 3),
                "ended": round(call.ended - fault_start, 3),
                "wall_clock": _wall_clock(call.ended),
            }
            out.write(json.dumps(line) + "\n")


def _wall_clock(moment: float) -> str:
    """A monotonic moment as UTC wall-clock time, to match the server's log lines."""
    return datetime.fromtimestamp(time.time() - (time.monotonic() - moment), UTC).isoformat()


def render_table(results: list[ScenarioResult]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * (len(COLUMNS) - 1)]
    lines += ["| " + " | ".join(result.cells()) + " |" for result in results]
    return "\n".join(lines)


def render_notes(results: list[ScenarioResult]) -> str:
    lines = []
    for result in results:
        if result.notes:
            lines.append(f"- {result.title}: " + "; ".join(result.notes))
    return "\n".join(lines)


def write_latest(header: str, results: list[ScenarioResult]) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / "latest.md"
    body = f"{header}\n\n{render_table(results)}\n\n{render_notes(results)}\n"
    path.write_text(body)
    return path
