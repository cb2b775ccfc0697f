"""Everything a fault run talks to, started on loopback and registered for stopping.

The bench's stack (bench.stack: OpenBao, the simulator, a database of its own, a tenant seeded
through manage.py) runs here against the run's private Redis and PostgreSQL, with the control
plane served by two uvicorn workers as the README's serving command says.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.stack import CONTROL_APP, SERVING, Server, Stack, serve, start_stack
from devtools.faults.private_servers import PostgresCluster, RedisServer, resume

WORKERS = 2


@dataclass
class FaultStack:
    run_dir: Path
    redis: RedisServer
    postgres: PostgresCluster
    bench: Stack
    control_plane: Server

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def mcp_url(self) -> str:
        return self.control_plane.url + "/mcp"

    @property
    def database_url(self) -> str:
        return self.bench.database.url

    @property
    def openbao_pid(self) -> int:
        return self.bench.openbao.process.pid

    @property
    def simulator_url(self) -> str:
        return self.bench.simulator.url

    def set_simulator_faults(self, **payload: Any) -> dict[str, Any]:
        """POST /_simulator/faults (devtools/simulator/state.py, apply_faults)."""
        answer = httpx.post(f"{self.simulator_url}/_simulator/faults", json=payload, timeout=5)
        answer.raise_for_status()
        faults: dict[str, Any] = answer.json()
        return faults

    def simulator_faults(self) -> dict[str, Any]:
        answer = httpx.get(f"{self.simulator_url}/_simulator/faults", timeout=5)
        answer.raise_for_status()
        faults: dict[str, Any] = answer.json()
        return faults

    def clear_simulator_faults(self) -> None:
        httpx.delete(f"{self.simulator_url}/_simulator/faults", timeout=5).raise_for_status()

    def simulator_refresh_count(self) -> int:
        """How many refresh grants the tenant's simulator account has answered."""
        answer = httpx.get(f"{self.simulator_url}/_simulator/accounts/{self.bench.slug}", timeout=5)
        answer.raise_for_status()
        return int(answer.json()["refresh_count"])


def _attempt(step: Callable[[], object]) -> Callable[[], None]:
    """A cleanup step that cannot stop the steps after it (each is best effort)."""

    def run() -> None:
        with suppress(Exception):
            step()

    return run


def start_fault_stack(run_dir: Path, log_dir: Path, cleanup: ExitStack) -> FaultStack:
    """Start the private servers, migrate and seed, then serve the control plane. Every process
    is registered on `cleanup` as soon as it exists, so a failure (or Ctrl-C) half-way stops
    what was started."""
    redis_server = RedisServer(log_dir)
    cleanup.callback(_attempt(redis_server.stop))
    redis_server.start()

    postgres = PostgresCluster(run_dir, log_dir)
    cleanup.callback(_attempt(postgres.destroy))
    postgres.init()
    postgres.start()

    bench = start_stack(log_dir, postgres.url, redis_server.url)
    cleanup.callback(_attempt(bench.openbao.stop))
    cleanup.callback(_attempt(lambda: resume(bench.openbao.process.pid)))
    cleanup.callback(_attempt(bench.simulator.stop))
    # The seed's tenant is named after this process; the rate limit it sets is never reached.
    bench.seed()

    env = bench.control_plane_env()
    env["AUDIT_SPOOL_DIR"] = str(run_dir / "audit-spool")
    control_plane = serve(
        "controlplane",
        CONTROL_APP,
        workers=WORKERS,
        serving=SERVING,
        env=env,
        log_dir=log_dir,
        probe="/healthz",
    )
    cleanup.callback(_attempt(control_plane.stop))
    stack = FaultStack(run_dir, redis_server, postgres, bench, control_plane)
    asyncio.run(official_client_check(stack))
    return stack


async def official_client_check(stack: FaultStack) -> None:
    """One call through the official MCP client (2026-07-28 era): the raw requests the
    callers send copy its bytes (bench.load_driver.TOOL_CALL); this proves the server still
    answers the client itself."""
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {stack.bench.api_key}"})
    transport = streamable_http_client(stack.mcp_url, http_client=http)
    async with http, Client(transport, mode="2026-07-28") as client:
        result = await client.call_tool("get_contact", {"id": 1})
    if result.is_error:
        raise RuntimeError(f"the official client's get_contact failed: {result.content}")


def log_directory(run_dir: Path) -> Path:
    """The run's log directory (FaultStack.log_dir), made reachable for the postgres user."""
    log_dir = run_dir / "logs"
    log_dir.mkdir()
    # The postgres system user writes its log here and keeps its data dir beside it: it may
    # pass through both directories (not list them).
    os.chmod(run_dir, 0o711)  # noqa: S103
    os.chmod(log_dir, 0o711)  # noqa: S103
    return log_dir
