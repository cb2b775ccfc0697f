"""The servers the tests start, and ways to look inside them.

`start_control_plane` runs the control plane in a uvicorn process of its own against the test
database; `PrivateRedis` is a Redis one test can stop, pause and restart. The rest read what
the simulator and Vault saw. The fixtures that start the shared servers are in conftest.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis
from django.conf import settings
from django.db import connection

from controlplane import tokens, vault
from controlplane.models import QontakCredential, Tenant
from devtools.devstack import ManagedProcess, free_port, wait_until_ready


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
        # Every test reaches it from 127.0.0.1: the session's unknown keys add up.
        "AUTH_FAILURES_PER_ADDRESS": "1000",
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
