"""What `make bench` counts besides latency: Vault reads, Redis traffic, other processes' CPU.

Each counter is read before and after a phase by bench/phases.py; the difference, divided by
the calls made in between, is what the report shows per call.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.stack import Stack


def vault_reads(audit_log: Path, secret_path: str, offset: int) -> tuple[int, int]:
    """Read requests on `secret_path` logged after byte `offset`; returns (reads, new offset)."""
    if not audit_log.exists():
        return 0, offset
    with audit_log.open("rb") as handle:
        handle.seek(offset)
        data = handle.read()
    complete = data[: data.rfind(b"\n") + 1]
    reads = 0
    for line in complete.splitlines():
        entry = json.loads(line)
        request = entry.get("request") or {}
        if (
            entry.get("type") == "request"
            and request.get("operation") == "read"
            and str(request.get("path", "")).startswith(secret_path)
        ):
            reads += 1
    return reads, offset + len(complete)


def audit_log_size(audit_log: Path) -> int:
    return audit_log.stat().st_size if audit_log.exists() else 0


def redis_counters(redis_url: str) -> dict[str, int] | None:
    """Server-wide Redis counters: commands processed and connections accepted so far."""
    if not redis_url:
        return None
    import redis

    info = redis.Redis.from_url(redis_url, socket_timeout=3).info("stats")
    return {
        "commands": int(info["total_commands_processed"]),
        "connections": int(info["total_connections_received"]),
    }


def _machine_busy_ticks() -> int:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields[:8]) - fields[3] - fields[4]  # all but idle, iowait and guest


def _process_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime + stime


def _pids_named(*needles: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if any(needle.encode() in cmdline for needle in needles):
                pids.append(int(entry.name))
    return pids


class ForeignLoad:
    """How much CPU processes that are not part of the bench used during a measurement.

    The bench's own processes are the servers and simulator it started, its load generator
    (a waited-for child), the PostgreSQL backends of the bench database and redis-server. The
    rest of the machine's busy time is someone else's: a number well above zero means the
    row was measured on a shared, busy machine.
    """

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    def _ours(self) -> int:
        pids = {os.getpid(), self.stack.simulator.process.pid, self.stack.openbao.process.pid}
        for server in self.stack.processes:
            pids.add(server.process.process.pid)
            pids.update(server.workers())
        pids.update(_pids_named(f"postgres: 15/main: postgres {self.stack.database.name}"))
        pids.update(_pids_named(f"postgres: postgres {self.stack.database.name}"))
        pids.update(_pids_named("redis-server"))
        children = os.times()
        own = int((children.children_user + children.children_system) * os.sysconf("SC_CLK_TCK"))
        return own + sum(_process_ticks(pid) for pid in pids)

    def start(self) -> tuple[float, int, int]:
        return time.monotonic(), _machine_busy_ticks(), self._ours()

    def stop(self, started: tuple[float, int, int]) -> float:
        """Foreign CPU since `started`, in percent of one core."""
        began, busy, ours = started
        elapsed = max(time.monotonic() - began, 1e-3)
        foreign = (_machine_busy_ticks() - busy) - (self._ours() - ours)
        return max(foreign, 0) / os.sysconf("SC_CLK_TCK") / elapsed * 100
