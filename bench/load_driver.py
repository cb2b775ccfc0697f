"""What `make bench` sends and what sends it: one MCP tool call, and wrk or bench/loadgen.py.

Both generators print one `BENCH_JSON {...}` line with the same fields (requests, duration,
error counts, latency percentiles in microseconds); `LoadDriver` returns it as a dict.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

from bench.stack import PYTHON, ROOT

LUA = ROOT / "bench" / "load.lua"

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
