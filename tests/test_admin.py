"""The operator's admin pages: every model reachable, writes through the services."""

from __future__ import annotations

import pytest
from auditlog.models import LogEntry
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from controlplane.models import ApiKey, QontakCredential, Tenant, ToolCall
from controlplane.tenants import api_key_digest, tenant_create

MODELS = ["tenant", "apikey", "ratelimitpolicy", "toolpolicy", "toolcall"]


@pytest.fixture
def operator(db) -> Client:
    user = get_user_model().objects.create_superuser("operator", "op@example.com", "pw-123456")
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize("model", MODELS)
def test_every_model_has_an_admin_list_page(operator, model):
    tenant_create(slug="listed")
    response = operator.get(reverse(f"admin:controlplane_{model}_changelist"))
    assert response.status_code == 200


def test_adding_a_tenant_in_the_admin_creates_its_vault_reference(operator):
    response = operator.post(
        reverse("admin:controlplane_tenant_add"),
        {
            "slug": "acme",
            "name": "Acme",
            "qontak_base_url": "",
            "is_active": "on",
            **{
                f"{prefix}-{field}": value
                for prefix in ("credential", "rate_limits", "tool_policies")
                for field, value in (
                    ("TOTAL_FORMS", "0"),
                    ("INITIAL_FORMS", "0"),
                    ("MIN_NUM_FORMS", "0"),
                    ("MAX_NUM_FORMS", "1000"),
                )
            },
        },
    )
    assert response.status_code == 302, response.content[:2000]
    credential = QontakCredential.objects.get(tenant__slug="acme")
    assert credential.vault_path == "qontak/tenants/acme"
    assert LogEntry.objects.get_for_object(Tenant.objects.get(slug="acme")).exists()


def test_issuing_a_key_in_the_admin_shows_it_once_and_stores_only_a_digest(operator):
    tenant = tenant_create(slug="keys")
    response = operator.post(
        reverse("admin:controlplane_apikey_add"),
        {"tenant": tenant.pk, "label": "cursor", "expires_at_0": "", "expires_at_1": ""},
        follow=True,
    )
    assert response.status_code == 200
    shown = [str(m) for m in response.context["messages"]]
    key = next(m for m in shown if "qmcp_" in m).split()[-1]
    stored = ApiKey.objects.get(tenant=tenant)
    assert stored.digest == api_key_digest(key)
    page = operator.get(reverse("admin:controlplane_apikey_change", args=[stored.pk]))
    assert key not in page.content.decode()


def test_revoke_action_revokes_selected_keys(operator):
    from controlplane.tenants import api_key_issue

    tenant = tenant_create(slug="revoking")
    issued = api_key_issue(tenant=tenant)
    operator.post(
        reverse("admin:controlplane_apikey_changelist"),
        {"action": "revoke", "_selected_action": [issued.api_key.pk]},
    )
    assert ApiKey.objects.get(pk=issued.api_key.pk).revoked_at is not None


def test_audit_rows_are_read_only_in_the_admin(operator):
    tenant = tenant_create(slug="audited")
    call = ToolCall.objects.create(
        tenant=tenant,
        key_prefix="qmcp_x",
        tool="get_contact",
        arguments_digest="0" * 64,
        outcome="ok",
        latency_ms=1.0,
        request_id="r1",
    )
    change_url = reverse("admin:controlplane_toolcall_change", args=[call.pk])
    assert operator.get(change_url).status_code == 200
    assert operator.post(change_url, {"tool": "delete_contact"}).status_code == 403
    assert operator.get(reverse("admin:controlplane_toolcall_add")).status_code == 403
    with pytest.raises(ValueError, match="append-only"):
        call.save()


def _messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_replacing_the_refresh_token_validates_it_and_never_shows_it(operator, openbao, simulator):
    from controlplane import vault
    from controlplane.devstack import create_simulator_account

    tenant = tenant_create(slug="replace-me", qontak_base_url=simulator.url)
    url = reverse("admin:controlplane_tenant_refresh_token", args=[tenant.pk])
    change_page = operator.get(reverse("admin:controlplane_tenant_change", args=[tenant.pk]))
    assert url in change_page.content.decode()

    used = create_simulator_account(simulator.url, "replace-me")
    operator.post(url, {"refresh_token": used})  # first use succeeds and rotates it
    refused = operator.post(url, {"refresh_token": used})
    assert refused.status_code == 200
    page = refused.content.decode()
    assert "invalid_grant" in page
    assert used not in page, "the token was rendered back into the form"

    fresh = create_simulator_account(simulator.url, "replace-me")
    accepted = operator.post(url, {"refresh_token": fresh}, follow=True)
    assert "Stored a validated refresh token" in " ".join(_messages(accepted))
    assert fresh not in accepted.content.decode()
    assert vault.read_tenant_secret("replace-me") is not None


def test_rotate_now_and_test_connection_actions_report_per_tenant(operator, openbao, simulator):
    from controlplane.devstack import create_simulator_account
    from controlplane.tokens import store_refresh_token

    ready = tenant_create(slug="ready", qontak_base_url=simulator.url)
    store_refresh_token(
        tenant=ready, refresh_token=create_simulator_account(simulator.url, "ready")
    )
    empty = tenant_create(slug="empty", qontak_base_url=simulator.url)
    changelist = reverse("admin:controlplane_tenant_changelist")
    selected = [ready.pk, empty.pk]

    rotated = operator.post(
        changelist, {"action": "rotate_now", "_selected_action": selected}, follow=True
    )
    shown = " | ".join(_messages(rotated))
    assert "ready: rotated" in shown
    assert "empty: failed, no Qontak refresh token stored" in shown

    tested = operator.post(
        changelist, {"action": "test_connection", "_selected_action": selected}, follow=True
    )
    shown = " | ".join(_messages(tested))
    assert "ready: Vault, token refresh and the Qontak API all answered" in shown
    assert "set_refresh_token empty" in shown
    listing = operator.get(changelist).content.decode()
    assert "Valid" in listing and "No refresh token stored" in listing
