"""Session fixtures that start the real parts: OpenBao, the Qontak simulator, uvicorn.

Every server listens on a free loopback port and is stopped at the end of the session. The
control plane under test runs in its own uvicorn process against the test database, so tests
that talk to it use transactional_db (rows must be committed to be seen).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import httpx2
import pytest
import redis
from django.conf import settings
from django.db import connection
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from controlplane import credentials, policies, tenants, tokens, vault
from controlplane.models import QontakCredential, Tenant, ToolCall
from devtools.devstack import (
    ManagedProcess,
    create_simulator_account,
    free_port,
    start_openbao,
    start_simulator,
    wait_until_ready,
)

if TYPE_CHECKING:
    from mcpserver.pipeline import Caller, ToolResult

T = TypeVar("T")

# Connections opened by in-process pipeline tests live on executor threads; closing them after
# each use lets pytest-django drop the PostgreSQL test database at the end. The servers the
# tests start keep the production default (persistent connections).
settings.DATABASES["default"]["CONN_MAX_AGE"] = 0
# Tenants here point at simulators on loopback (any port). pytest-django loaded the settings
# before this module, but the URL validator reads QONTAK_ALLOWED_HOSTS at each use; the
# servers the tests start get the same list in their environment (start_control_plane).
settings.QONTAK_ALLOWED_HOSTS = [*settings.QONTAK_ALLOWED_HOSTS, "127.0.0.1"]
# Commands the tests run in processes of their own (cron-like runs) read it from there.
os.environ["QONTAK_ALLOWED_HOSTS"] = ",".join(settings.QONTAK_ALLOWED_HOSTS)

# The official client's two ways in: the 2025-11-25 handshake era and the 2026-07-28 era.
ERAS = {"2025-11-25": "legacy", "2026-07-28": "2026-07-28"}


@pytest.fixture(scope="session", autouse=True)
def required_services_reachable() -> None:
    """With REDIS_URL set, Redis must answer: an unreachable service fails the run."""
    if settings.REDIS_URL:
        import redis

        try:
            redis.Redis.from_url(settings.REDIS_URL, socket_timeout=3).ping()
        except redis.RedisError as exc:
            pytest.fail(f"REDIS_URL is set but Redis is unreachable: {exc}", pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def close_executor_connections(django_db_setup: None) -> Iterator[None]:
    """In-process pipeline tests open a connection on asgiref's executor thread; close it
    before pytest-django drops the test database (PostgreSQL refuses while it is open)."""
    yield
    from asgiref.sync import sync_to_async
    from django.db import connections

    asyncio.run(sync_to_async(connections.close_all)())


@pytest.fixture
def operator(db: None) -> Any:
    """A Django test client logged in as a superuser, for admin pages."""
    from django.contrib.auth import get_user_model
    from django.test import Client as DjangoClient

    user = get_user_model().objects.create_superuser("operator", "op@example.com", "pw-123456")
    client = DjangoClient()
    client.force_login(user)
    return client


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("servers")


@pytest.fixture(scope="session")
def openbao(log_dir: Path) -> Iterator[ManagedProcess]:
    # Vault's own audit log lets tests count the requests the control plane makes.
    server = start_openbao(log_dir, audit_log=log_dir / "openbao-audit.log")
    settings.VAULT_ADDR = server.url
    settings.VAULT_TOKEN = server.extra["token"]
    vault.reset_client()
    yield server
    server.stop()


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


@pytest.fixture(scope="session")
def simulator(log_dir: Path) -> Iterator[ManagedProcess]:
    server = start_simulator(log_dir)
    settings.QONTAK_BASE_URL = server.url
    yield server
    server.stop()


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


@pytest.fixture(scope="session")
def control_plane(
    django_db_setup: None,
    django_db_blocker: Any,
    log_dir: Path,
    openbao: ManagedProcess,
    simulator: ManagedProcess,
) -> Iterator[ControlPlaneServer]:
    with django_db_blocker.unblock():
        server = start_control_plane(log_dir, openbao.url, openbao.extra["token"], simulator.url)
    yield server
    server.process.stop()


@pytest.fixture
def own_simulator(log_dir: Path) -> Iterator[ManagedProcess]:
    """A simulator of this test's own, so its faults and token lifetime touch nobody else."""
    server = start_simulator(log_dir)
    yield server
    server.stop()


@dataclass
class TenantWithKey:
    tenant: Any
    key: str
    account: str


@pytest.fixture
def make_tenant(
    request: pytest.FixtureRequest,
    transactional_db: None,
    openbao: ManagedProcess,
    simulator: ManagedProcess,
) -> Iterator[Callable[..., TenantWithKey]]:
    """A tenant with its own simulator account, a refresh token in Vault and an API key.

    With the shared control plane in use, the test ends only once the server has written its
    audit rows: a row written after the database is emptied would fail its foreign keys.
    """
    wait_for_audit_rows = (
        audit_barrier(request.getfixturevalue("control_plane"))
        if "control_plane" in request.fixturenames
        else None
    )

    def make(prefix: str = "t", qontak: ManagedProcess | None = None) -> TenantWithKey:
        slug = f"{prefix}-{uuid.uuid4().hex[:8]}"
        qontak_url = (qontak or simulator).url
        tenant = tenants.tenant_create(slug=slug, qontak_base_url=qontak_url)
        refresh_token = create_simulator_account(qontak_url, slug)
        credentials.store_refresh_token(tenant=tenant, refresh_token=refresh_token)
        issued = tenants.api_key_issue(tenant=tenant, label="test")
        return TenantWithKey(tenant=tenant, key=issued.key, account=slug)

    yield make
    if wait_for_audit_rows is not None:
        wait_for_audit_rows()
    tokens.forget_cached_tokens()
    policies.forget_cached_policies()


def audited_calls(
    tenant: Tenant, count: int, timeout: float = 5.0, **filters: Any
) -> list[ToolCall]:
    """The tenant's audit rows matching `filters`, oldest id first, once `count` are there.

    The server commits a call's row just after sending the response, so a test reading rows
    right after a call waits here; fewer than `count` rows after `timeout` seconds fail it.
    """
    deadline = time.monotonic() + timeout
    while True:
        rows = list(ToolCall.objects.filter(tenant=tenant, **filters).order_by("pk"))
        if len(rows) >= count:
            return rows
        if time.monotonic() >= deadline:
            found = [(row.tool, row.outcome) for row in rows]
            raise AssertionError(
                f"expected at least {count} audit rows for tenant {tenant.slug} matching "
                f"{filters} within {timeout} s; found {len(rows)}: {found}"
            )
        time.sleep(0.05)


def audit_barrier(server: ControlPlaneServer) -> Callable[[], None]:
    """A wait for every audit row the single-worker `server` has queued by the time it is
    called: the writer commits rows in order, so one more call's row is written last.

    Its tenant is created now, not when waiting: on SQLite, a transaction racing the
    server's audit writes can fail with "database is locked".
    """
    tenant = tenants.tenant_create(slug=f"barrier-{uuid.uuid4().hex[:8]}")
    key = tenants.api_key_issue(tenant=tenant).key

    def wait() -> None:
        with_mcp(server.mcp_url, key, "2026-07-28", lambda client: client.call_tool("barrier", {}))
        audited_calls(tenant, 1)

    return wait


def in_process_caller(prefix: str, request_id: str) -> Any:
    """A new tenant and key, as the pipeline sees them, for tests that run it in-process."""
    from mcpserver import pipeline

    tenant = tenants.tenant_create(slug=f"{prefix}-{uuid.uuid4().hex[:8]}")
    issued = tenants.api_key_issue(tenant=tenant)
    return pipeline.Caller(
        api_key_id=issued.api_key.pk,
        key_prefix=issued.api_key.prefix,
        read_only=False,
        tenant=tenant,
        request_id=request_id,
    )


async def run_tool_call_and_drain(
    caller: Caller, tool: str, arguments: dict[str, Any] | None
) -> ToolResult:
    """run_tool_call in-process, returning once its audit row is written (the pipeline hands
    the row to the audit writer and returns without waiting for it)."""
    from mcpserver import audit_writer, pipeline

    done = await pipeline.run_tool_call(caller, tool, arguments)
    await audit_writer.drain()
    assert done.audit_row_written.done()
    return done.result


@asynccontextmanager
async def mcp_client(url: str, key: str | None, era: str) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=60)) as http,
        Client(streamable_http_client(url, http_client=http), mode=ERAS[era]) as client,
    ):
        yield client


def with_mcp(url: str, key: str | None, era: str, action: Callable[[Client], Awaitable[T]]) -> T:
    """Run `action` with an official MCP client connected over HTTP, from sync test code."""

    async def run() -> T:
        async with mcp_client(url, key, era) as client:
            return await action(client)

    return asyncio.run(run())


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


@pytest.fixture(params=list(ERAS), ids=list(ERAS))
def era(request: pytest.FixtureRequest) -> str:
    return str(request.param)


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


@pytest.fixture
def private_redis(tmp_path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()
