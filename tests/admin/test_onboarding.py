"""Onboarding a company in the admin without a terminal: the add page says which credential
to ask for, saving leads to the credential, the tenant page tests the connection in words
and issues the first key with what to paste into each assistant."""

from __future__ import annotations

import json

from django.urls import reverse

from controlplane.admin.client_configs import client_configs
from controlplane.models import ApiKey, Tenant
from controlplane.tenants import tenant_create
from tests.admin.pages import messages, tenant_add_data


def test_the_add_page_explains_where_each_credential_kind_comes_from(operator):
    page = operator.get(reverse("admin:controlplane_tenant_add")).content.decode()
    assert "Mekari Developer Center" in page and "qontak-crm:all" in page
    assert "what companies onboarding today get" in page
    assert 'type="radio" name="auth" value="mekari-hmac"' in page
    assert "Qontak credential (in Vault)" not in page  # no empty credential block with "-"
    assert "manage.py" not in page


def test_saving_a_new_tenant_leads_to_its_credential_form(operator):
    response = operator.post(
        reverse("admin:controlplane_tenant_add"),
        tenant_add_data(slug="acme", name="Acme", auth="mekari-hmac", is_active="on"),
        follow=True,
    )
    tenant = Tenant.objects.get(slug="acme")
    assert response.redirect_chain[-1][0] == reverse(
        "admin:controlplane_tenant_credential", args=[tenant.pk]
    )
    html = response.content.decode()
    assert 'name="client_secret"' in html and "developers.mekari.com" in html
    assert any("Next: its credential" in shown for shown in messages(response))


def test_the_tenant_page_offers_set_before_replace_and_a_test_button(operator, openbao, simulator):
    from devtools.devstack import create_simulator_account

    tenant = tenant_create(slug="legacy", qontak_base_url=simulator.url)
    change_url = reverse("admin:controlplane_tenant_change", args=[tenant.pk])
    page = operator.get(change_url).content.decode()
    assert "Store refresh token" in page and "Replace refresh token" not in page
    assert 'form="test-connection-form"' in page
    test_url = reverse("admin:controlplane_tenant_test_connection", args=[tenant.pk])
    assert f'<form id="test-connection-form" method="post" action="{test_url}">' in page

    refused = operator.post(test_url, follow=True)
    shown = " ".join(messages(refused))
    assert "Connection failed. legacy: no credential is stored yet." in shown
    assert "Press “Store refresh token”" in shown and "manage.py" not in shown

    operator.post(
        reverse("admin:controlplane_tenant_credential", args=[tenant.pk]),
        {"refresh_token": create_simulator_account(simulator.url, "legacy")},
    )
    assert "Replace refresh token" in operator.get(change_url).content.decode()
    tested = operator.post(test_url, follow=True)
    assert tested.redirect_chain[-1][0] == change_url
    assert "Connection works. legacy: Vault, token refresh and the Qontak API all answered." in (
        messages(tested)
    )


def test_testing_the_connection_needs_the_change_permission(db):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission
    from django.test import Client

    tenant = tenant_create(slug="watched")
    user = get_user_model().objects.create_user("viewer", password="pw-123456", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_tenant"))
    client = Client()
    client.force_login(user)
    test_url = reverse("admin:controlplane_tenant_test_connection", args=[tenant.pk])
    assert client.post(test_url).status_code == 403
    assert client.get(test_url).status_code == 405  # a GET (a prefetch, a crawler) does nothing


def test_the_tenant_page_issues_a_key_for_that_tenant(operator):
    tenant = tenant_create(slug="first-key")
    page = operator.get(reverse("admin:controlplane_tenant_change", args=[tenant.pk]))
    issue_url = reverse("admin:controlplane_apikey_add") + f"?tenant={tenant.pk}"
    assert f'href="{issue_url}">Issue an API key' in page.content.decode()
    form = operator.get(issue_url).context["adminform"].form
    assert str(form["tenant"].value()) == str(tenant.pk)
    assert "UTC" in form.fields["expires_at"].label


def test_a_key_with_a_malformed_crm_user_is_refused_on_the_form(operator):
    tenant = tenant_create(slug="crm-user")
    response = operator.post(
        reverse("admin:controlplane_apikey_add"),
        {"tenant": tenant.pk, "qontak_user": "bob", "expires_at_0": "", "expires_at_1": ""},
    )
    assert response.status_code == 200
    assert "is not a Mekari SSO user id" in response.content.decode()
    assert not ApiKey.objects.exists()


def test_the_issued_key_page_has_configuration_for_each_client_and_the_oauth_url(
    operator, settings
):
    settings.ALLOWED_HOSTS = ["mcp.example.com"]
    tenant = tenant_create(slug="configs")
    response = operator.post(
        reverse("admin:controlplane_apikey_add"),
        {"tenant": tenant.pk, "label": "vscode", "expires_at_0": "", "expires_at_1": ""},
        HTTP_HOST="mcp.example.com",
        secure=True,
    )
    html = response.content.decode()
    for client in ("Cursor", "VS Code", "Claude Desktop", "claude.ai and ChatGPT"):
        assert f"<h2>{client}</h2>" in html
    assert '<pre id="config-oauth-text" class="copy-source">https://mcp.example.com/mcp</pre>' in (
        html
    )
    assert html.count("Copy ") >= 5  # the key, three configurations, the URL


def test_client_configurations_are_valid_json_naming_the_url_and_the_key():
    configs = {c.client: json.loads(c.text) for c in client_configs(mcp_url="U", key="K")}
    assert configs["VS Code"]["servers"]["qontak"] == {
        "type": "http",
        "url": "U",
        "headers": {"Authorization": "Bearer K"},
    }
    desktop = configs["Claude Desktop"]["mcpServers"]["qontak"]
    assert desktop["args"] == ["mcp-remote", "U", "--header", "Authorization:${QONTAK_KEY}"]
    assert desktop["env"] == {"QONTAK_KEY": "Bearer K"}
