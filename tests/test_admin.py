"""The operator's admin pages: every model reachable, writes through the services."""

from __future__ import annotations

import pytest
from auditlog.models import LogEntry
from django.urls import reverse

from controlplane.models import ApiKey, QontakCredential, Tenant, ToolCall
from controlplane.tenants import api_key_digest, tenant_create

MODELS = ["tenant", "apikey", "ratelimitpolicy", "toolpolicy", "toolcall"]


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
    assert credential.vault_path == f"qontak/tenants/{credential.tenant_id}"
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
        {"action": "revoke", "_selected_action": [issued.api_key.pk], "confirmed": "yes"},
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
    from devtools.devstack import create_simulator_account
    from tests.conftest import tenant_secret

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


# Operator ergonomics (issue 6) and the audit list (issue 5).


def _call(tenant, **fields) -> ToolCall:
    values = {
        "key_prefix": "qmcp_x",
        "tool": "get_contact",
        "outcome": "ok",
        "latency_ms": 5.0,
        "arguments_digest": "0" * 64,
        "request_id": "r",
        **fields,
    }
    return ToolCall.objects.create(tenant=tenant, **values)


def _form_data(response) -> dict:
    """What the browser would post back: the admin form and its inlines as rendered."""
    data: dict = {}

    def add(form) -> None:
        for name in form.fields:
            value = form[name].value()
            if value is None or value is False:
                continue
            data[form.add_prefix(name)] = "on" if value is True else value

    add(response.context["adminform"].form)
    for inline in response.context["inline_admin_formsets"]:
        management = inline.formset.management_form
        for name in management.fields:
            data[management.add_prefix(name)] = management[name].value()
        for form in inline.formset.forms:
            add(form)
    return data


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
    assert "Revoked 2 key(s)." in _messages(response)
    assert not ApiKey.objects.filter(tenant=leaked, revoked_at__isnull=True).exists()
    assert ApiKey.objects.get(pk=kept.pk).revoked_at is None


def test_audit_list_filters_by_tenant_key_tool_outcome_and_date(operator):
    from datetime import timedelta

    from django.utils import timezone

    from controlplane.tenants import api_key_issue

    acme = tenant_create(slug="acme")
    globex = tenant_create(slug="globex")
    key = api_key_issue(tenant=acme).api_key
    wanted = _call(acme, api_key=key, key_prefix=key.prefix, tool="create_deal", outcome="denied")
    _call(acme, tool="create_deal", outcome="ok")
    _call(globex, tool="create_deal", outcome="denied")
    _call(
        acme,
        api_key=key,
        tool="create_deal",
        outcome="denied",
        created_at=timezone.now() - timedelta(days=10),
    )
    today = timezone.now().date()
    query = {
        "tenant__id__exact": acme.pk,
        "api_key__id__exact": key.pk,
        "tool": "create_deal",
        "outcome__exact": "denied",
        "created_at__gte": f"{today} 00:00:00+00:00",
        "created_at__lt": f"{today + timedelta(days=1)} 00:00:00+00:00",
    }
    response = operator.get(reverse("admin:controlplane_toolcall_changelist"), query)
    assert response.status_code == 200
    assert [call.pk for call in response.context["cl"].result_list] == [wanted.pk]


@pytest.mark.parametrize("model", MODELS)
def test_every_model_list_can_be_searched(operator, model):
    tenant_create(slug="findme")
    response = operator.get(reverse(f"admin:controlplane_{model}_changelist"), {"q": "findme"})
    assert response.status_code == 200
    assert response.context["cl"].list_filter, f"{model} has no list filters"


def _csv_rows(response) -> list[list[str]]:
    import csv

    assert response.streaming
    assert response.is_async, "a sync iterator would be buffered whole under ASGI"
    assert response["Content-Type"] == "text/csv"
    with pytest.warns(Warning, match="asynchronous iterators"):  # the test client is sync
        text = b"".join(response).decode()
    return list(csv.reader(text.splitlines()))


def test_export_link_streams_the_filtered_audit_list_as_csv(operator):
    acme = tenant_create(slug="acme")
    globex = tenant_create(slug="globex")
    _call(acme, tool="list_deals", outcome="ok")
    _call(acme, tool='=HYPERLINK("http://evil")', outcome="invalid_input")
    _call(globex, tool="list_deals")
    changelist = operator.get(
        reverse("admin:controlplane_toolcall_changelist"), {"tenant__id__exact": acme.pk}
    )
    export_url = reverse("admin:controlplane_toolcall_export") + f"?tenant__id__exact={acme.pk}"
    assert export_url in changelist.content.decode()

    rows = _csv_rows(operator.get(export_url))

    assert rows[0][:5] == ["created_at", "tenant", "key_prefix", "tool", "outcome"]
    assert [(row[1], row[3]) for row in rows[1:]] == [
        ("acme", "list_deals"),
        ("acme", '\'=HYPERLINK("http://evil")'),  # a spreadsheet will not run it
    ]


def test_export_action_streams_the_selected_calls(operator):
    tenant = tenant_create(slug="picked")
    picked = _call(tenant, tool="get_deal")
    _call(tenant, tool="get_note")
    response = operator.post(
        reverse("admin:controlplane_toolcall_changelist"),
        {"action": "export_csv", "_selected_action": [picked.pk]},
    )
    rows = _csv_rows(response)
    assert [row[3] for row in rows[1:]] == ["get_deal"]


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


def test_tenant_admin_sets_and_lists_the_qontak_request_ceiling(operator):
    tenant = tenant_create(slug="quota")
    page = operator.get(reverse("admin:controlplane_tenant_change", args=[tenant.pk]))
    data = _form_data(page)
    data["qontak_request_ceiling"] = "300/m"
    response = operator.post(reverse("admin:controlplane_tenant_change", args=[tenant.pk]), data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert Tenant.objects.get(pk=tenant.pk).qontak_request_ceiling == "300/m"
    listing = operator.get(reverse("admin:controlplane_tenant_changelist")).content.decode()
    assert "300/m" in listing


def test_policies_edited_inline_on_the_tenant_page_apply_to_the_next_call(operator):
    from controlplane import policies
    from controlplane.models import RateLimitPolicy, ToolPolicy

    tenant = tenant_create(slug="inline")
    url = reverse("admin:controlplane_tenant_change", args=[tenant.pk])
    data = _form_data(operator.get(url))
    data.update(
        {
            "rate_limits-TOTAL_FORMS": "1",
            "rate_limits-0-rate": "30/m",
            "rate_limits-0-tool": "",
            "tool_policies-TOTAL_FORMS": "1",
            "tool_policies-0-tool": "delete_contact",
            "tool_policies-0-effect": "deny",
        }
    )
    response = operator.post(url, data)
    assert response.status_code == 302, response.content[:3000]
    policy = policies.tenant_policy(tenant_id=tenant.pk)
    assert [rule.rate for rule in policy.rate_rules] == ["30/m"]
    assert not policy.tool_allowed(
        tool="delete_contact", api_key_id=1, key_read_only=False, tool_read_only=False
    )

    # Narrowing the rate to one tool replaces the tenant-wide rule instead of adding one.
    data = _form_data(operator.get(url))
    data["rate_limits-0-tool"] = "list_contacts"
    assert operator.post(url, data).status_code == 302
    assert list(RateLimitPolicy.objects.values_list("tool", "rate")) == [("list_contacts", "30/m")]
    assert ToolPolicy.objects.get(tenant=tenant).effect == "deny"


def test_tool_policy_inline_offers_only_this_tenants_keys(operator):
    from controlplane.tenants import api_key_issue

    tenant = tenant_create(slug="mine")
    mine = api_key_issue(tenant=tenant).api_key
    theirs = api_key_issue(tenant=tenant_create(slug="theirs")).api_key
    page = operator.get(reverse("admin:controlplane_tenant_change", args=[tenant.pk]))
    formset = next(
        inline.formset
        for inline in page.context["inline_admin_formsets"]
        if inline.formset.prefix == "tool_policies"
    )
    choices = set(formset.empty_form.fields["api_key"].queryset)
    assert mine in choices and theirs not in choices


# The admin as a thin caller of the services, and one rule for a usable key (issue 12).


def _tenant_add_data(**fields) -> dict:
    """The tenant add form as posted: `fields` plus empty inline formsets."""
    return {
        "qontak_base_url": "",
        **fields,
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
    }


def _created_entry(obj) -> dict:
    return LogEntry.objects.get_for_object(obj).get(action=LogEntry.Action.CREATE).changes_dict


def test_a_tenant_added_inactive_with_a_ceiling_is_stored_and_logged_that_way(operator):
    response = operator.post(
        reverse("admin:controlplane_tenant_add"),
        _tenant_add_data(slug="dormant", name="Dormant", qontak_request_ceiling="120/m"),
    )
    assert response.status_code == 302, response.content[:2000]
    tenant = Tenant.objects.get(slug="dormant")
    assert not tenant.is_active
    assert tenant.qontak_request_ceiling == "120/m"
    assert QontakCredential.objects.filter(tenant=tenant).exists()
    created = _created_entry(tenant)  # the audit log records what was stored
    assert created["is_active"][1] == "False"
    assert created["qontak_request_ceiling"][1] == "120/m"


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
    assert _created_entry(key)["expires_at"][1] != "None"


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
    assert "Revoked 1 key(s)." in _messages(response)
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


# Who may point a tenant at a Qontak host, and what actions imply (issue 13, items 3 and 14).


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
    data = {**_form_data(page), "name": "Renamed", "qontak_base_url": "https://api.mekari.com"}
    response = staff.post(change_url, data)
    assert response.status_code == 302, response.content[:2000]
    tenant.refresh_from_db()
    assert (tenant.name, tenant.qontak_base_url) == ("Renamed", "https://app.qontak.com")

    page = operator.get(change_url)
    assert 'name="qontak_base_url"' in page.content.decode()
    refused = operator.post(
        change_url, {**_form_data(page), "qontak_base_url": "http://169.254.169.254/latest/"}
    )
    assert refused.status_code == 200
    assert "add the host to QONTAK_ALLOWED_HOSTS" in refused.content.decode()
    accepted = operator.post(
        change_url, {**_form_data(page), "qontak_base_url": "https://api.mekari.com"}
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
    assert not [shown for shown in _messages(tested) if "watched" in shown]  # nothing ran

    assert _actions(_staff("changer", "view_tenant", "change_tenant")) == {
        "rotate_now",
        "test_connection",
    }
    key_manager = _staff("keys", "view_tenant", "change_tenant", "change_apikey")
    assert {"revoke_all_keys", "test_connection"} <= _actions(key_manager)


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
