"""Deleting a tenant in the admin: only before it has an audit trail, and its Vault secret
goes first, so nothing it held can be read by a later tenant."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from controlplane import tokens, vault
from controlplane.models import QontakCredential, Tenant, ToolCall


@pytest.mark.django_db(transaction=True)
def test_a_tenant_without_calls_is_deleted_with_its_secret(operator, make_tenant):
    demo = make_tenant("bye")
    ref = tokens.secret_ref(QontakCredential.objects.get(tenant=demo.tenant))
    url = reverse("admin:controlplane_tenant_delete", args=[demo.tenant.pk])
    response = operator.post(url, {"post": "yes"})
    assert response.status_code == 302
    assert not Tenant.objects.filter(pk=demo.tenant.pk).exists()
    assert vault.read_secret(ref) is None


@pytest.mark.django_db
def test_a_tenant_with_an_audit_trail_cannot_be_deleted(operator):
    from controlplane.tenants import tenant_create

    tenant = tenant_create(slug="kept")
    ToolCall.objects.create(
        tenant=tenant,
        created_at=timezone.now(),
        key_prefix="qmcp_x",
        tool="get_contact",
        arguments_digest="0" * 64,
        outcome="ok",
        latency_ms=1,
        request_id="r",
    )
    url = reverse("admin:controlplane_tenant_delete", args=[tenant.pk])
    assert operator.post(url, {"post": "yes"}).status_code == 403
    assert Tenant.objects.filter(pk=tenant.pk).exists()
    changelist = operator.get(reverse("admin:controlplane_tenant_changelist"))
    assert "delete_selected" not in changelist.content.decode()
