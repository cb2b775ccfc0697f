"""API keys in the admin: issuing, revoking one or in bulk, their audit log, their states."""

from __future__ import annotations

from auditlog.models import LogEntry
from django.urls import reverse

from controlplane.models import ApiKey
from controlplane.tenants import api_key_digest, tenant_create
from tests.admin.pages import created_entry, messages


def test_issuing_a_key_in_the_admin_shows_it_once_and_stores_only_a_digest(operator):
    import json

    tenant = tenant_create(slug="keys")
    response = operator.post(
        reverse("admin:controlplane_apikey_add"),
        {"tenant": tenant.pk, "label": "cursor", "expires_at_0": "", "expires_at_1": ""},
    )
    assert response.status_code == 200  # the answer to the POST, never a page to come back to
    key = response.context["key"]
    stored = ApiKey.objects.get(tenant=tenant)
    assert stored.digest == api_key_digest(key)
    html = response.content.decode()
    assert f'<pre id="issued-key" class="copy-source">{key}</pre>' in html
    assert 'data-copy="issued-key"' in html and "controlplane/copy.js" in html
    assert "was added" not in html  # no "The API key "… (keys)" was added" banner
    cursor = json.loads(response.context["configs"][0].text)
    assert cursor["mcpServers"]["qontak"] == {
        "url": "http://testserver/mcp",
        "headers": {"Authorization": f"Bearer {key}"},
    }
    assert "no-store" in response["Cache-Control"]
    page = operator.get(reverse("admin:controlplane_apikey_change", args=[stored.pk]))
    assert key not in page.content.decode()


def test_revoke_action_revokes_selected_keys(operator):
    from controlplane.tenants import api_key_issue

    tenant = tenant_create(slug="revoking")
    issued = api_key_issue(tenant=tenant)
    operator.post(
        reverse("admin:controlplane_apikey_changelist"),
        {"action": "revoke", "_selected_action": [issued.api_key.pk], "confirmed": "yes"},
    )
    assert ApiKey.objects.get(pk=issued.api_key.pk).revoked_at is not None


def test_revoking_every_key_of_a_tenant_leaves_other_tenants_keys_alone(operator):
    from controlplane.tenants import api_key_issue

    leaked = tenant_create(slug="leaked")
    other = tenant_create(slug="other")
    for _ in range(2):
        api_key_issue(tenant=leaked)
    kept = api_key_issue(tenant=other).api_key
    response = operator.post(
        reverse("admin:controlplane_tenant_changelist"),
        {"action": "revoke_all_keys", "_selected_action": [leaked.pk], "confirmed": "yes"},
        follow=True,
    )
    assert "Revoked 2 key(s)." in messages(response)
    assert not ApiKey.objects.filter(tenant=leaked, revoked_at__isnull=True).exists()
    assert ApiKey.objects.get(pk=kept.pk).revoked_at is None


def test_issuing_a_read_only_key_and_seeing_it_in_the_key_list(operator):
    tenant = tenant_create(slug="reader")
    operator.post(
        reverse("admin:controlplane_apikey_add"),
        {
            "tenant": tenant.pk,
            "label": "analyst",
            "read_only": "on",
            "expires_at_0": "",
            "expires_at_1": "",
        },
    )
    key = ApiKey.objects.get(tenant=tenant)
    assert key.read_only
    listing = operator.get(reverse("admin:controlplane_apikey_changelist"), {"read_only__exact": 1})
    assert list(listing.context["cl"].result_list) == [key]
    change = operator.get(reverse("admin:controlplane_apikey_change", args=[key.pk]))
    assert "tenant" not in change.context["adminform"].form.fields  # a key never changes tenant
    assert "read_only" in change.context["adminform"].form.fields


def test_a_key_issued_with_an_expiry_in_the_admin_is_stored_and_logged_with_it(operator):
    from datetime import datetime

    from django.utils import timezone

    tenant = tenant_create(slug="expiring")
    operator.post(
        reverse("admin:controlplane_apikey_add"),
        {
            "tenant": tenant.pk,
            "label": "trial",
            "expires_at_0": "2031-01-02",
            "expires_at_1": "03:04:05",
        },
    )
    key = ApiKey.objects.get(tenant=tenant)
    assert key.expires_at == timezone.make_aware(datetime(2031, 1, 2, 3, 4, 5))
    assert created_entry(key)["expires_at"][1] != "None"


def test_revoking_a_selection_counts_only_the_keys_it_revoked(operator):
    from controlplane.tenants import api_key_issue, api_key_revoke

    tenant = tenant_create(slug="recount")
    fresh = api_key_issue(tenant=tenant).api_key
    old = api_key_revoke(prefix=api_key_issue(tenant=tenant).api_key.prefix)
    response = operator.post(
        reverse("admin:controlplane_apikey_changelist"),
        {"action": "revoke", "_selected_action": [fresh.pk, old.pk], "confirmed": "yes"},
        follow=True,
    )
    assert "Revoked 1 key(s)." in messages(response)
    assert ApiKey.objects.get(pk=fresh.pk).revoked_at is not None
    assert ApiKey.objects.get(pk=old.pk).revoked_at == old.revoked_at  # untouched


def test_each_key_revoked_in_bulk_is_in_the_audit_log_like_a_single_revocation(operator):
    from datetime import UTC

    from django.utils import timezone

    from controlplane.tenants import api_key_issue, api_key_revoke

    tenant = tenant_create(slug="logged")
    single = api_key_revoke(prefix=api_key_issue(tenant=tenant).api_key.prefix)
    bulk = [api_key_issue(tenant=tenant).api_key for _ in range(2)]
    operator.post(
        reverse("admin:controlplane_tenant_changelist"),
        {"action": "revoke_all_keys", "_selected_action": [tenant.pk], "confirmed": "yes"},
    )
    for key in [single, *bulk]:
        entries = LogEntry.objects.get_for_object(key).filter(action=LogEntry.Action.UPDATE)
        assert entries.count() == 1, key
        revoked_at = ApiKey.objects.get(pk=key.pk).revoked_at
        assert revoked_at is not None
        assert entries[0].changes_dict == {
            "revoked_at": ["None", str(timezone.make_naive(revoked_at, UTC))]
        }
    for key in bulk:
        entry = LogEntry.objects.get_for_object(key).get(action=LogEntry.Action.UPDATE)
        assert entry.actor is not None and entry.actor.username == "operator"


def test_revoking_keys_in_bulk_announces_the_change_once_committed(
    db, monkeypatch, django_capture_on_commit_callbacks
):
    from controlplane import config_version
    from controlplane.tenants import api_key_issue, api_keys_revoke

    tenant = tenant_create(slug="announced")
    api_key_issue(tenant=tenant)
    announced: list[bool] = []
    monkeypatch.setattr(config_version, "announce_change", lambda: announced.append(True))
    with django_capture_on_commit_callbacks(execute=True):
        assert api_keys_revoke(keys=ApiKey.objects.filter(tenant=tenant)) == 1
    assert announced, "workers would keep accepting their copies of the revoked keys"


def test_keys_revoked_in_bulk_are_refused_on_the_next_call(operator, control_plane, make_tenant):
    """With REDIS_URL set the worker holds a copy of the key, which the revocation must drop."""
    import httpx

    def list_tools(key: str) -> int:
        return httpx.post(
            control_plane.mcp_url,
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}},
            headers={
                "Authorization": f"Bearer {key}",
                "Accept": "application/json, text/event-stream",
                "MCP-Protocol-Version": "2025-11-25",
            },
            timeout=30,
        ).status_code

    demo = make_tenant()
    assert list_tools(demo.key) == 200
    operator.post(
        reverse("admin:controlplane_tenant_changelist"),
        {"action": "revoke_all_keys", "_selected_action": [demo.tenant.pk], "confirmed": "yes"},
    )
    assert list_tools(demo.key) == 401


def test_key_states_agree_in_the_model_the_key_list_the_tenant_list_and_the_dashboard(
    operator,
):
    from datetime import timedelta

    from django.utils import timezone

    from controlplane.operator.dashboard import dashboard_activity
    from controlplane.tenants import api_key_issue, api_key_revoke

    now = timezone.now()
    tenant = tenant_create(slug="states")
    usable = api_key_issue(tenant=tenant).api_key
    later = api_key_issue(tenant=tenant, expires_at=now + timedelta(days=1)).api_key
    expired = api_key_issue(tenant=tenant, expires_at=now - timedelta(seconds=1)).api_key
    revoked = api_key_revoke(prefix=api_key_issue(tenant=tenant).api_key.prefix)
    keys = ApiKey.objects.filter(tenant=tenant)

    assert set(keys.usable(timezone.now())) == {key for key in keys if key.is_usable}
    assert set(keys.usable(timezone.now())) == {usable, later}
    assert set(keys.expired(timezone.now())) == {expired}
    for state, expected in (
        ("usable", {usable, later}),
        ("expired", {expired}),
        ("revoked", {revoked}),
    ):
        listing = operator.get(reverse("admin:controlplane_apikey_changelist"), {"state": state})
        assert set(listing.context["cl"].result_list) == expected, state
    tenants = operator.get(reverse("admin:controlplane_tenant_changelist"), {"q": "states"})
    assert [row.usable_key_count for row in tenants.context["cl"].result_list] == [2]
    assert dashboard_activity(tenant_slug="states").tenants[0].usable_keys == 2


def test_the_audit_log_of_a_new_key_leaves_its_digest_out(operator):
    from controlplane.tenants import api_key_issue

    issued = api_key_issue(tenant=tenant_create(slug="logged"))
    entry = LogEntry.objects.get_for_object(issued.api_key).get(action=LogEntry.Action.CREATE)
    assert "digest" not in entry.changes_dict
    assert issued.api_key.digest not in str(entry.changes)
    assert "prefix" in entry.changes_dict  # the entry itself is still written


def test_a_keys_pepper_id_is_listed_and_shown_read_only(operator):
    from controlplane.tenants import api_key_issue

    key = api_key_issue(tenant=tenant_create(slug="peppered")).api_key
    listing = operator.get(reverse("admin:controlplane_apikey_changelist")).content.decode()
    assert key.pepper_id and key.pepper_id in listing
    page = operator.get(reverse("admin:controlplane_apikey_change", args=[key.pk]))
    assert key.pepper_id in page.content.decode()
    assert 'name="pepper_id"' not in page.content.decode()
