"""A Redis that speaks only TLS and wants a password, with a CA of its own, on a free loopback
port: how `.ci/run` and the tests prove every Redis client works with `rediss://` (README,
Production notes).

    python -m devtools.tls_redis -- COMMAND...

runs COMMAND with REDIS_URL=rediss://:<password>@127.0.0.1:<port>/0 and REDIS_CA_FILE set,
then stops the server, deletes its keys and certificates and exits with COMMAND's status.
Debian's redis-server is built with TLS (`--tls-port`); the certificates come from openssl.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

from devtools.devstack import ManagedProcess, free_port

STARTUP_TIMEOUT = 15.0


@dataclass(frozen=True)
class TlsRedis:
    port: int
    password: str
    ca_file: Path

    @property
    def url(self) -> str:
        """The server's URL without the CA (clients take it from REDIS_CA_FILE or the
        `ssl_ca_certs` URL option)."""
        return f"rediss://:{self.password}@127.0.0.1:{self.port}/0"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(  # noqa: S603 - arguments are built here
        ["openssl", *args],  # noqa: S607 - openssl from PATH, as an operator would
        cwd=cwd,
        check=True,
        capture_output=True,
        timeout=60,
    )


def make_certificates(directory: Path) -> None:
    """ca.pem, and server.pem/server.key it signed for 127.0.0.1 and localhost."""
    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *curve, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=qontak-mcp test CA", cwd=directory)  # fmt: skip
    _openssl("req", "-new", *curve, "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=127.0.0.1", cwd=directory)  # fmt: skip
    (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san.cnf",
             cwd=directory)  # fmt: skip


@contextmanager
def running(workdir: Path | None = None) -> Iterator[TlsRedis]:
    """A TLS-only, password-protected redis-server without persistence, stopped on exit."""
    directory = Path(tempfile.mkdtemp(prefix="tls-redis-", dir=workdir))
    make_certificates(directory)
    server = TlsRedis(free_port(), secrets.token_hex(16), directory / "ca.pem")
    config = directory / "redis.conf"  # the password stays off the command line
    config.write_text(
        f"port 0\ntls-port {server.port}\nbind 127.0.0.1\n"
        f"tls-cert-file {directory / 'server.pem'}\ntls-key-file {directory / 'server.key'}\n"
        f"tls-ca-cert-file {server.ca_file}\ntls-auth-clients no\n"
        f'requirepass "{server.password}"\nsave ""\nappendonly no\ndir {directory}\n'
        f"logfile {directory / 'redis.log'}\n"
    )
    process = subprocess.Popen(  # noqa: S603 - argv is built here
        ["redis-server", str(config)],  # noqa: S607 - redis-server from PATH, as PrivateRedis
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    # Its URL without the password: ManagedProcess may be printed.
    address = f"rediss://127.0.0.1:{server.port}"
    managed = ManagedProcess("redis-server (TLS)", address, process, directory / "redis.log")
    try:
        _wait_until_ready(managed, server)
        yield server
    finally:
        managed.stop()
        shutil.rmtree(directory, ignore_errors=True)


def _wait_until_ready(managed: ManagedProcess, server: TlsRedis) -> None:
    client = redis.Redis.from_url(server.url, ssl_ca_certs=str(server.ca_file), socket_timeout=2)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if managed.process.poll() is not None:
            raise RuntimeError(
                f"redis-server (TLS) exited with status {managed.process.returncode}:\n"
                + managed.log_tail()
            )
        try:
            client.ping()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
        finally:
            client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs=argparse.REMAINDER)
    command = parser.parse_args().command
    command = command[1:] if command[:1] == ["--"] else command
    if not command:
        parser.error("needs a command to run")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with running() as server:
        print(f"redis-server (TLS, password) on {server.port}", flush=True)
        env = {**os.environ, "REDIS_URL": server.url, "REDIS_CA_FILE": str(server.ca_file)}
        # The command is this script's own caller's (CI), run as it asked.
        return subprocess.run(command, env=env, check=False).returncode  # noqa: S603


if __name__ == "__main__":
    sys.exit(main())
