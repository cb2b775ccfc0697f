"""Vault access the way production configures it: AppRole, namespaces, TLS."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from devtools.devstack import (
    ManagedProcess,
    _spawn,
    bao_executable,
    free_port,
    wait_until_ready,
)
from tests.servers import _test_database_url

POLICY = """
path "secret/data/qontak/tenants/*" { capabilities = ["create", "read", "update"] }
path "secret/metadata/qontak/tenants/*" { capabilities = ["read"] }
path "secret/config" { capabilities = ["read"] }
"""


def _check_vault(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    return subprocess.run(
        [sys.executable, "manage.py", "check_vault"],
        capture_output=True,
        text=True,
        env={**clean, "DATABASE_URL": _test_database_url(), **env},
        timeout=60,
        check=False,
    )


def _admin(openbao: ManagedProcess, namespace: str = "") -> httpx.Client:
    headers = {"X-Vault-Token": openbao.extra["token"]}
    if namespace:
        headers["X-Vault-Namespace"] = namespace
    return httpx.Client(base_url=f"{openbao.url}/v1", headers=headers, timeout=10)


def test_approle_login_reaches_the_kv_mount(openbao, transactional_db):
    with _admin(openbao) as bao:
        bao.post("/sys/auth/approle", json={"type": "approle"}).raise_for_status()
        bao.put("/sys/policies/acl/qontak-cp", json={"policy": POLICY}).raise_for_status()
        bao.post(
            "/auth/approle/role/controlplane", json={"token_policies": ["qontak-cp"]}
        ).raise_for_status()
        role_id = bao.get("/auth/approle/role/controlplane/role-id").json()["data"]["role_id"]
        secret_id = bao.post("/auth/approle/role/controlplane/secret-id").json()["data"][
            "secret_id"
        ]
    result = _check_vault(VAULT_ADDR=openbao.url, VAULT_ROLE_ID=role_id, VAULT_SECRET_ID=secret_id)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "authenticated" in result.stdout and "yes" in result.stdout
    assert secret_id not in result.stdout + result.stderr

    wrong = _check_vault(VAULT_ADDR=openbao.url, VAULT_ROLE_ID=role_id, VAULT_SECRET_ID="nope")
    assert wrong.returncode == 1
    assert "refused access" in wrong.stdout + wrong.stderr


def test_namespace_and_its_own_kv_mount_are_used(openbao, transactional_db):
    with _admin(openbao) as bao:
        created = bao.post("/sys/namespaces/team-a")
        if created.status_code == 404:
            pytest.fail("this OpenBao build has no namespaces")
        created.raise_for_status()
    with _admin(openbao, namespace="team-a") as bao:
        bao.post("/sys/mounts/crm", json={"type": "kv", "options": {"version": "2"}})
    ok = _check_vault(
        VAULT_ADDR=openbao.url,
        VAULT_TOKEN=openbao.extra["token"],
        VAULT_NAMESPACE="team-a",
        VAULT_KV_MOUNT="crm",
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    outside = _check_vault(
        VAULT_ADDR=openbao.url, VAULT_TOKEN=openbao.extra["token"], VAULT_KV_MOUNT="crm"
    )
    assert outside.returncode == 1
    assert "mount crm" in outside.stdout and "missing" in outside.stdout


def test_tls_with_a_private_ca(log_dir: Path, transactional_db):
    port = free_port()
    cert_dir = log_dir / f"tls-{port}"
    cert_dir.mkdir()
    process, log_path = _spawn(
        f"openbao-tls-{port}",
        [
            bao_executable(),
            "server",
            "-dev-tls",
            f"-dev-tls-cert-dir={cert_dir}",
            f"-dev-listen-address=127.0.0.1:{port}",
            "-dev-root-token-id=tls-root",
            "-dev-no-store-token",
        ],
        log_dir,
    )
    server = ManagedProcess("openbao-tls", f"https://127.0.0.1:{port}", process, log_path)
    try:
        # Dev TLS mode still answers plain HTTP probes with an error below 500.
        wait_until_ready(server, f"http://127.0.0.1:{port}/v1/sys/health")
        ca = cert_dir / "vault-ca.pem"
        verified = _check_vault(VAULT_ADDR=server.url, VAULT_TOKEN="tls-root", VAULT_CACERT=str(ca))
        assert verified.returncode == 0, verified.stdout + verified.stderr
        untrusted = _check_vault(VAULT_ADDR=server.url, VAULT_TOKEN="tls-root")
        assert untrusted.returncode == 1
    finally:
        server.stop()
