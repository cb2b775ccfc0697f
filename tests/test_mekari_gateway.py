"""A company with Mekari HMAC credentials, onboarded with the operator commands and reached
through the simulator's gateway form over HTTP with real OpenBao: every request signed, acting
as the right CRM user, and refused clearly when the credential is wrong."""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from mcp import Client

from controlplane import gateway_credentials, tokens
from controlplane.models import Tenant, ToolCall
from devtools.devstack import ManagedProcess, create_simulator_hmac_account
from tests.calls import audit_barrier, audited_calls, with_mcp
from tests.servers import simulator_requests

CRM_USER = "5f0c6b1e-0a1b-4c2d-8e3f-445566778899"


@dataclass
class GatewayTenant:
    tenant: Tenant
    key: str
    account: str
    client_id: str
    client_secret: str


def _run(*args: str, stdin: str = "") -> str:
    import sys

    out = io.StringIO()
    saved = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        call_command(*args, stdout=out, stderr=io.StringIO())
    finally:
        sys.stdin = saved
    return out.getvalue()


@pytest.fixture
def make_gateway_tenant(
    request: pytest.FixtureRequest,
    transactional_db: None,
    openbao: ManagedProcess,
    simulator: ManagedProcess,
) -> Iterator[Callable[..., GatewayTenant]]:
    """Three commands, as an operator onboards a gateway company: create_tenant --auth
    mekari-hmac, set_hmac_credential, issue_api_key --qontak-user."""
    wait_for_audit_rows = (
        audit_barrier(request.getfixturevalue("control_plane"))
        if "control_plane" in request.fixturenames
        else None
    )

    def make(qontak_user: str = CRM_USER) -> GatewayTenant:
        slug = f"gw-{uuid.uuid4().hex[:8]}"
        client_id, secret = create_simulator_hmac_account(simulator.url, slug)
        gateway = f"{simulator.url}/qontak/crm"
        _run("create_tenant", slug, "--auth", "mekari-hmac", "--qontak-base-url", gateway)
        _run("set_hmac_credential", slug, "--client-id", client_id, stdin=secret + "\n")
        args = ["issue_api_key", slug] + (["--qontak-user", qontak_user] if qontak_user else [])
        key = _run(*args).strip().splitlines()[-1]
        tenant = Tenant.objects.get(slug=slug)
        return GatewayTenant(tenant, key, slug, client_id, secret)

    yield make
    if wait_for_audit_rows is not None:
        wait_for_audit_rows()
    gateway_credentials._hmac_copies.clear()


def test_tool_calls_reach_the_gateway_signed_and_as_the_keys_crm_user(
    control_plane, make_gateway_tenant, simulator, era
):
    demo = make_gateway_tenant()

    async def calls(client: Client) -> list[Any]:
        created = await client.call_tool(
            "create_contact", {"first_name": "Ayu", "last_name": "Lestari"}
        )
        contact_id = created.structured_content["response"]["id"]
        fetched = await client.call_tool("get_contact", {"id": contact_id})
        listed = await client.call_tool("list_deals", {"page": 2, "per_page": 5})
        return [created, fetched, listed]

    results = with_mcp(control_plane.mcp_url, demo.key, era, calls)
    assert not any(result.is_error for result in results), [r.content for r in results]
    assert results[1].structured_content["response"]["first_name"] == "Ayu"
    recorded = [r for r in simulator_requests(simulator, demo.account) if r["status"] != 0]
    api = [r for r in recorded if "/_simulator" not in r["path"]]
    assert [r["path"].split("?")[0] for r in api][-3:] == [
        "/qontak/crm/contacts",
        f"/qontak/crm/contacts/{results[0].structured_content['response']['id']}",
        "/qontak/crm/deals",
    ]
    assert all(r["status"] == 200 for r in api[-3:])
    assert {r["sso_user"] for r in api[-3:]} == {CRM_USER}
    assert [row.qontak_user for row in audited_calls(demo.tenant, 3)] == [CRM_USER] * 3


def test_a_write_without_a_crm_user_is_refused_before_it_is_sent(
    control_plane, make_gateway_tenant, simulator
):
    demo = make_gateway_tenant(qontak_user="")

    async def create(client: Client) -> Any:
        return await client.call_tool("create_note", {"note": "n"})

    result = with_mcp(control_plane.mcp_url, demo.key, "2026-07-28", create)
    assert result.is_error
    assert "must act as a Qontak CRM user" in result.content[0].text
    assert not [r for r in simulator_requests(simulator, demo.account) if r["method"] == "POST"]


@pytest.mark.parametrize(
    ("wrong", "expected"),
    [("secret", "HMAC signature cannot be verified"), ("client id", "client id is not known")],
)
def test_a_wrong_credential_fails_set_hmac_credential_and_stores_nothing(
    make_gateway_tenant, simulator, wrong, expected
):
    demo = make_gateway_tenant()
    client_id = demo.client_id if wrong == "secret" else "nobody"
    secret = "not-the-secret" if wrong == "secret" else demo.client_secret
    version = demo.tenant.credential.vault_version
    with pytest.raises(CommandError) as refused:
        _run("set_hmac_credential", demo.account, "--client-id", client_id, stdin=secret)
    message = str(refused.value)
    assert "refused this client id and secret" in message and expected in message
    assert "nothing was stored" in message
    assert secret not in message
    demo.tenant.credential.refresh_from_db()
    assert demo.tenant.credential.vault_version == version


def test_rotation_has_nothing_to_do_and_check_vault_sees_the_secret(make_gateway_tenant):
    demo = make_gateway_tenant()
    rotated = _run("rotate_tokens", "--tenant", demo.account, "--json")
    assert '"action": "not_applicable"' in rotated
    assert f"tenant {demo.account}" in _run("check_vault")


def test_the_hmac_secret_is_in_no_table_log_export_or_admin_page(
    make_gateway_tenant, control_plane, operator, caplog
):
    from django.db import connection
    from django.urls import reverse

    demo = make_gateway_tenant()

    async def call(client: Client) -> Any:
        return await client.call_tool("get_contact_template", {})

    with_mcp(control_plane.mcp_url, demo.key, "2026-07-28", call)
    audited_calls(demo.tenant, 1)
    credential_page = reverse("admin:controlplane_tenant_credential", args=[demo.tenant.pk])
    wrong = demo.client_secret[::-1]
    refused = operator.post(credential_page, {"client_id": demo.client_id, "client_secret": wrong})
    pages = {
        "tenant page": operator.get(
            reverse("admin:controlplane_tenant_change", args=[demo.tenant.pk])
        ).content.decode(),
        "credential page": operator.get(credential_page).content.decode(),
        "refused form": refused.content.decode(),
    }
    assert "refused this client id and secret" in pages["refused form"]
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - table names from Django
            assert demo.client_secret not in repr(cursor.fetchall()), table
    outputs = {
        **pages,
        "audit jsonl": _run("export_audit", "--format", "jsonl"),
        "audit csv": _run("export_audit", "--format", "csv"),
        "server log": control_plane.log_text(),
        "test process log": caplog.text,
    }
    for where, text in outputs.items():
        assert demo.client_secret not in text, where
        assert wrong not in text, where
    assert ToolCall.objects.filter(tenant=demo.tenant).exists()


def _gateway_error(demo: Any, monkeypatch: Any, tool: str = "get_contact_template") -> str:
    from mcpserver import pipeline
    from tests.calls import in_one_loop, in_process_caller_of

    caller = in_process_caller_of(demo)
    arguments = {"name": "Follow-up"} if tool == "create_task_category" else {}
    done = in_one_loop(lambda: pipeline.run_tool_call(caller, tool, arguments))
    assert done.result.is_error
    return str(done.result.text)


@pytest.mark.django_db(transaction=True)
def test_a_skewed_clock_is_named_in_the_tool_error(make_tenant, monkeypatch):
    import time

    from qontak import mekari

    demo = make_tenant(gateway=True)
    monkeypatch.setattr(mekari, "CLOCK", lambda: time.time() - 600)
    text = _gateway_error(demo, monkeypatch)
    assert "refused this tenant's HMAC credentials (HTTP 401" in text
    assert "Date header is more than 300 seconds away" in text


@pytest.mark.django_db(transaction=True)
def test_a_secret_replaced_behind_our_back_is_named_in_the_tool_error(make_tenant, monkeypatch):
    from controlplane import vault

    demo = make_tenant(gateway=True)
    ref = tokens.secret_ref(demo.tenant.credential)
    version = vault.read_fields(ref)[1]  # type: ignore[index]
    vault.write_fields(ref, {"client_secret": "not-the-secret"}, cas=version)
    gateway_credentials._hmac_copies.clear()
    text = _gateway_error(demo, monkeypatch)
    assert "HMAC signature cannot be verified" in text
    assert "set_hmac_credential" in text


@pytest.mark.django_db(transaction=True)
def test_an_unknown_client_id_is_named_in_the_tool_error(make_tenant, monkeypatch):
    from controlplane.models import QontakCredential

    demo = make_tenant(gateway=True)
    QontakCredential.objects.filter(tenant=demo.tenant).update(client_id="nobody")
    gateway_credentials._hmac_copies.clear()
    assert "client id is not known" in _gateway_error(demo, monkeypatch)


@pytest.mark.django_db(transaction=True)
def test_a_missing_digest_is_named_in_the_tool_error(make_tenant, monkeypatch):
    from qontak import mekari

    demo = make_tenant(gateway=True)
    signed = mekari.signed_headers

    def without_digest(*args: Any, **kwargs: Any) -> dict[str, str]:
        headers = signed(*args, **kwargs)
        headers.pop("Digest", None)
        return headers

    monkeypatch.setattr(mekari, "signed_headers", without_digest)
    text = _gateway_error(demo, monkeypatch, tool="create_task_category")
    assert "Digest header is missing" in text


def test_an_operator_sets_the_hmac_credential_in_the_admin_and_tests_the_connection(
    operator, simulator, transactional_db, openbao
):
    from django.urls import reverse

    from controlplane import tenants

    tenant = tenants.tenant_create(
        slug="gw-admin", auth="mekari-hmac", qontak_base_url=f"{simulator.url}/qontak/crm"
    )
    client_id, secret = create_simulator_hmac_account(simulator.url, "gw-admin")
    change = operator.get(reverse("admin:controlplane_tenant_change", args=[tenant.pk]))
    assert "Set HMAC credential" in change.content.decode()
    page = reverse("admin:controlplane_tenant_credential", args=[tenant.pk])
    stored = operator.post(page, {"client_id": client_id, "client_secret": secret}, follow=True)
    assert "Stored a validated HMAC credential for gw-admin." in stored.content.decode()
    assert secret not in stored.content.decode()
    tested = operator.post(
        reverse("admin:controlplane_tenant_changelist"),
        {"action": "test_connection", "_selected_action": [tenant.pk]},
        follow=True,
    )
    assert "the Mekari API Gateway answered; the credential works" in tested.content.decode()
