"""Calls made as a person: they act as the member's CRM user at the Mekari gateway, are
rate-limited per person like keys, and exports name the person and the assistant."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from django.core.management import call_command

from tests.calls import audited_calls
from tests.oauth_support import person_token
from tests.servers import simulator_requests
from tests.test_approvals import _text

pytestmark = pytest.mark.timeout(120)

MEMBER_CRM_USER = "0b7e5a7c-9d1f-4f5e-8a61-2c3d4e5f6a7b"


def _call_as(url: str, token: str, tool: str, arguments: dict[str, Any]) -> Any:
    import asyncio

    from tests.calls import mcp_client

    async def run() -> Any:
        async with mcp_client(url, token, "2026-07-28") as client:
            return await client.call_tool(tool, arguments)

    return asyncio.run(run())


def test_a_gateway_call_acts_as_the_members_crm_user_and_is_exported_as_theirs(
    control_plane: Any, make_tenant: Any, simulator: Any
) -> None:
    demo = make_tenant("gw-person", gateway=True)
    token = person_token(demo, control_plane.mcp_url, "crm.read crm.write", MEMBER_CRM_USER)

    created = _call_as(
        control_plane.mcp_url, token, "create_contact", {"first_name": "Sari", "last_name": "W"}
    )

    assert not created.is_error, _text(created)
    api = [r for r in simulator_requests(simulator, demo.account) if r["method"] == "POST"]
    assert api[-1]["path"].startswith("/qontak/crm/contacts")
    assert api[-1]["sso_user"] == MEMBER_CRM_USER  # not the tenant's or a key's
    (row,) = audited_calls(demo.tenant, 1)
    assert (row.qontak_user, row.oauth_client) == (MEMBER_CRM_USER, "Approving Assistant")
    out = io.StringIO()
    call_command("export_audit", "--tenant", demo.tenant.slug, "--format", "jsonl", stdout=out)
    exported = json.loads(out.getvalue().splitlines()[0])
    assert exported["person"] == row.person and exported["person"].startswith("p-")
    assert exported["oauth_client"] == "Approving Assistant" and exported["key_prefix"] == ""
    out = io.StringIO()
    call_command("export_audit", "--tenant", demo.tenant.slug, "--format", "csv", stdout=out)
    header, first = out.getvalue().splitlines()[:2]
    assert header.split(",")[-6:-4] == ["person", "oauth_client"]  # appended, scripts keep columns
    assert row.person in first


def test_per_key_limits_count_each_person_separately(control_plane: Any, make_tenant: Any) -> None:
    demo = make_tenant("per-person")
    call_command("set_rate_limit", demo.tenant.slug, "2/m", "--per-key")
    ana = person_token(demo, control_plane.mcp_url, "crm.read")
    budi = person_token(demo, control_plane.mcp_url, "crm.read")

    ana_calls = [_call_as(control_plane.mcp_url, ana, "list_contacts", {}) for _ in range(3)]
    budi_call = _call_as(control_plane.mcp_url, budi, "list_contacts", {})

    assert [call.is_error for call in ana_calls] == [False, False, True]
    assert "this API key or person" in _text(ana_calls[2])
    assert not budi_call.is_error  # another person's calls are counted apart
