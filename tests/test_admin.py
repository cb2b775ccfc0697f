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
