"""The operator contract for people: add_member and remove_member, as scripts call them."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import User
from django.core.management.base import CommandError
from oauth2_provider.models import AccessToken, Application, RefreshToken

from controlplane.models import OAuthConnection, TenantMembership
from controlplane.tenants import tenant_create
from tests.test_commands import run

SSO_ID = "5f0c6b1e-0a1b-4c2d-8e3f-445566778899"


@pytest.fixture
def tenant(db: None):
    return tenant_create(slug=f"people-{uuid.uuid4().hex[:6]}", name="People Co")


def test_add_member_creates_the_user_with_the_password_from_stdin(tenant) -> None:
    out = run(
        "add_member", tenant.slug, "rina", "--qontak-user", SSO_ID, stdin="a-long-pass-phrase-7\n"
    )
    assert "Created user rina" in out and tenant.slug in out
    user = User.objects.get(username="rina")
    assert user.check_password("a-long-pass-phrase-7")
    membership = TenantMembership.objects.get(tenant=tenant, user=user)
    assert (membership.qontak_user, membership.read_only) == (SSO_ID, False)


def test_add_member_of_an_existing_user_reads_no_password_and_updates_the_flags(tenant) -> None:
    User.objects.create_user("budi", password="a-long-pass-phrase-8")
    out = run("add_member", tenant.slug, "budi", "--read-only")  # no stdin at all
    assert "budi is a member" in out and "read-only" in out
    run("add_member", tenant.slug, "budi")
    assert TenantMembership.objects.get(tenant=tenant, user__username="budi").read_only is False
    assert User.objects.get(username="budi").check_password("a-long-pass-phrase-8")


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["nobody-new"], "\n", "no password on standard input"),
        (["weak"], "123\n", "the password is too weak"),
        (["citra", "--qontak-user", "not-a-uuid"], "a-long-pass-phrase-9\n", "not a Mekari SSO"),
    ],
    ids=["no-password", "weak-password", "bad-sso-id"],
)
def test_add_member_refuses_bad_input_with_a_clear_error(tenant, args, stdin, message) -> None:
    with pytest.raises(CommandError, match=message):
        run("add_member", tenant.slug, *args, stdin=stdin)
    assert not TenantMembership.objects.filter(tenant=tenant).exists()


@pytest.mark.django_db
def test_add_member_names_an_unknown_tenant() -> None:
    with pytest.raises(CommandError, match="no tenant 'ghost'"):
        run("add_member", "ghost", "rina", stdin="a-long-pass-phrase-7\n")


def test_remove_member_revokes_their_token_families_and_keeps_the_user(tenant) -> None:
    run("add_member", tenant.slug, "dewi", stdin="a-long-pass-phrase-6\n")
    membership = TenantMembership.objects.get(tenant=tenant, user__username="dewi")
    application = Application.objects.create(
        name="Claude",
        client_type=Application.CLIENT_PUBLIC,
        authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        redirect_uris="https://claude.ai/api/mcp/auth_callback",
    )
    family = uuid.uuid4()
    access = AccessToken.objects.create(
        user=membership.user, application=application, token="qmcpat_x", expires="2099-01-01T00:00Z"
    )
    RefreshToken.objects.create(
        user=membership.user,
        application=application,
        token="qmcprt_x",
        access_token=access,
        token_family=family,
    )
    OAuthConnection.objects.create(
        membership=membership, application=application, token_family=family, scope="crm.read"
    )

    out = run("remove_member", tenant.slug, "dewi")

    assert "1 assistant connection(s) ended" in out
    assert not TenantMembership.objects.filter(pk=membership.pk).exists()
    assert not AccessToken.objects.filter(pk=access.pk).exists()
    assert RefreshToken.objects.get(token_family=family).revoked is not None
    assert User.objects.filter(username="dewi").exists()
    with pytest.raises(CommandError, match="'dewi' is not a member"):
        run("remove_member", tenant.slug, "dewi")
