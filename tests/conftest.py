"""Session fixtures that start the real parts: OpenBao, the Qontak simulator, uvicorn.

Every server listens on a free loopback port and is stopped at the end of the session. The
control plane under test runs in its own uvicorn process against the test database, so tests
that talk to it use transactional_db (rows must be committed to be seen). The helpers these
fixtures use live in tests/servers.py (starting and inspecting servers) and tests/calls.py
(calling the control plane and waiting for its audit rows); tests import them from there.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from controlplane import credentials, gateway_credentials, policies, tenants, tokens, vault
from devtools.devstack import (
    ManagedProcess,
    create_simulator_account,
    create_simulator_hmac_account,
    start_openbao,
    start_simulator,
)
from tests.calls import ERAS, GATEWAY_CRM_USER, TenantWithKey, audit_barrier
from tests.servers import ControlPlaneServer, PrivateRedis, start_control_plane

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


@pytest.fixture(scope="session")
def simulator(log_dir: Path) -> Iterator[ManagedProcess]:
    server = start_simulator(log_dir)
    settings.QONTAK_BASE_URL = server.url
    yield server
    server.stop()


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

    def make(
        prefix: str = "t", qontak: ManagedProcess | None = None, gateway: bool = False
    ) -> TenantWithKey:
        """`gateway`: a Mekari API Gateway tenant (HMAC credential, a key acting as
        GATEWAY_CRM_USER) instead of a legacy OAuth one."""
        slug = f"{prefix}-{uuid.uuid4().hex[:8]}"
        qontak_url = (qontak or simulator).url
        if gateway:
            tenant = tenants.tenant_create(
                slug=slug, qontak_base_url=f"{qontak_url}/qontak/crm", auth="mekari-hmac"
            )
            client_id, secret = create_simulator_hmac_account(qontak_url, slug)
            credentials.store_hmac_credential(
                tenant=tenant, client_id=client_id, client_secret=secret
            )
        else:
            tenant = tenants.tenant_create(slug=slug, qontak_base_url=qontak_url)
            refresh_token = create_simulator_account(qontak_url, slug)
            credentials.store_refresh_token(tenant=tenant, refresh_token=refresh_token)
        issued = tenants.api_key_issue(
            tenant=tenant, label="test", qontak_user=GATEWAY_CRM_USER if gateway else ""
        )
        return TenantWithKey(tenant=tenant, key=issued.key, account=slug)

    yield make
    if wait_for_audit_rows is not None:
        wait_for_audit_rows()
    tokens.forget_cached_tokens()
    gateway_credentials._hmac_copies.clear()
    policies.forget_cached_policies()


@pytest.fixture(params=list(ERAS), ids=list(ERAS))
def era(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def private_redis(tmp_path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()
