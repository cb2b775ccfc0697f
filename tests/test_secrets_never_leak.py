"""No Qontak token or API key appears in the database, the logs or the audit export."""

from __future__ import annotations

import io
import logging
from typing import Any

import httpx
import pytest
from django.core.management import call_command
from mcp import Client

from controlplane.logredact import RedactSecretsFilter, redact
from tests.calls import audited_calls, with_mcp
from tests.servers import simulator_requests, tenant_secret


def test_tokens_and_keys_stay_out_of_database_logs_and_audit_export(
    control_plane, make_tenant, simulator, caplog
):
    caplog.set_level(logging.DEBUG)
    demo = make_tenant()
    first_secret = tenant_secret(demo.tenant)
    # Expire every access token so the next call gets a 401, refreshes once and retries.
    httpx.post(f"{simulator.url}/_simulator/faults", json={"expire_access_tokens": True})

    async def calls(client: Client) -> Any:
        created = await client.call_tool(
            "create_contact", {"first_name": "Secret", "email": "s@example.com"}
        )
        await client.call_tool("list_contacts", {"name": "Secret"})
        await client.call_tool("get_contact", {"id": 999999})
        return created

    created = with_mcp(control_plane.mcp_url, demo.key, "2026-07-28", calls)
    assert not created.is_error, created.content
    second_secret = tenant_secret(demo.tenant)
    assert first_secret and second_secret
    assert second_secret.version > first_secret.version, "the expired token was not refreshed"

    secrets = {
        demo.key,
        first_secret.access_token,
        first_secret.refresh_token,
        second_secret.access_token,
        second_secret.refresh_token,
    }
    for request in simulator_requests(simulator, demo.account):
        body = request.get("body") or {}
        if isinstance(body, dict) and body.get("refresh_token"):
            secrets.add(body["refresh_token"])
    assert len(secrets) >= 6

    audited_calls(demo.tenant, 3)  # the exports below must include this test's calls
    database = io.StringIO()
    call_command("dumpdata", stdout=database)
    audit_jsonl = io.StringIO()
    call_command("export_audit", stdout=audit_jsonl)
    audit_csv = io.StringIO()
    call_command("export_audit", "--format", "csv", stdout=audit_csv)
    outputs = {
        "database": database.getvalue(),
        "audit jsonl": audit_jsonl.getvalue(),
        "audit csv": audit_csv.getvalue(),
        "server log": control_plane.log_text(),
        "test process log": caplog.text,
    }
    assert "token_refreshed" in outputs["server log"]
    assert "Secret" not in outputs["audit jsonl"], "personal data reached the audit trail"
    for where, text in outputs.items():
        for secret in secrets:
            assert secret not in text, f"a token or key leaked into the {where}"


@pytest.mark.parametrize(
    "line",
    [
        "Authorization: Bearer abcdefghijklmnopqrstuvwxyz0123",
        "refresh_token=abcdef0123456789abcdef&grant_type=refresh_token",
        '{"access_token": "abcdef0123456789abcdef"}',
        "issued qmcp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
        "vault token hvs.CAESIJabcdefghijklmnopqrstuvwxyz",
        "client_secret: s3cr3t-value",
    ],
)
def test_log_filter_redacts_secret_shaped_values(line):
    cleaned = redact(line)
    assert "[redacted]" in cleaned
    for fragment in ("abcdef0123456789", "AbCdEfGhIj", "s3cr3t", "CAESIJ", "abcdefghijklmnop"):
        assert fragment not in cleaned


def test_log_filter_applies_to_arguments_and_tracebacks():
    record = logging.LogRecord(
        "x",
        logging.ERROR,
        __file__,
        1,
        "refresh failed for %s",
        ("refresh_token=zzzz9999zzzz",),
        None,
    )
    try:
        raise RuntimeError("access_token=yyyy8888yyyy")
    except RuntimeError:
        import sys

        record.exc_info = sys.exc_info()
    RedactSecretsFilter().filter(record)
    assert "zzzz9999" not in record.getMessage()
    assert record.exc_text and "yyyy8888" not in record.exc_text
