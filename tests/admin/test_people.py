"""People in the admin: adding and removing members, revoking an assistant's connection,
disabling a client, and the hosts trusted to vouch for clients."""

from __future__ import annotations

import uuid

from django.contrib.auth.models import User
from django.urls import reverse
from oauth2_provider.models import AccessToken, Application, RefreshToken

from controlplane import people
from controlplane.models import DisabledClient, OAuthConnection, TenantMembership, TrustedClientHost
from controlplane.tenants import tenant_create
from tests.admin.pages import messages

SSO_ID = "5f0c6b1e-0a1b-4c2d-8e3f-445566778899"


def _connected(membership: TenantMembership) -> tuple[Application, AccessToken]:
    """A client with a live token family for the member, as a consent leaves behind."""
    application = Application.objects.create(
        name="Claude",
        client_type=Application.CLIENT_PUBLIC,
        authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        redirect_uris="https://claude.ai/api/mcp/auth_callback",
    )
    family = uuid.uuid4()
    access = AccessToken.objects.create(
        user=membership.user,
        application=application,
        token=f"qmcpat_{uuid.uuid4().hex}",
        expires="2099-01-01T00:00Z",
    )
    RefreshToken.objects.create(
        user=membership.user,
        application=application,
        token=f"qmcprt_{uuid.uuid4().hex}",
        access_token=access,
        token_family=family,
    )
    OAuthConnection.objects.create(
        membership=membership, application=application, token_family=family, scope="crm.read"
    )
    return application, access


def test_an_operator_adds_a_new_person_with_a_first_password(operator) -> None:
    tenant = tenant_create(slug="people-admin", name="People Co")
    url = reverse("admin:controlplane_tenantmembership_add")
    form = operator.get(url).content.decode()
    assert 'name="username"' in form and 'name="password"' in form

    response = operator.post(
        url,
        {
            "tenant": tenant.pk,
            "username": "rina",
            "password": "a-long-pass-phrase-7",
            "qontak_user": SSO_ID,
        },
        follow=True,
    )

    assert "Created the account rina" in " ".join(messages(response))
    membership = TenantMembership.objects.get(tenant=tenant, user__username="rina")
    assert membership.qontak_user == SSO_ID
    assert User.objects.get(username="rina").check_password("a-long-pass-phrase-7")


def test_adding_a_member_refuses_a_missing_password_a_bad_sso_id_and_a_duplicate(operator):
    tenant = tenant_create(slug="people-errors")
    url = reverse("admin:controlplane_tenantmembership_add")
    response = operator.post(url, {"tenant": tenant.pk, "username": "new", "qontak_user": "x"})
    errors = str(response.context["adminform"].form.errors)
    assert "set their first password" in errors and "not a Mekari SSO user id" in errors
    people.member_add(tenant=tenant, username="budi", password="a-long-pass-phrase-8")
    again = operator.post(url, {"tenant": tenant.pk, "username": "budi"})
    assert "budi is already a member" in str(again.context["adminform"].form.errors)
    assert TenantMembership.objects.filter(tenant=tenant).count() == 1


def test_deleting_a_member_in_the_admin_ends_their_tokens(operator) -> None:
    tenant = tenant_create(slug="people-delete")
    membership, _ = people.member_add(tenant=tenant, username="dewi", password="a-long-pass-6x")
    _, access = _connected(membership)

    operator.post(
        reverse("admin:controlplane_tenantmembership_changelist"),
        {"action": "delete_selected", "_selected_action": [membership.pk], "post": "yes"},
    )

    assert not TenantMembership.objects.filter(pk=membership.pk).exists()
    assert not AccessToken.objects.filter(pk=access.pk).exists()
    assert RefreshToken.objects.filter(revoked__isnull=True).count() == 0


def test_revoking_a_connection_ends_its_token_family_only(operator) -> None:
    tenant = tenant_create(slug="people-revoke")
    membership, _ = people.member_add(tenant=tenant, username="eko", password="a-long-pass-5x")
    _, revoked_token = _connected(membership)
    _, kept_token = _connected(membership)
    connection = OAuthConnection.objects.get(
        token_family=RefreshToken.objects.get(access_token=revoked_token).token_family
    )
    changelist = operator.get(reverse("admin:controlplane_oauthconnection_changelist"))
    assert "eko" in changelist.content.decode() and "Claude" in changelist.content.decode()

    response = operator.post(
        reverse("admin:controlplane_oauthconnection_changelist"),
        {"action": "revoke", "_selected_action": [connection.pk]},
        follow=True,
    )

    assert "Revoked 1 connection(s)" in " ".join(messages(response))
    assert not AccessToken.objects.filter(pk=revoked_token.pk).exists()
    assert AccessToken.objects.filter(pk=kept_token.pk).exists()
    assert TenantMembership.objects.filter(pk=membership.pk).exists()


def test_an_operator_disables_and_enables_a_client(operator) -> None:
    tenant = tenant_create(slug="people-clients")
    membership, _ = people.member_add(tenant=tenant, username="fajar", password="a-long-pass-4x")
    application, _ = _connected(membership)
    url = reverse("admin:oauth2_provider_application_changelist")

    operator.post(url, {"action": "disable", "_selected_action": [application.pk]})
    assert DisabledClient.objects.filter(application=application).exists()
    assert "disabled" in operator.get(url).content.decode()
    operator.post(url, {"action": "enable", "_selected_action": [application.pk]})
    assert not DisabledClient.objects.filter(application=application).exists()


def test_trusted_client_hosts_are_seeded_and_checked(operator) -> None:
    assert {"claude.ai", "chatgpt.com"} <= set(
        TrustedClientHost.objects.values_list("host", flat=True)
    )
    url = reverse("admin:controlplane_trustedclienthost_add")
    bad = operator.post(url, {"host": "https://evil.test/x"})
    assert "no scheme, port or path" in str(bad.context["adminform"].form.errors)
    operator.post(url, {"host": ".Example.com", "note": "our own assistant"})
    assert TrustedClientHost.objects.filter(host=".example.com").exists()
