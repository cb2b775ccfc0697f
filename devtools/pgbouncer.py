"""PgBouncer in transaction mode in front of a PostgreSQL, on a free loopback port: how `.ci/run`
proves the suite passes behind a pooler (README, Production notes).

    python -m devtools.pgbouncer [--upstream URL] -- COMMAND...

runs COMMAND with DATABASE_URL pointing through a private PgBouncer (its configuration, log and
pid file in a temporary directory) and DATABASE_POOLER=transaction, then stops PgBouncer and
exits with COMMAND's status. The upstream defaults to DATABASE_URL. Debian's pgbouncer is
installed with apt-get when missing (as root). Tests use `PgBouncer` to give one host a
database they can cut and restore.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

from devtools.debian import ensure_command
from devtools.devstack import ManagedProcess, free_port

STARTUP_TIMEOUT = 15.0


def _config(upstream: str, port: int, workdir: Path) -> str:
    parts = urlsplit(upstream)
    return f"""\
[databases]
; Any database name, the test suite's test_<name> included, goes to the same server.
* = host={parts.hostname or "127.0.0.1"} port={parts.port or 5432}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {workdir / "userlist.txt"}
pool_mode = transaction
max_client_conn = 1000
default_pool_size = 40
; Server connections idle for a second are closed: DROP DATABASE (the test database at the end
; of a run) waits up to 5 s for sessions on it to end, and PgBouncer's idle ones would not.
server_idle_timeout = 1
logfile = {workdir / "pgbouncer.log"}
pidfile = {workdir / "pgbouncer.pid"}
admin_users = {urlsplit(upstream).username or "postgres"}
"""


def _userlist(upstream: str) -> str:
    """PgBouncer's auth_file: trust still wants the user listed; its password is what
    PgBouncer logs in to PostgreSQL with."""
    parts = urlsplit(upstream)
    user = (parts.username or "postgres").replace('"', '""')
    password = (parts.password or "").replace('"', '""')
    return f'"{user}" "{password}"\n'


def _through(upstream: str, port: int) -> str:
    parts = urlsplit(upstream)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@127.0.0.1:{port}" if credentials else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


class PgBouncer:
    """A private PgBouncer in transaction mode in front of `upstream` (a postgres:// URL), its
    configuration, log and pid file in a temporary directory. Its port is chosen once, so
    stopped and started again it is found where its clients expect it: a test cuts one host's
    database this way while the others keep theirs."""

    def __init__(self, upstream: str) -> None:
        self.binary = ensure_command("pgbouncer", "pgbouncer")
        self.workdir = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
        self.port = free_port()
        self.url = _through(upstream, self.port)
        self.managed: ManagedProcess | None = None
        (self.workdir / "pgbouncer.ini").write_text(_config(upstream, self.port, self.workdir))
        (self.workdir / "userlist.txt").write_text(_userlist(upstream))
        self.argv = [self.binary, str(self.workdir / "pgbouncer.ini")]
        if os.geteuid() == 0:  # PgBouncer refuses to run as root
            user = "postgres" if _user_exists("postgres") else "nobody"
            shutil.chown(self.workdir, user)
            self.argv[1:1] = ["-u", user]

    def start(self) -> None:
        """Start it and return once it answers; raises RuntimeError with its log if it exits."""
        # Its log goes to the logfile as well: a pipe nobody read would fill and stall PgBouncer.
        process = subprocess.Popen(  # noqa: S603 - argv is built here
            self.argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        self.managed = ManagedProcess(
            "pgbouncer", self.url, process, self.workdir / "pgbouncer.log"
        )
        _wait_until_ready(self.managed)

    def stop(self) -> None:
        """SIGTERM, which Debian's PgBouncer (1.18) takes as an immediate shutdown: its clients'
        connections break at once."""
        if self.managed is not None:
            self.managed.stop()
            self.managed = None

    def remove(self) -> None:
        """Stop it and delete its directory."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextmanager
def running(upstream: str) -> Iterator[str]:
    """A PgBouncer in transaction mode in front of `upstream` (a postgres:// URL), stopped on
    exit; yields `upstream` with PgBouncer's host and port."""
    bouncer = PgBouncer(upstream)
    try:
        bouncer.start()
        yield bouncer.url
    finally:
        bouncer.remove()


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _wait_until_ready(bouncer: ManagedProcess) -> None:
    # PgBouncer accepts any database name: ask for "postgres", which every server has.
    probe = urlunsplit(urlsplit(bouncer.url)._replace(path="/postgres"))
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if bouncer.process.poll() is not None:
            raise RuntimeError(
                f"pgbouncer exited with status {bouncer.process.returncode}:\n" + bouncer.log_tail()
            )
        try:
            with psycopg.connect(probe, connect_timeout=2, autocommit=True) as connection:
                connection.execute("SELECT 1")
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", default=os.environ.get("DATABASE_URL", ""))
    parser.add_argument("command", nargs=argparse.REMAINDER)
    options = parser.parse_args()
    command = options.command[1:] if options.command[:1] == ["--"] else options.command
    if not options.upstream.startswith(("postgres://", "postgresql://")) or not command:
        parser.error("needs a postgres:// upstream (--upstream or DATABASE_URL) and a command")
    # A TERM (CI cancelled) unwinds through `running`, which stops PgBouncer.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with running(options.upstream) as url:
        print(f"pgbouncer (transaction mode) on {urlsplit(url).port}", flush=True)
        env = {**os.environ, "DATABASE_URL": url, "DATABASE_POOLER": "transaction"}
        # The command is this script's own caller's (CI), run as it asked.
        return subprocess.run(command, env=env, check=False).returncode  # noqa: S603


if __name__ == "__main__":
    sys.exit(main())
