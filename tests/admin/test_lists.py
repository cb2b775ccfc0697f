"""Every model's list page, and the audit list: read-only rows, filters and CSV export."""

from __future__ import annotations

import pytest
from django.urls import reverse

from controlplane.models import ToolCall
from controlplane.tenants import tenant_create

MODELS = ["tenant", "apikey", "ratelimitpolicy", "toolpolicy", "toolcall"]


@pytest.mark.parametrize("model", MODELS)
def test_every_model_has_an_admin_list_page(operator, model):
    tenant_create(slug="listed")
    response = operator.get(reverse(f"admin:controlplane_{model}_changelist"))
    assert response.status_code == 200


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


def test_lists_state_the_time_zone_and_show_yes_no_as_words(operator):
    from controlplane.tenants import api_key_issue

    tenant = tenant_create(slug="zoned")
    api_key_issue(tenant=tenant, read_only=False)
    _call(tenant, latency_ms=8.923247999973682)
    keys = operator.get(reverse("admin:controlplane_apikey_changelist")).content.decode()
    assert "Created (UTC)" in keys and "Expires (UTC)" in keys
    assert "read-write" in keys and "icon-no.svg" not in keys  # no red cross for "No"
    tenants = operator.get(reverse("admin:controlplane_tenant_changelist")).content.decode()
    assert "icon-yes.svg" not in tenants and ">active<" in tenants
    calls = operator.get(reverse("admin:controlplane_toolcall_changelist")).content.decode()
    assert "Time (UTC)" in calls and "8.9<" in calls


def test_an_audit_row_shows_its_latency_rounded_and_its_time_in_utc(operator):
    call = _call(tenant_create(slug="rounded"), latency_ms=8.923247999973682)
    page = operator.get(reverse("admin:controlplane_toolcall_change", args=[call.pk]))
    html = page.content.decode()
    assert "8.923247999973682" not in html and "8.9" in html
    assert f"{call.created_at:%Y-%m-%d %H:%M:%S} UTC" in html


def test_the_admin_index_lists_our_models_before_the_admin_change_history(operator):
    html = operator.get(reverse("admin:index")).content.decode()
    ours = html.index("app-controlplane")
    assert ours < html.index("app-auth") < html.index("app-auditlog")
    assert "Admin change history (who changed what here)" in html
    assert "Tool calls (audit trail)" in html
    assert 'rel="icon"' in html  # no console error for a missing favicon


def test_the_root_and_the_favicon_lead_somewhere():
    from django.test import RequestFactory

    from controlplane.operator.views import favicon_view, home_view

    request = RequestFactory().get("/")
    assert home_view(request)["Location"] == reverse("admin:index")
    assert favicon_view(request)["Location"].endswith("controlplane/favicon.svg")
