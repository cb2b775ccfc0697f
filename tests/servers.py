"""The servers the tests start, and ways to look inside them.

`start_control_plane` runs the control plane in a uvicorn process of its own against the test
database, and `dedicated_control_plane` does so for a module's fixture that needs settings of
its own; `PrivateRedis` is a Redis one test can stop, pause and restart, and `private_pooler` a
way to cut one host's database. The rest read what the simulator and Vault saw. The fixtures
that start the shared servers are in conftest.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from django.conf import settings
from django.db import connection

from controlplane import tokens, vault
from controlplane.models import QontakCredential, Tenant
from devtools.devstack import ManagedProcess, free_port, wait_until_ready
from devtools.pgbouncer import PgBouncer


def _test_database_url() -> str:
    params = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{params['NAME']}"
    auth = params["USER"] + (f":{params['PASSWORD']}" if params["PASSWORD"] else "")
    host = f"{params['HOST'] or '127.0.0.1'}:{params['PORT'] or 5432}"
    return f"postgres://{auth}@{host}/{params['NAME']}"


@dataclass
class ControlPlaneServer:
    url: str
    process: ManagedProcess

    @property
    def mcp_url(self) -> str:
        return f"{self.url}/mcp"

    def log_text(self) -> str:
        return self.process.log_path.read_text(errors="replace")


def start_control_plane(
    log_dir: Path,
    vault_url: str,
    vault_token: str,
    simulator_url: str,
    workers: int = 1,
    **settings_env: str,
) -> ControlPlaneServer:
    """uvicorn serving the ASGI app against the test database, in its own process;
    `settings_env` overrides environment settings (e.g. REDIS_URL)."""
    port = free_port()
    env = {
        "DJANGO_SETTINGS_MODULE": "controlplane.settings",
        "DATABASE_URL": _test_database_url(),
        "VAULT_ADDR": vault_url,
        "VAULT_TOKEN": vault_token,
        "VAULT_TIMEOUT": "2",
        "QONTAK_BASE_URL": simulator_url,
        "QONTAK_ALLOWED_HOSTS": ",".join(settings.QONTAK_ALLOWED_HOSTS),
        "LOG_LEVEL": "DEBUG",
        "AUDIT_SPOOL_DIR": str(log_dir / f"audit-spool-{port}"),
        # Every test reaches it from 127.0.0.1: the session's unknown keys add up, and so do
        # client registrations, counted in the shared cache across runs of the hour.
        "AUTH_FAILURES_PER_ADDRESS": "1000",
        "OAUTH_REGISTRATION_RATE": "100000/h",
        **settings_env,
    }
    name = f"controlplane-{port}"
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "controlplane.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--lifespan",
                "on",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env},
        )
    managed = ManagedProcess(name, f"http://127.0.0.1:{port}", process, log_path)
    wait_until_ready(managed, f"{managed.url}/healthz")
    return ControlPlaneServer(url=managed.url, process=managed)


@contextmanager
def dedicated_control_plane(
    request: pytest.FixtureRequest, workers: int = 1, **settings_env: str
) -> Iterator[ControlPlaneServer]:
    """A control plane of a module's own, for settings the shared `control_plane` must not
    have (`settings_env`, as for `start_control_plane`), stopped on exit. It takes the test
    database, OpenBao and the simulator from `request`'s session fixtures."""
    request.getfixturevalue("django_db_setup")
    blocker = request.getfixturevalue("django_db_blocker")
    openbao: ManagedProcess = request.getfixturevalue("openbao")
    simulator: ManagedProcess = request.getfixturevalue("simulator")
    with blocker.unblock():
        server = start_control_plane(
            request.getfixturevalue("log_dir"),
            openbao.url,
            openbao.extra["token"],
            simulator.url,
            workers,
            **settings_env,
        )
    try:
        yield server
    finally:
        server.process.stop()


def tenant_secret(tenant: Tenant) -> vault.TenantSecret | None:
    """What Vault holds for the tenant now."""
    return vault.read_secret(tokens.secret_ref(QontakCredential.objects.get(tenant=tenant)))


def vault_reads(openbao: ManagedProcess, tenant: Tenant) -> int:
    """How many times Vault has answered a read of the tenant's token secret."""
    credential = QontakCredential.objects.get(tenant=tenant)
    path = f"{credential.vault_mount}/data/{credential.vault_path}"
    count = 0
    with open(openbao.extra["audit_log"]) as log:
        for line in log:
            entry = json.loads(line)
            request = entry.get("request", {})
            if entry.get("type") == "response" and request.get("path") == path:
                count += request.get("operation") == "read"
    return count


def simulator_account(simulator: ManagedProcess, account: str) -> dict[str, Any]:
    response = httpx.get(f"{simulator.url}/_simulator/accounts/{account}")
    response.raise_for_status()
    details: dict[str, Any] = response.json()
    return details


def set_simulator_faults(simulator: ManagedProcess, **faults: Any) -> None:
    httpx.post(f"{simulator.url}/_simulator/faults", json=faults).raise_for_status()


def simulator_requests(simulator: ManagedProcess, account: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{simulator.url}/_simulator/requests", params={"account": account})
    response.raise_for_status()
    records: list[dict[str, Any]] = response.json()
    return records


class PrivateRedis:
    """A Redis of one test's own, so it can be stopped, paused and restarted on its port."""

    def __init__(self, workdir: Path, password: str = "", db: int = 0) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.password = password
        self.db = db
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        credentials = f":{self.password}@" if self.password else ""
        return f"redis://{credentials}127.0.0.1:{self.port}/{self.db}"

    def start(self) -> None:
        argv = ["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no"]
        if self.password:
            argv += ["--requirepass", self.password]
        self.process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.workdir
        )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()

    def publish_change(self) -> None:
        redis.Redis.from_url(self.url).publish("changes", b"")


@contextmanager
def private_pooler() -> Iterator[PgBouncer]:
    """A PgBouncer of one test's own in front of the PostgreSQL test database: a host given its
    `url` (with DATABASE_POOLER=transaction) loses its database when the test stops it, and
    finds it again on the same port when the test starts it."""
    pooler = PgBouncer(_test_database_url())
    try:
        pooler.start()
        yield pooler
    finally:
        pooler.remove()


@dataclass
class LoadBalancer:
    """HAProxy in front of several control-plane hosts (round robin, readiness checks on
    /readyz); each answer names the host that served it in `X-Served-By`."""

    url: str
    stats_url: str
    process: ManagedProcess

    @property
    def mcp_url(self) -> str:
        return f"{self.url}/mcp"

    def servers(self) -> dict[str, dict[str, str]]:
        """HAProxy's statistics row of each host, by name (`status` is UP or DOWN, `hrsp_2xx`
        and `hrsp_4xx` count the answers it gave through the balancer)."""
        response = httpx.get(f"{self.stats_url};csv", timeout=5)
        response.raise_for_status()
        header, *rows = response.text.lstrip("# ").splitlines()
        names = header.split(",")
        parsed = [dict(zip(names, row.split(","), strict=False)) for row in rows]
        return {
            row["svname"]: row
            for row in parsed
            if row.get("pxname") == "hosts" and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def answers(self) -> dict[str, int]:
        """How many HTTP answers each host has given through the balancer so far."""
        return {
            name: sum(int(row[f"hrsp_{kind}"] or 0) for kind in ("1xx", "2xx", "3xx", "4xx", "5xx"))
            for name, row in self.servers().items()
        }

    def wait_for_status(self, host: str, status: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while (current := self.servers()[host]["status"]) != status:
            assert time.monotonic() < deadline, f"HAProxy kept {host} {current}, not {status}"
            time.sleep(0.1)


def start_haproxy(log_dir: Path, hosts: dict[str, str]) -> LoadBalancer:
    """Debian's HAProxy (installed with apt-get when missing) on a free loopback port, balancing
    round robin over `hosts` (name -> http://host:port). A host leaves the rotation after two
    failed /readyz checks and returns after two good ones; websockets pass through. When no
    host is ready, every host gets requests anyway: the control plane serves through a database
    or Vault outage, so turning everyone away would be worse."""
    from devtools.debian import ensure_command

    binary = ensure_command("haproxy", "haproxy")
    port, stats_port = free_port(), free_port()
    name = f"haproxy-{port}"
    servers = "\n".join(
        f"    server {host} {url.removeprefix('http://')} check" for host, url in hosts.items()
    )
    unchecked = "\n".join(
        f"    server {host} {url.removeprefix('http://')}" for host, url in hosts.items()
    )
    config = log_dir / f"{name}.cfg"
    config.write_text(
        f"""\
global
    maxconn 512

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    # /readyz answers within 2 s however stuck a dependency is.
    timeout check 3s

frontend mcp
    bind 127.0.0.1:{port}
    use_backend hosts if {{ nbsrv(hosts) gt 0 }}
    default_backend every_host

backend hosts
    balance roundrobin
    # Round robin over client connections, not requests: a connection's requests stick to
    # the host of its first (each official-client call opens one and sends two or more), so
    # successive calls alternate between the hosts.
    stick-table type integer size 100k expire 1m
    stick on src_port
    option httpchk
    http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host 127.0.0.1
    http-check expect status 200
    default-server inter 500ms fall 2 rise 2
    http-response set-header X-Served-By %s
{servers}

backend every_host
    balance roundrobin
    stick-table type integer size 100k expire 1m
    stick on src_port
    http-response set-header X-Served-By %s
{unchecked}

listen stats
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /stats
"""
    )
    process = subprocess.Popen(
        [binary, "-db", "-f", str(config)],
        stdout=(log_dir / f"{name}.log").open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    managed = ManagedProcess(name, f"http://127.0.0.1:{port}", process, log_dir / f"{name}.log")
    balancer = LoadBalancer(managed.url, f"http://127.0.0.1:{stats_port}/stats", managed)
    wait_until_ready(managed, f"{balancer.stats_url};csv")
    for host in hosts:
        balancer.wait_for_status(host, "UP")
    return balancer
