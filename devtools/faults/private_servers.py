"""Redis and PostgreSQL of the fault run's own, so they can be killed, paused and stopped
without touching the machine's services.

Both listen on a free loopback port chosen once, so a restarted server is found where the
control plane expects it. PostgreSQL refuses to run as root: under root, `initdb` and `pg_ctl`
run as the `postgres` system user through `runuser`, which owns the data directory and the
server log; the run directory is made traversable for it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis

from bench.stack import spawn
from devtools.devstack import ManagedProcess, free_port

POSTGRES_SYSTEM_USER = "postgres"
PG_CTL_WAIT_SECONDS = 60


def executable(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"`{name}` is not on PATH; the fault run needs it")
    return found


def pause(pid: int) -> None:
    """SIGSTOP: the process keeps its sockets open but answers nothing (a hung server)."""
    os.kill(pid, signal.SIGSTOP)


def resume(pid: int) -> None:
    """SIGCONT; harmless for a process that is not stopped, or that has exited."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)


class RedisServer:
    """A redis-server without persistence: a restart after a kill starts empty, as a crashed
    cache would (rate-limit windows, refresh locks and pub/sub subscribers are gone)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.port = free_port()
        self.managed: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.managed is not None, "redis-server is not running"
        return self.managed.process.pid

    def running(self) -> bool:
        return self.managed is not None and self.managed.process.poll() is None

    def start(self) -> None:
        argv = [executable("redis-server"), "--bind", "127.0.0.1", "--port", str(self.port)]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(self.log_dir)]
        process = spawn("redis", argv, self.log_dir, dict(os.environ))
        self.managed = ManagedProcess("redis", self.url, process, self.log_dir / "redis.log")
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                raise RuntimeError("redis-server exited:\n" + self.managed.log_tail())
            try:
                client.ping()
                return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not answer within 10 s") from None
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL, as an out-of-memory kill would; the port is free again at once."""
        if self.managed is not None:
            self.managed.process.kill()
            self.managed.process.wait(timeout=10)

    def stop(self) -> None:
        if self.managed is not None:
            resume(self.pid)
            self.managed.stop()


class PostgresCluster:
    """A throw-away cluster (trust authentication, loopback TCP only, no Unix socket) that the
    scenarios stop with `pg_ctl stop -m fast` and start again on the same port."""

    def __init__(self, run_dir: Path, log_dir: Path) -> None:
        self.data_dir = run_dir / "pgdata"
        self.log_path = log_dir / "postgresql.log"
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        as_user = [executable("runuser"), "-u", POSTGRES_SYSTEM_USER, "--"]
        prefix = as_user if os.geteuid() == 0 else []
        return subprocess.run(  # noqa: S603 - argv is built here
            [*prefix, *argv],
            capture_output=True,
            text=True,
            timeout=PG_CTL_WAIT_SECONDS + 30,
            check=False,
            cwd="/",
        )

    def _checked(self, *argv: str) -> None:
        completed = self._run(*argv)
        if completed.returncode != 0:
            raise RuntimeError(
                f"{Path(argv[0]).name} failed ({completed.returncode}):\n"
                + (completed.stderr or completed.stdout)[-2000:]
                + "\n"
                + self._log_tail()
            )

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-15:])
        except OSError:
            return ""

    def init(self) -> None:
        self.data_dir.mkdir()
        self.log_path.touch()
        if os.geteuid() == 0:
            for path in (self.data_dir, self.log_path):
                shutil.chown(path, user=POSTGRES_SYSTEM_USER)
        self._checked(
            executable("initdb"),
            "--pgdata",
            str(self.data_dir),
            "--username",
            "postgres",
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories='' "
            "-c fsync=off -c full_page_writes=off -c max_connections=50"
        )
        self._checked(
            executable("pg_ctl"),
            "start",
            "--pgdata",
            str(self.data_dir),
            "--log",
            str(self.log_path),
            "--wait",
            "--timeout",
            str(PG_CTL_WAIT_SECONDS),
            "-o",
            options,
        )

    def running(self) -> bool:
        status = self._run(executable("pg_ctl"), "status", "--pgdata", str(self.data_dir))
        return status.returncode == 0

    def stop(self, mode: str = "fast") -> None:
        """`fast` ends every session (the control plane's connections break) and shuts down
        cleanly; it returns once the server is gone."""
        self._checked(
            executable("pg_ctl"),
            "stop",
            "--pgdata",
            str(self.data_dir),
            "--mode",
            mode,
            "--wait",
            "--timeout",
            str(PG_CTL_WAIT_SECONDS),
        )

    def destroy(self) -> None:
        if self.data_dir.exists() and self.running():
            self.stop(mode="immediate")
        shutil.rmtree(self.data_dir, ignore_errors=True)
