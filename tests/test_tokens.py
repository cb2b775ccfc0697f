"""Qontak tokens in Vault: the warm cache, single-flight refresh, 401 retry, Vault outages,
invalid_grant, and rotate_tokens, all against real OpenBao and the simulator over HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import httpx2
import pytest
from django.conf import settings
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from controlplane import tokens, vault
from controlplane.models import QontakCredential, Tenant
from devtools.devstack import SealedVault, free_port, start_simulator
from tests.calls import audited_calls, with_mcp
from tests.servers import (
    ControlPlaneServer,
    _test_database_url,
    set_simulator_faults,
    simulator_account,
    simulator_requests,
    start_control_plane,
    tenant_secret,
    vault_reads,
)


@pytest.mark.parametrize(
    ("lifetime", "margin"),
    [(21600, 300), (3000, 300), (600, 60), (10, 1), (0, 0)],
)
def test_refresh_margin_is_a_tenth_of_the_lifetime_capped_at_five_minutes(lifetime, margin):
    assert tokens.refresh_margin(lifetime) == margin


async def _get_contact(client: Client) -> Any:
    return await client.call_tool("get_contact", {"id": 1})


def test_warm_tool_calls_make_no_vault_request(control_plane, make_tenant, openbao):
    demo = make_tenant()

    async def calls(client: Client) -> list[Any]:
        return [await client.call_tool("get_contact", {"id": 1}) for _ in range(20)]

    with_mcp(control_plane.mcp_url, demo.key, "2026-07-28", _get_contact)  # warms the cache
    before = vault_reads(openbao, demo.tenant)
    results = with_mcp(control_plane.mcp_url, demo.key, "2026-07-28", calls)
    assert not any(result.is_error for result in results)
    assert vault_reads(openbao, demo.tenant) == before


def test_a_qontak_401_triggers_one_refresh_and_one_retry_never_a_loop(
    control_plane, make_tenant, own_simulator
):
    demo = make_tenant(qontak=own_simulator)
    with_mcp(control_plane.mcp_url, demo.key, "legacy" and "2025-11-25", _get_contact)
    start = simulator_account(own_simulator, demo.account)["refresh_count"]

    set_simulator_faults(own_simulator, fail_next={"status": 401, "count": 1})
    recovered = with_mcp(control_plane.mcp_url, demo.key, "2025-11-25", _get_contact)
    assert not recovered.is_error
    assert simulator_account(own_simulator, demo.account)["refresh_count"] == start + 1

    set_simulator_faults(own_simulator, fail_next={"status": 401, "count": 5})
    refused = with_mcp(control_plane.mcp_url, demo.key, "2025-11-25", _get_contact)
    assert refused.is_error and "HTTP 401" in refused.content[0].text
    assert simulator_account(own_simulator, demo.account)["refresh_count"] == start + 2
    api_calls = [r for r in simulator_requests(own_simulator, demo.account) if "/api/" in r["path"]]
    assert len(api_calls) == 1 + 2 + 2  # warm-up, 401 + retry, 401 + retry: no third try


def test_invalid_grant_marks_the_tenant_for_reauthorization_and_calls_say_so(
    control_plane, make_tenant, own_simulator
):
    demo = make_tenant(qontak=own_simulator)
    with_mcp(control_plane.mcp_url, demo.key, "2026-07-28", _get_contact)
    set_simulator_faults(
        own_simulator, revoke_refresh_token=demo.account, expire_access_tokens=True
    )

    async def twice(client: Client) -> list[Any]:
        return [await _get_contact(client), await _get_contact(client)]

    results = with_mcp(control_plane.mcp_url, demo.key, "2026-07-28", twice)
    for result in results:
        assert result.is_error
        assert "re-authoriz" in result.content[0].text
        assert "set_refresh_token" in result.content[0].text
    credential = QontakCredential.objects.get(tenant=demo.tenant)
    assert credential.status == QontakCredential.Status.NEEDS_REAUTHORIZATION
    assert "invalid_grant" in credential.last_error
    outcomes = [row.outcome for row in audited_calls(demo.tenant, 3)]  # warm-up + twice
    assert outcomes[-2:] == ["unavailable", "unavailable"]
    token_requests = [
        r for r in simulator_requests(own_simulator, demo.account) if r["path"] == "/oauth/token"
    ]
    assert len(token_requests) == 2, "the rejected token was tried again"  # store + one refresh


def test_fifty_concurrent_calls_at_expiry_across_two_workers_refresh_once(
    log_dir, openbao, make_tenant
):
    ttl = 3.0
    simulator = start_simulator(log_dir, access_token_ttl=ttl)
    server = start_control_plane(
        log_dir, openbao.url, openbao.extra["token"], simulator.url, workers=2
    )
    try:
        demo = make_tenant(qontak=simulator)
        secret = tenant_secret(demo.tenant)
        assert secret is not None
        time.sleep(max(secret.expires_at - time.time(), 0) + 0.3)
        before = simulator_account(simulator, demo.account)

        async def one_call() -> Any:
            headers = {"Authorization": f"Bearer {demo.key}"}
            async with (
                httpx2.AsyncClient(headers=headers, timeout=60) as http,
                Client(
                    streamable_http_client(server.mcp_url, http_client=http), mode="2026-07-28"
                ) as client,
            ):
                return await _get_contact(client)

        async def fifty() -> list[Any]:
            return await asyncio.gather(*(one_call() for _ in range(50)))

        results = asyncio.run(fifty())
        errors = [r.content[0].text for r in results if r.is_error]
        assert errors == []
        after = simulator_account(simulator, demo.account)
        assert after["refresh_count"] == before["refresh_count"] + 1
        assert after["stale_refresh_attempts"] == 0
        stored = tenant_secret(demo.tenant)
        assert stored is not None and stored.refresh_token == after["refresh_token"]
        assert len(audited_calls(demo.tenant, 50, outcome="ok")) == 50
    finally:
        server.process.stop()
        simulator.stop()


@contextmanager
def vault_settings(url: str, token: str) -> Iterator[None]:
    """Point this test process's services at another Vault for a while."""
    previous = settings.VAULT_ADDR, settings.VAULT_TOKEN
    settings.VAULT_ADDR, settings.VAULT_TOKEN = url, token
    vault.reset_client()
    try:
        yield
    finally:
        settings.VAULT_ADDR, settings.VAULT_TOKEN = previous
        vault.reset_client()


def test_vault_outage_keeps_warm_tenants_working_and_others_get_a_clear_error(
    log_dir, tmp_path, simulator, make_tenant
):
    bao = SealedVault(data_dir=tmp_path / "bao", log_dir=log_dir, port=free_port())
    bao.start()
    server: ControlPlaneServer | None = None
    try:
        server = start_control_plane(log_dir, bao.url, bao.root_token, simulator.url)
        with vault_settings(bao.url, bao.root_token):
            warm = make_tenant("warm")
            cold = make_tenant("cold")
        assert not with_mcp(server.mcp_url, warm.key, "2026-07-28", _get_contact).is_error
        cold_refreshes = simulator_account(simulator, cold.account)["refresh_count"]

        bao.stop()
        health = httpx.get(server.url + "/readyz")
        assert health.status_code == 503
        assert health.json()["checks"]["vault"]["ok"] is False
        assert not with_mcp(server.mcp_url, warm.key, "2026-07-28", _get_contact).is_error
        refused = with_mcp(server.mcp_url, cold.key, "2026-07-28", _get_contact)
        assert refused.is_error
        assert "credential store unavailable" in refused.content[0].text
        assert [row.outcome for row in audited_calls(cold.tenant, 1)] == ["unavailable"]
        # Nothing half-written: Qontak was never asked to rotate the cold tenant's token.
        assert simulator_account(simulator, cold.account)["refresh_count"] == cold_refreshes

        bao.start()
        # Cold fetches fail at once for a few seconds after Vault stopped answering.
        deadline = time.monotonic() + vault.QUIET_SECONDS + 5
        while with_mcp(server.mcp_url, cold.key, "2026-07-28", _get_contact).is_error:
            assert time.monotonic() < deadline, "calls did not recover after Vault returned"
            time.sleep(0.5)
    finally:
        if server is not None:
            server.process.stop()
        bao.stop()


def _secret(slug: str) -> vault.TenantSecret:
    secret = tenant_secret(Tenant.objects.get(slug=slug))
    assert secret is not None
    return secret


def _rotate(*args: str) -> subprocess.CompletedProcess[str]:
    """rotate_tokens in its own process, as cron would run it."""
    env = {
        **os.environ,
        "DATABASE_URL": _test_database_url(),
        "VAULT_ADDR": settings.VAULT_ADDR,
        "VAULT_TOKEN": settings.VAULT_TOKEN,
    }
    return subprocess.run(
        [sys.executable, "manage.py", "rotate_tokens", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def _actions(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    return {t["slug"]: t["action"] for t in json.loads(result.stdout)["tenants"]}


def test_rotate_tokens_dry_run_changes_nothing(make_tenant, simulator):
    demo = make_tenant()
    version = _secret(demo.tenant.slug).version
    result = _rotate("--tenant", demo.tenant.slug, "--force", "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    assert _actions(result) == {demo.tenant.slug: "would_rotate"}
    assert _secret(demo.tenant.slug).version == version
    assert simulator_account(simulator, demo.account)["refresh_count"] == 1


def test_rotate_tokens_leaves_fresh_tokens_alone_without_force(make_tenant, simulator):
    demo = make_tenant()
    result = _rotate("--tenant", demo.tenant.slug, "--json")
    assert _actions(result) == {demo.tenant.slug: "fresh"}
    assert simulator_account(simulator, demo.account)["refresh_count"] == 1


def test_two_concurrent_forced_runs_rotate_each_tenant_once(make_tenant, own_simulator):
    simulator = own_simulator
    first, second = make_tenant("rot", qontak=simulator), make_tenant("rot", qontak=simulator)
    # A slow token endpoint keeps both runs overlapping, as on two hosts started by cron: the
    # second must read the secrets' versions before the first finishes a rotation, and its
    # start may lag the first's by seconds on a busy 2-core machine (1.5 s was not enough).
    set_simulator_faults(simulator, latency_ms=4000)
    env_args = ("--force", "--json")
    runs = [
        subprocess.Popen(
            [sys.executable, "manage.py", "rotate_tokens", *env_args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={
                **os.environ,
                "DATABASE_URL": _test_database_url(),
                "VAULT_ADDR": settings.VAULT_ADDR,
                "VAULT_TOKEN": settings.VAULT_TOKEN,
            },
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert all(run.returncode == 0 for run in runs), outputs
    for demo in (first, second):
        account = simulator_account(simulator, demo.account)
        assert account["refresh_count"] == 2  # store + exactly one rotation
        assert account["stale_refresh_attempts"] == 0
        assert _secret(demo.tenant.slug).refresh_token == account["refresh_token"]
        actions = sorted(
            t["action"]
            for out, _ in outputs
            for t in json.loads(out)["tenants"]
            if t["slug"] == demo.tenant.slug
        )
        assert actions == ["fresh", "rotated"]


def test_rotate_tokens_reports_invalid_grant_and_exits_non_zero(make_tenant, simulator):
    healthy, broken = make_tenant("ok"), make_tenant("broken")
    set_simulator_faults(simulator, revoke_refresh_token=broken.account)
    result = _rotate("--force")
    assert result.returncode == 1
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert "rotated" in lines[healthy.tenant.slug]
    assert "failed" in lines[broken.tenant.slug]
    assert "re-authorize in Qontak" in lines[broken.tenant.slug]


def test_rotate_tokens_shows_progress_on_a_terminal(make_tenant):
    import pty

    demo = make_tenant()
    leader, follower = pty.openpty()
    env = {
        **os.environ,
        "DATABASE_URL": _test_database_url(),
        "VAULT_ADDR": settings.VAULT_ADDR,
        "VAULT_TOKEN": settings.VAULT_TOKEN,
    }
    run = subprocess.run(
        [sys.executable, "manage.py", "rotate_tokens", "--tenant", demo.tenant.slug],
        stdout=subprocess.PIPE,
        stderr=follower,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    os.close(follower)
    terminal = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        terminal += chunk
    os.close(leader)
    assert run.returncode == 0
    assert f"1/1 {demo.tenant.slug}".encode() in terminal
    assert b"[##############################]" in terminal
    assert demo.tenant.slug in run.stdout and "fresh" in run.stdout
