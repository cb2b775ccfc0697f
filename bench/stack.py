"""The processes `make bench` measures and the counters it reads from them.

OpenBao, the simulator, the bench database and the uvicorn-served targets are started here on
loopback ports and stopped by `Stack.close`. Everything the control plane needs is seeded
through its operator commands (manage.py), as an operator would.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from devtools.devstack import (
    ManagedProcess,
    bao_executable,
    create_simulator_account,
    free_port,
    start_simulator,
    wait_until_ready,
)

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
KV_MOUNT = "secret"


def spawn(
    name: str, argv: list[str], log_dir: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    with (log_dir / f"{name}.log").open("ab") as log:
        return subprocess.Popen(  # noqa: S603 - argv is built by the bench
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=ROOT
        )


def start_openbao_with_audit(log_dir: Path) -> tuple[ManagedProcess, Path]:
    """An in-memory OpenBao dev server with a file audit device, which counts Vault reads.

    devstack.start_openbao cannot be reused here: OpenBao refuses to enable audit devices
    through the API, so the device is declared in a config file given with -config.
    """
    port = free_port()
    token = "dev-" + secrets.token_hex(16)
    audit_log = log_dir / "openbao-audit.log"
    config = log_dir / "openbao-audit.hcl"
    config.write_text(
        'audit "file" "bench" {\n  options {\n    file_path = "' + str(audit_log) + '"\n  }\n}\n'
    )
    argv = [
        bao_executable(),
        "server",
        "-dev",
        f"-dev-listen-address=127.0.0.1:{port}",
        f"-dev-root-token-id={token}",
        "-dev-no-store-token",
        f"-config={config}",
    ]
    process = spawn("openbao", argv, log_dir, dict(os.environ))
    managed = ManagedProcess(
        "openbao", f"http://127.0.0.1:{port}", process, log_dir / "openbao.log", {"token": token}
    )
    wait_until_ready(managed, f"{managed.url}/v1/sys/health")
    return managed, audit_log


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
            and request.get("path") == secret_path
        ):
            reads += 1
    return reads, offset + len(complete)


def audit_log_size(audit_log: Path) -> int:
    return audit_log.stat().st_size if audit_log.exists() else 0


@dataclass
class BenchDatabase:
    """A dedicated database: `bench_<pid>` on the PostgreSQL of DATABASE_URL, or SQLite."""

    url: str
    vendor: str
    name: str
    admin_url: str = ""

    @classmethod
    def create(cls, base_url: str, log_dir: Path) -> BenchDatabase:
        if not base_url.startswith(("postgres://", "postgresql://", "pgsql://")):
            path = log_dir / "bench.sqlite3"
            return cls(url=f"sqlite:///{path}", vendor="sqlite", name=str(path))
        import psycopg

        name = f"bench_{os.getpid()}"
        parts = urlsplit(base_url)
        admin_url = urlunsplit(parts._replace(scheme="postgresql"))
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = urlunsplit(parts._replace(path=f"/{name}"))
        return cls(url=url, vendor="postgresql", name=name, admin_url=admin_url)

    def url_through(self, host: str, port: int) -> str:
        """This database's URL with the server address replaced (for the wire counter)."""
        parts = urlsplit(self.url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = (userinfo + "@" if userinfo else "") + f"{host}:{port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def address(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        return parts.hostname or "127.0.0.1", parts.port or 5432

    def drop(self) -> None:
        if self.vendor != "postgresql":
            return
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.vendor == "postgresql":
            import psycopg

            admin = urlunsplit(urlsplit(self.admin_url)._replace(path=f"/{self.name}"))
            with psycopg.connect(admin, autocommit=True) as conn:
                return list(conn.execute(sql, params).fetchall())
        import sqlite3

        with sqlite3.connect(self.name, timeout=20) as conn:
            return list(conn.execute(sql, params).fetchall())

    def tool_call_outcomes(self) -> dict[str, int]:
        rows = self._query("SELECT outcome, COUNT(*) FROM controlplane_toolcall GROUP BY outcome")
        return {str(outcome): int(count) for outcome, count in rows}

    def server_counters(self) -> dict[str, int] | None:
        """PostgreSQL's own counters for this database (transactions, sessions opened)."""
        if self.vendor != "postgresql":
            return None
        rows = self._query(
            "SELECT xact_commit + xact_rollback, sessions FROM pg_stat_database WHERE datname = %s",
            (self.name,),
        )
        # This query is itself one transaction and one session on the bench database.
        return {"transactions": int(rows[0][0]), "sessions": int(rows[0][1])}


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


@dataclass
class Server:
    """A uvicorn-served target; `workers()` are the processes that answer requests."""

    name: str
    url: str
    process: ManagedProcess
    worker_count: int

    def workers(self) -> list[int]:
        parent = self.process.process.pid
        if self.worker_count == 1:
            return [parent]
        children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        pids = []
        for child in children:
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
                pids.append(int(child))
        return sorted(pids)

    def worker_rss_kib(self) -> dict[int, int]:
        rss = {}
        for pid in self.workers():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss[pid] = int(line.split()[1])
        return rss

    def connections_per_worker(self) -> dict[int, int]:
        """Established client connections each worker holds (how accept spread the load)."""
        port = int(urlsplit(self.url).port or 0)
        inodes_by_pid = {pid: _socket_inodes(pid) for pid in self.workers()}
        established = _established_inodes(port)
        return {pid: len(inodes & established) for pid, inodes in inodes_by_pid.items()}

    def stop(self) -> None:
        self.process.stop()


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _established_inodes(local_port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == local_port and fields[3] == "01":
                inodes.add(fields[9])
    return inodes


def serve(
    name: str,
    app: str,
    *,
    workers: int,
    serving: list[str],
    env: dict[str, str],
    log_dir: Path,
    probe: str,
) -> Server:
    port = free_port()
    argv = [PYTHON, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--workers", str(workers), *serving]
    process = spawn(name, argv, log_dir, env)
    managed = ManagedProcess(name, f"http://127.0.0.1:{port}", process, log_dir / f"{name}.log")
    wait_until_ready(managed, managed.url + probe, timeout=60)
    server = Server(name=name, url=managed.url, process=managed, worker_count=workers)
    deadline = time.monotonic() + 30
    while len(server.workers()) < workers and time.monotonic() < deadline:
        time.sleep(0.1)
    return server


@dataclass
class Stack:
    """OpenBao, the simulator, the bench database, a seeded tenant and the direct token."""

    log_dir: Path
    database: BenchDatabase
    redis_url: str
    openbao: ManagedProcess
    audit_log: Path
    simulator: ManagedProcess
    slug: str = ""
    api_key: str = ""
    access_token: str = ""
    processes: list[Server] = field(default_factory=list)
    secret_key: str = field(default_factory=lambda: "bench-" + secrets.token_hex(16))

    @property
    def secret_path(self) -> str:
        return f"{KV_MOUNT}/data/qontak/tenants/{self.slug}"

    def control_plane_env(self, database_url: str | None = None) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("VAULT_", "DATABASE_URL", "REDIS_URL", "QONTAK_"))
        }
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "controlplane.settings",
                "DATABASE_URL": database_url or self.database.url,
                "VAULT_ADDR": self.openbao.url,
                "VAULT_TOKEN": self.openbao.extra["token"],
                "VAULT_KV_MOUNT": KV_MOUNT,
                "QONTAK_BASE_URL": self.simulator.url,
                "DEBUG": "false",
                # Counted on every call like any limit, but never reached during the bench.
                "QONTAK_REQUEST_CEILING": "1000000/m",
                "SECRET_KEY": self.secret_key,
            }
        )
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        return env

    def bare_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "BENCH_QONTAK_URL": self.simulator.url,
            "BENCH_ACCESS_TOKEN": self.access_token,
        }

    def manage(self, *args: str, stdin: str | None = None) -> str:
        completed = subprocess.run(  # noqa: S603 - argv is built by the bench
            [PYTHON, "manage.py", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.control_plane_env(),
            cwd=ROOT,
            check=False,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"manage.py {args[0]} failed:\n{completed.stderr[-2000:]}")
        return completed.stdout

    def seed(self) -> None:
        """Migrate, then create the tenant, its token, its key and a rate limit never reached."""
        self.slug = f"bench-{os.getpid()}"
        self.manage("migrate", "--noinput")
        self.manage("create_tenant", self.slug, "--qontak-base-url", self.simulator.url)
        refresh_token = create_simulator_account(self.simulator.url, self.slug)
        self.manage("set_refresh_token", self.slug, stdin=refresh_token + "\n")
        self.api_key = self.manage("issue_api_key", self.slug, "--label", "bench").split()[-1]
        self.manage("set_rate_limit", self.slug, "1000000/m")
        direct = create_simulator_account(self.simulator.url, f"{self.slug}-direct")
        grant = httpx.post(
            f"{self.simulator.url}/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": direct},
            timeout=10,
        )
        grant.raise_for_status()
        self.access_token = str(grant.json()["access_token"])

    def close(self) -> None:
        for server in self.processes:
            server.stop()
        self.simulator.stop()
        self.openbao.stop()
        self.database.drop()


def start_stack(log_dir: Path, database_url: str, redis_url: str) -> Stack:
    database = BenchDatabase.create(database_url, log_dir)
    openbao: ManagedProcess | None = None
    try:
        openbao, audit_log = start_openbao_with_audit(log_dir)
        simulator = start_simulator(log_dir)
    except BaseException:
        if openbao is not None:
            openbao.stop()
        database.drop()
        raise
    return Stack(
        log_dir=log_dir,
        database=database,
        redis_url=redis_url,
        openbao=openbao,
        audit_log=audit_log,
        simulator=simulator,
    )
