"""The processes `make bench` measures: OpenBao, the simulator and the uvicorn-served targets.

They are started here on loopback ports and stopped by `Stack.close`, which also drops the
bench database. Everything the control plane needs is seeded through its operator commands
(manage.py), as an operator would.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from bench.database import BenchDatabase
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

BARE_APP = "bench.bare_server:application"
CONTROL_APP = "controlplane.asgi:application"
# The serving command measured for (b) and (c): the README's `uvicorn ... --workers N` with
# the event loop and HTTP parser named, so a missing uvloop fails at start instead of silently
# falling back to asyncio (which has the delayed-ACK multi-worker floor the asyncio row shows).
SERVING = ["--loop", "uvloop", "--http", "httptools", "--lifespan", "on"]
ASYNCIO_SERVING = ["--loop", "asyncio", "--http", "httptools", "--lifespan", "on"]


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
    person: str = "bench-person"
    person_password: str = field(default_factory=lambda: "bench-" + secrets.token_hex(16))
    processes: list[Server] = field(default_factory=list)
    secret_key: str = field(default_factory=lambda: "bench-" + secrets.token_hex(16))
    api_key_pepper: str = field(default_factory=lambda: "bench-" + secrets.token_hex(16))

    @property
    def secret_path(self) -> str:
        """The bench tenant's secret: the only one under qontak/tenants/ in its OpenBao."""
        return f"{KV_MOUNT}/data/qontak/tenants/"

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
                # Plain http to the simulator: allowed for a loopback host listed here.
                "QONTAK_ALLOWED_HOSTS": str(urlsplit(self.simulator.url).hostname),
                "DEBUG": "false",
                # Counted on every call like any limit, but never reached during the bench.
                "QONTAK_REQUEST_CEILING": "1000000/m",
                # The bench registers an OAuth client per server it starts.
                "OAUTH_REGISTRATION_RATE": "100000/h",
                "SECRET_KEY": self.secret_key,
                "API_KEY_PEPPER": self.api_key_pepper,
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
        self.manage("add_member", self.slug, self.person, stdin=self.person_password + "\n")
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
