"""The operator contract in ARCHITECTURE.md: same names, arguments and output."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import uuid

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from controlplane.models import ApiKey, RateLimitPolicy, Tenant, ToolCall, ToolPolicy
from controlplane.tenants import api_key_authenticate, api_key_digest
from devtools.devstack import create_simulator_account
from tests.servers import tenant_secret


def run(*args: str, stdin: str | None = None) -> str:
    out = io.StringIO()
    if stdin is not None:
        sys_stdin, sys.stdin = sys.stdin, io.StringIO(stdin)
        try:
            call_command(*args, stdout=out, stderr=io.StringIO())
        finally:
            sys.stdin = sys_stdin
    else:
        call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def slug() -> str:
    return f"cmd-{uuid.uuid4().hex[:8]}"


@pytest.mark.django_db
def test_create_tenant_records_a_vault_reference_and_no_secret(openbao):
    name = slug()
    output = run(
        "create_tenant", name, "--name", "Acme Ltd", "--qontak-base-url", "https://api.mekari.com"
    )
    tenant = Tenant.objects.get(slug=name)
    assert "Created tenant" in output
    assert tenant.name == "Acme Ltd"
    assert tenant.qontak_base_url == "https://api.mekari.com"
    # By id, never reused: a tenant re-created with this slug gets a path of its own.
    assert tenant.credential.vault_path.startswith(f"qontak/tenants/{tenant.pk}-")
    assert tenant.credential.status == "missing"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/", "add the host to QONTAK_ALLOWED_HOSTS"),
        ("https://app.qontak.com/?next=x", "a query string (?...) is not allowed"),
    ],
)
def test_create_tenant_refuses_a_qontak_url_off_the_rules_and_says_why(url, reason):
    name = slug()
    with pytest.raises(CommandError, match=r"^--qontak-base-url: Refused Qontak URL") as refused:
        run("create_tenant", name, "--qontak-base-url", url)
    assert reason in str(refused.value)
    assert not Tenant.objects.filter(slug=name).exists()


@pytest.mark.django_db
def test_create_tenant_twice_is_a_clear_error():
    name = slug()
    run("create_tenant", name)
    with pytest.raises(CommandError, match="already exists"):
        run("create_tenant", name)


@pytest.mark.django_db
def test_issue_api_key_prints_the_key_alone_on_the_last_line_and_stores_a_digest():
    name = slug()
    run("create_tenant", name)
    output = run("issue_api_key", name, "--label", "claude")
    key = output.strip().splitlines()[-1]
    assert key.startswith("qmcp_") and " " not in key
    stored = ApiKey.objects.get(tenant__slug=name)
    assert stored.label == "claude"
    assert stored.digest == api_key_digest(key)
    assert key not in json.dumps(list(ApiKey.objects.values()), default=str)
    assert api_key_authenticate(key=key) == stored


@pytest.mark.django_db
def test_revoke_api_key_by_prefix_stops_authentication():
    name = slug()
    run("create_tenant", name)
    key = run("issue_api_key", name).strip().splitlines()[-1]
    prefix = ApiKey.objects.get(tenant__slug=name).prefix
    assert "Revoked" in run("revoke_api_key", prefix)
    assert api_key_authenticate(key=key) is None


@pytest.mark.django_db
def test_unknown_tenant_or_prefix_is_a_clear_error():
    with pytest.raises(CommandError, match="no tenant 'nobody'"):
        run("issue_api_key", "nobody")
    with pytest.raises(CommandError, match="no API key with prefix"):
        run("revoke_api_key", "qmcp_nothing")


@pytest.mark.django_db
def test_set_rate_limit_validates_and_upserts_the_policy():
    name = slug()
    run("create_tenant", name)
    run("set_rate_limit", name, "10/s", "--tool", "list_contacts", "--per-key")
    run("set_rate_limit", name, "20/s", "--tool", "list_contacts", "--per-key")
    policy = RateLimitPolicy.objects.get(tenant__slug=name)
    assert (policy.rate, policy.tool, policy.per_key) == ("20/s", "list_contacts", True)
    with pytest.raises(CommandError, match="not a rate"):
        run("set_rate_limit", name, "lots")
    with pytest.raises(CommandError, match="no tool 'list_contatcs': did you mean 'list_contacts'"):
        run("set_rate_limit", name, "5/s", "--tool", "list_contatcs")
    assert RateLimitPolicy.objects.filter(tenant__slug=name).count() == 1


@pytest.mark.django_db
def test_set_tool_access_allow_and_deny():
    name = slug()
    run("create_tenant", name)
    run("set_tool_access", name, "delete_contact", "deny")
    assert ToolPolicy.objects.get(tenant__slug=name, tool="delete_contact").effect == "deny"
    run("set_tool_access", name, "delete_contact", "allow")
    assert ToolPolicy.objects.get(tenant__slug=name, tool="delete_contact").effect == "allow"


@pytest.mark.django_db
def test_set_tool_access_refuses_a_misspelt_tool_naming_the_closest_one():
    name = slug()
    run("create_tenant", name)
    with pytest.raises(
        CommandError, match="no tool 'delete_contcat': did you mean 'delete_contact'"
    ):
        run("set_tool_access", name, "delete_contcat", "deny")
    with pytest.raises(CommandError, match="no tool 'nope': pick one from the list of tools"):
        run("set_tool_access", name, "nope", "deny")
    assert not ToolPolicy.objects.filter(tenant__slug=name).exists()
    run("set_tool_access", name, "*", "deny")
    run("set_tool_access", name, "get_required_fields_for_deal", "allow")
    assert ToolPolicy.objects.filter(tenant__slug=name).count() == 2


@pytest.mark.django_db
def test_set_refresh_token_reads_stdin_validates_and_stores_the_rotated_token(openbao, simulator):
    name = slug()
    run("create_tenant", name, "--qontak-base-url", simulator.url)
    original = create_simulator_account(simulator.url, name)
    output = run("set_refresh_token", name, stdin=original + "\n")
    assert "Stored a validated refresh token" in output
    assert original not in output
    secret = tenant_secret(Tenant.objects.get(slug=name))
    assert secret is not None
    # The validation consumed the original token: Vault holds the rotated one.
    assert secret.refresh_token and secret.refresh_token != original
    tenant = Tenant.objects.get(slug=name)
    assert tenant.credential.status == "valid"
    assert tenant.credential.vault_version == secret.version


@pytest.mark.django_db
def test_set_refresh_token_refuses_a_used_token_and_stores_nothing(openbao, simulator):
    name = slug()
    run("create_tenant", name, "--qontak-base-url", simulator.url)
    original = create_simulator_account(simulator.url, name)
    run("set_refresh_token", name, stdin=original)
    before = tenant_secret(Tenant.objects.get(slug=name))
    with pytest.raises(CommandError, match="invalid_grant"):
        run("set_refresh_token", name, stdin=original)
    assert tenant_secret(Tenant.objects.get(slug=name)) == before


@pytest.mark.django_db
def test_set_refresh_token_with_empty_stdin_is_a_clear_error():
    name = slug()
    run("create_tenant", name)
    with pytest.raises(CommandError, match="no refresh token"):
        run("set_refresh_token", name, stdin="")


@pytest.mark.django_db
def test_check_vault_reports_each_tenants_secret(openbao, simulator):
    ready, missing = slug(), slug()
    run("create_tenant", ready, "--qontak-base-url", simulator.url)
    run("create_tenant", missing)
    run("set_refresh_token", ready, stdin=create_simulator_account(simulator.url, ready))
    with pytest.raises(SystemExit):
        run("check_vault")
    Tenant.objects.filter(slug=missing).delete()
    output = run("check_vault")
    assert "reachable" in output and "authenticated" in output
    assert f"tenant {ready}" in output and "secret present" in output


def test_check_vault_fails_with_a_reason_when_vault_is_unreachable():
    result = subprocess.run(
        [sys.executable, "manage.py", "check_vault"],
        capture_output=True,
        text=True,
        env={
            "PATH": "/usr/bin:/bin",
            "VAULT_ADDR": "http://127.0.0.1:9",
            "VAULT_TOKEN": "x",
            # settings.py refuses to start without them when DEBUG is off.
            "SECRET_KEY": settings.SECRET_KEY,
            "API_KEY_PEPPER": settings.API_KEY_PEPPER,
        },
        timeout=60,
    )
    assert result.returncode == 1
    assert "cannot reach Vault at http://127.0.0.1:9" in result.stderr + result.stdout


def _audit_row(tenant: Tenant, tool: str, outcome: str) -> None:
    ToolCall.objects.create(
        tenant=tenant,
        key_prefix="qmcp_abcdefgh",
        tool=tool,
        arguments={"id": 1},
        arguments_digest="0" * 64,
        outcome=outcome,
        latency_ms=1.5,
        request_id=uuid.uuid4().hex,
    )


@pytest.mark.django_db
def test_export_audit_writes_jsonl_and_csv_filtered_by_tenant_and_time():
    mine, other = slug(), slug()
    run("create_tenant", mine)
    run("create_tenant", other)
    _audit_row(Tenant.objects.get(slug=mine), "get_contact", "ok")
    _audit_row(Tenant.objects.get(slug=mine), "delete_contact", "denied")
    _audit_row(Tenant.objects.get(slug=other), "get_contact", "ok")

    lines = run("export_audit", "--tenant", mine).strip().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [(r["tool"], r["outcome"]) for r in rows] == [
        ("get_contact", "ok"),
        ("delete_contact", "denied"),
    ]
    table = list(
        csv.DictReader(io.StringIO(run("export_audit", "--tenant", mine, "--format", "csv")))
    )
    assert [r["tool"] for r in table] == ["get_contact", "delete_contact"]
    assert run("export_audit", "--tenant", mine, "--since", "2999-01-01T00:00:00Z") == ""
    with pytest.raises(CommandError, match="not an ISO 8601 time"):
        run("export_audit", "--since", "yesterday")
