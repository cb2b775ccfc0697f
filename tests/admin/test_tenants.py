"""Tenant pages: adding one, its refresh token, the Qontak URL and ceiling, tenant actions."""

from __future__ import annotations

from auditlog.models import LogEntry
from django.urls import reverse

from controlplane.models import ApiKey, QontakCredential, Tenant
from controlplane.tenants import tenant_create
from tests.admin.pages import created_entry, form_data, messages, tenant_add_data


def test_adding_a_tenant_in_the_admin_creates_its_vault_reference(operator):
    response = operator.post(
        reverse("admin:controlplane_tenant_add"),
        tenant_add_data(slug="acme", name="Acme", is_active="on"),
    )
    assert response.status_code == 302, response.content[:2000]
    credential = QontakCredential.objects.get(tenant__slug="acme")
    assert credential.vault_path.startswith(f"qontak/tenants/{credential.tenant_id}-")
    assert LogEntry.objects.get_for_object(Tenant.objects.get(slug="acme")).exists()


def test_replacing_the_refresh_token_validates_it_and_never_shows_it(operator, openbao, simulator):
    from devtools.devstack import create_simulator_account
    from tests.servers import tenant_secret

    tenant = tenant_create(slug="replace-me", qontak_base_url=simulator.url)
    url = reverse("admin:controlplane_tenant_credential", args=[tenant.pk])
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
    assert "Stored a validated refresh token" in " ".join(messages(accepted))
    assert fresh not in accepted.content.decode()
    assert tenant_secret(tenant) is not None


def test_rotate_now_and_test_connection_actions_report_per_tenant(operator, openbao, simulator):
    from controlplane.credentials import store_refresh_token
    from devtools.devstack import create_simulator_account

    ready = tenant_create(slug="ready", qontak_base_url=simulator.url)
    store_refresh_token(
        tenant=ready, refresh_token=create_simulator_account(simulator.url, "ready")
    )
    empty = tenant_create(slug="empty", qontak_base_url=simulator.url)
    changelist = reverse("admin:controlplane_tenant_changelist")
    selected = [ready.pk, empty.pk]

    rotated = operator.post(
        changelist,
        {"action": "rotate_now", "_selected_action": selected, "confirmed": "yes"},
        follow=True,
    )
    shown = " | ".join(messages(rotated))
    assert "ready: rotated" in shown
    assert "empty: failed, no Qontak refresh token stored" in shown

    tested = operator.post(
        changelist, {"action": "test_connection", "_selected_action": selected}, follow=True
    )
    shown = " | ".join(messages(tested))
    assert "ready: Vault, token refresh and the Qontak API all answered" in shown
    assert "empty: no credential is stored yet. Press “Store refresh token”" in shown
    assert "manage.py" not in shown
    listing = operator.get(changelist).content.decode()
    assert "Valid" in listing and "No credential stored" in listing


def test_destructive_actions_ask_for_confirmation_before_doing_anything(operator):
    from controlplane.tenants import api_key_issue

    tenant = tenant_create(slug="careful")
    issued = api_key_issue(tenant=tenant)
    for changelist, action, selected in (
        ("admin:controlplane_apikey_changelist", "revoke", issued.api_key.pk),
        ("admin:controlplane_tenant_changelist", "revoke_all_keys", tenant.pk),
        ("admin:controlplane_tenant_changelist", "rotate_now", tenant.pk),
    ):
        page = operator.post(
            reverse(changelist), {"action": action, "_selected_action": [selected]}
        )
        assert page.status_code == 200
        html = page.content.decode()
        assert 'name="confirmed" value="yes"' in html, action
        assert f'name="action" value="{action}"' in html
        assert "No, take me back" in html
    assert ApiKey.objects.get(pk=issued.api_key.pk).revoked_at is None


def test_tenant_admin_sets_and_lists_the_qontak_request_ceiling(operator):
    tenant = tenant_create(slug="quota")
    page = operator.get(reverse("admin:controlplane_tenant_change", args=[tenant.pk]))
    data = form_data(page)
    data["qontak_request_ceiling"] = "300/m"
    response = operator.post(reverse("admin:controlplane_tenant_change", args=[tenant.pk]), data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert Tenant.objects.get(pk=tenant.pk).qontak_request_ceiling == "300/m"
    listing = operator.get(reverse("admin:controlplane_tenant_changelist")).content.decode()
    assert "300/m" in listing


def test_a_tenant_added_inactive_with_a_ceiling_is_stored_and_logged_that_way(operator):
    response = operator.post(
        reverse("admin:controlplane_tenant_add"),
        tenant_add_data(slug="dormant", name="Dormant", qontak_request_ceiling="120/m"),
    )
    assert response.status_code == 302, response.content[:2000]
    tenant = Tenant.objects.get(slug="dormant")
    assert not tenant.is_active
    assert tenant.qontak_request_ceiling == "120/m"
    assert QontakCredential.objects.filter(tenant=tenant).exists()
    created = created_entry(tenant)  # the audit log records what was stored
    assert created["is_active"][1] == "False"
    assert created["qontak_request_ceiling"][1] == "120/m"


def _staff(username: str, *codenames: str):
    """A logged-in staff user (not a superuser) holding only the named permissions."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission
    from django.test import Client as DjangoClient

    user = get_user_model().objects.create_user(username, password="pw-123456", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client = DjangoClient()
    client.force_login(user)
    return client


def _actions(client) -> set[str]:
    listing = client.get(reverse("admin:controlplane_tenant_changelist"))
    assert listing.status_code == 200
    form = listing.context["action_form"]  # None when no action is allowed
    return {name for name, _ in form.fields["action"].choices if name} if form else set()


def test_only_a_superuser_changes_a_tenants_qontak_url(operator):
    tenant = tenant_create(slug="pinned", qontak_base_url="https://app.qontak.com")
    change_url = reverse("admin:controlplane_tenant_change", args=[tenant.pk])
    staff = _staff("changer", "view_tenant", "change_tenant")

    page = staff.get(change_url)
    assert 'name="qontak_base_url"' not in page.content.decode()  # shown read-only
    assert "https://app.qontak.com" in page.content.decode()
    data = {**form_data(page), "name": "Renamed", "qontak_base_url": "https://api.mekari.com"}
    response = staff.post(change_url, data)
    assert response.status_code == 302, response.content[:2000]
    tenant.refresh_from_db()
    assert (tenant.name, tenant.qontak_base_url) == ("Renamed", "https://app.qontak.com")

    page = operator.get(change_url)
    assert 'name="qontak_base_url"' in page.content.decode()
    refused = operator.post(
        change_url, {**form_data(page), "qontak_base_url": "http://169.254.169.254/latest/"}
    )
    assert refused.status_code == 200
    assert "add the host to QONTAK_ALLOWED_HOSTS" in refused.content.decode()
    accepted = operator.post(
        change_url, {**form_data(page), "qontak_base_url": "https://api.mekari.com"}
    )
    assert accepted.status_code == 302
    tenant.refresh_from_db()
    assert tenant.qontak_base_url == "https://api.mekari.com"


def test_tenant_actions_need_the_permissions_their_effects_imply(db):
    tenant = tenant_create(slug="watched")
    viewer = _staff("viewer", "view_tenant")
    assert _actions(viewer) == set()  # testing the connection may spend a refresh token
    tested = viewer.post(
        reverse("admin:controlplane_tenant_changelist"),
        {"action": "test_connection", "_selected_action": [tenant.pk]},
        follow=True,
    )
    assert tested.status_code == 200
    assert not [shown for shown in messages(tested) if "watched" in shown]  # nothing ran

    assert _actions(_staff("changer", "view_tenant", "change_tenant")) == {
        "rotate_now",
        "test_connection",
    }
    key_manager = _staff("keys", "view_tenant", "change_tenant", "change_apikey")
    assert {"revoke_all_keys", "test_connection"} <= _actions(key_manager)
