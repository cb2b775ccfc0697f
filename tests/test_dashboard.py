"""The operator dashboard: the last hour per tenant, aggregated in the database."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from controlplane.models import QontakCredential, Tenant, ToolCall
from controlplane.operator import charts
from controlplane.operator.dashboard import (
    MinuteBucket,
    OutcomeCounts,
    ToolCount,
    dashboard_activity,
)
from controlplane.tenants import api_key_issue, api_key_revoke, tenant_create

# Selector tests pass `now` explicitly; page tests read the clock, a moment after this.
NOW = timezone.now()


def record(tenant: Tenant, *, minutes_ago: float = 0, **fields: Any) -> ToolCall:
    values = {
        "tool": "list_contacts",
        "outcome": "ok",
        "latency_ms": 10.0,
        "key_prefix": "qmcp_test0000",
        **fields,
    }
    return ToolCall.objects.create(
        tenant=tenant,
        arguments_digest="0" * 64,
        request_id="r",
        created_at=NOW - timedelta(minutes=minutes_ago),
        **values,
    )


def test_outcomes_are_grouped_and_counted_per_tenant_for_the_last_hour_only(db):
    acme = tenant_create(slug="acme")
    globex = tenant_create(slug="globex")
    for outcome in ("ok", "ok", "denied", "rate_limited", "upstream_error", "invalid_input"):
        record(acme, outcome=outcome, minutes_ago=5)
    record(acme, outcome="ok", minutes_ago=61)  # too old
    record(globex, outcome="unavailable", minutes_ago=1)

    dashboard = dashboard_activity(now=NOW)

    by_slug = {row.slug: row for row in dashboard.tenants}
    assert by_slug["acme"].activity.outcomes == OutcomeCounts(
        ok=2, denied=1, rate_limited=1, client_error=1, qontak_error=1
    )
    assert by_slug["globex"].activity.outcomes == OutcomeCounts(error=1)
    assert dashboard.overall.outcomes.total == 7
    assert [row.slug for row in dashboard.tenants] == ["acme", "globex"]  # busiest first


def test_calls_per_minute_has_sixty_buckets_ending_with_the_current_minute(db):
    acme = tenant_create(slug="acme")
    record(acme, minutes_ago=0)
    record(acme, minutes_ago=0, outcome="denied")
    record(acme, minutes_ago=59)

    minutes = dashboard_activity(now=NOW).overall.minutes

    assert len(minutes) == 60
    assert (
        minutes[-1].start == NOW.replace(second=0, microsecond=0)
        and minutes[-1].outcomes.total == 2
    )
    assert minutes[-1].outcomes.denied == 1
    assert minutes[0].start == NOW.replace(second=0, microsecond=0) - timedelta(minutes=59)
    assert minutes[0].outcomes.total == 1
    assert sum(bucket.outcomes.total for bucket in minutes) == 3


def test_latency_percentiles_use_the_nearest_rank_per_tenant_and_overall(db):
    acme = tenant_create(slug="acme")
    globex = tenant_create(slug="globex")
    for latency in range(1, 21):  # 1..20 ms
        record(acme, latency_ms=float(latency))
    record(globex, latency_ms=500.0)

    dashboard = dashboard_activity(now=NOW)

    acme_row = next(row for row in dashboard.tenants if row.slug == "acme")
    assert (acme_row.activity.p50_ms, acme_row.activity.p95_ms) == (10.0, 19.0)
    globex_row = next(row for row in dashboard.tenants if row.slug == "globex")
    assert (globex_row.activity.p50_ms, globex_row.activity.p95_ms) == (500.0, 500.0)
    # 21 calls overall: rank 11 is 11 ms, rank 20 is 20 ms.
    assert (dashboard.overall.p50_ms, dashboard.overall.p95_ms) == (11.0, 20.0)


def test_top_tools_are_the_busiest_first_and_capped(db):
    acme = tenant_create(slug="acme")
    names = ["get_deal", "get_note", "get_task", "list_deals", "list_notes", "list_tasks"]
    for index, tool in enumerate(names):
        for _ in range(index + 1):
            record(acme, tool=tool)
    record(acme, tool="list_tasks", outcome="denied")

    tools = dashboard_activity(now=NOW, top_n=3).tenants[0].activity.top_tools

    assert [(t.tool, t.calls, t.failed) for t in tools] == [
        ("list_tasks", 7, 1),
        ("list_notes", 5, 0),
        ("list_deals", 4, 0),
    ]


def test_invented_tool_names_are_counted_as_one_unknown_tool_everywhere(db, operator):
    acme = tenant_create(slug="acme")
    for invented in ("nope", "nope", "delete_everything", "list_contacts_v2"):
        record(acme, tool=invented, outcome="invalid_input")
    record(acme, tool="list_contacts")

    dashboard = dashboard_activity(now=NOW)

    for tools in (dashboard.overall.top_tools, dashboard.tenants[0].activity.top_tools):
        assert [(t.tool, t.calls) for t in tools] == [("unknown tool", 4), ("list_contacts", 1)]
    assert dashboard.overall.outcomes.client_error == 4
    audit = operator.get(reverse("admin:controlplane_toolcall_changelist"))
    tool_filter = next(f for f in audit.context["cl"].filter_specs if f.title == "tool")
    assert [title for _, title in tool_filter.lookup_choices] == ["list_contacts", "unknown tool"]
    unknown = operator.get(reverse("admin:controlplane_toolcall_changelist"), {"tool": "unknown"})
    assert sorted(c.tool for c in unknown.context["cl"].result_list) == [
        "delete_everything",
        "list_contacts_v2",
        "nope",
        "nope",
    ]


def test_token_status_and_keys_in_use_are_shown_per_tenant(db):
    acme = tenant_create(slug="acme")
    QontakCredential.objects.filter(tenant=acme).update(status="needs_reauthorization")
    busy = api_key_issue(tenant=acme, label="claude").api_key
    gone = api_key_issue(tenant=acme, label="old").api_key
    api_key_issue(tenant=acme, label="idle")
    api_key_revoke(prefix=gone.prefix)
    for _ in range(3):
        record(acme, key_prefix=busy.prefix, api_key=busy)
    record(acme, key_prefix=gone.prefix, api_key=gone, minutes_ago=2)

    row = dashboard_activity(now=NOW).tenants[0]

    assert row.token.label == "Needs re-authorization in Qontak"
    assert not row.token.healthy
    assert row.usable_keys == 2
    assert [(k.prefix, k.label, k.calls, k.revoked) for k in row.keys_in_use] == [
        (busy.prefix, "claude", 3, False),
        (gone.prefix, "old", 1, True),
    ]


def test_dashboard_costs_the_same_few_queries_however_busy(db, django_assert_max_num_queries):
    for slug in ("a", "b", "c", "d"):
        tenant = tenant_create(slug=slug)
        for minute in range(0, 60, 3):
            record(tenant, minutes_ago=minute, tool=f"tool_{minute % 7}", outcome="ok")
    with django_assert_max_num_queries(8):
        dashboard_activity(now=NOW)


def test_one_tenant_can_be_shown_alone(db):
    record(tenant_create(slug="acme"))
    record(tenant_create(slug="globex"))
    dashboard = dashboard_activity(now=NOW, tenant_slug="globex")
    assert [row.slug for row in dashboard.tenants] == ["globex"]
    assert dashboard.overall.outcomes.total == 1


def test_minute_chart_stacks_outcomes_to_scale():
    start = NOW.replace(second=0, microsecond=0)
    buckets = [MinuteBucket(start=start + timedelta(minutes=i)) for i in range(60)]
    buckets[10].outcomes.add("ok", 6)
    buckets[10].outcomes.add("internal_error", 2)
    buckets[20].outcomes.add("ok", 4)

    chart = charts.minute_chart(buckets)

    assert chart.peak == 8 and chart.y_ticks[-1].label == "10"
    busy = chart.bars[10]
    assert [s.group for s in busy.segments] == ["ok", "error"]
    ok, error = busy.segments
    assert ok.height == pytest.approx(3 * error.height)
    assert error.y + error.height == pytest.approx(ok.y)  # errors sit on top of ok
    assert chart.bars[20].segments[0].height == pytest.approx(ok.height * 4 / 6)
    assert busy.title.endswith("8 calls: 6 ok, 2 control plane errors")
    first, *_, last = chart.x_ticks
    assert (first.label, first.anchor) == (f"{start:%H:%M}", "start")
    assert (last.label, last.anchor) == (f"{start + timedelta(minutes=59):%H:%M}", "end")
    assert last.position <= chart.plot_right  # the last label stays inside the drawing


def test_tool_bars_split_each_tool_by_outcome_and_scale_to_the_busiest():
    bars = charts.tool_bars(
        [
            ToolCount("list_deals", OutcomeCounts(ok=3, denied=1)),
            ToolCount("delete_deal", OutcomeCounts(denied=2)),
        ]
    )
    assert [(s.group, s.width) for s in bars[0].segments] == [("ok", 75.0), ("denied", 25.0)]
    assert bars[0].segments[1].x == pytest.approx(75.0)
    assert [(s.group, s.width) for s in bars[1].segments] == [("denied", 50.0)]
    assert (bars[1].calls, bars[1].failed) == (2, 2)


def test_outcome_shares_add_up_to_the_whole_bar():
    shares = charts.outcome_shares(OutcomeCounts(ok=3, denied=1))
    assert [(s.group, s.percent) for s in shares] == [
        ("ok", 75.0),
        ("denied", 25.0),
        ("rate_limited", 0.0),
        ("client_error", 0.0),
        ("qontak_error", 0.0),
        ("error", 0.0),
    ]
    assert shares[1].x == pytest.approx(75.0)


# The page.


def test_dashboard_page_shows_charts_and_each_busy_tenant(operator):
    acme = tenant_create(slug="acme")
    globex = tenant_create(slug="globex")
    tenant_create(slug="sleepy")
    record(acme, minutes_ago=0, tool="create_deal", outcome="denied", latency_ms=40.0)
    record(acme, minutes_ago=1, tool="list_deals", latency_ms=20.0)
    record(globex, minutes_ago=1, tool="list_deals", latency_ms=20.0)

    page = operator.get(reverse("operator-dashboard"))

    assert page.status_code == 200
    html = page.content.decode()
    assert html.count('<svg class="chart minutes"') == 3  # all tenants, then acme and globex
    assert 'class="seg seg-denied"' in html
    assert 'id="tenant-acme"' in html and "create_deal" in html
    assert "No calls in the last hour" in html and "sleepy" in html
    assert re.search(r'id="kpi-calls">\s*3<', html)


@pytest.mark.parametrize("query", ["", "?tenant=acme"])
def test_a_tenant_that_made_every_call_is_shown_once(operator, query):
    acme = tenant_create(slug="acme")
    record(acme, tool="list_deals")
    record(acme, tool="get_deal", outcome="upstream_error", upstream_status=502)
    record(acme, tool="get_deal", outcome="invalid_input")

    html = operator.get(reverse("operator-dashboard") + query).content.decode()

    assert html.count('<svg class="chart minutes"') == 1
    assert html.count('class="ops-table keys"') == 1
    assert html.count('id="tenant-acme"') == 1
    assert re.search(r'id="kpi-client-errors"[^>]*><span class="kpi-value">1<', html)
    assert re.search(r'id="kpi-qontak-errors"[^>]*><span class="kpi-value">1<', html)
    assert re.search(r'id="kpi-errors"[^>]*><span class="kpi-value">0<', html)


def test_admin_index_links_to_the_dashboard_and_live_feed(operator):
    html = operator.get(reverse("admin:index")).content.decode()
    assert reverse("operator-dashboard") in html
    assert reverse("operator-live-feed") in html


def test_tool_names_from_assistants_are_escaped_on_the_operator_pages(operator):
    record(tenant_create(slug="acme"), tool="<script>alert(1)</script>")
    html = operator.get(reverse("operator-dashboard")).content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "unknown tool" in html  # an invented name is never drawn as a tool of its own
    html = operator.get(reverse("operator-live-feed")).content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_live_feed_page_lists_recent_calls_for_the_chosen_tenant(operator):
    call = record(
        tenant_create(slug="acme"),
        tool="get_contact",
        outcome="invalid_input",
        message="per_page must be at most 100",
    )
    record(tenant_create(slug="globex"), tool="get_company")
    html = operator.get(reverse("operator-live-feed") + "?tenant=acme").content.decode()
    assert "get_contact" in html and "get_company" not in html
    audit_row = reverse("admin:controlplane_toolcall_change", args=[call.pk])
    assert f'<a href="{audit_row}"' in html  # each row opens its audit row
    assert "per_page must be at most 100" in html  # and says why it failed
    assert 'data-socket-path="/ws/tool-calls/"' in html
    assert '<option value="acme" selected>' in html


@pytest.mark.parametrize("page", ["operator-dashboard", "operator-live-feed"])
def test_operator_pages_need_permission_to_view_the_audit_trail(db, page):
    helpdesk = get_user_model().objects.create_user("helpdesk", password="x", is_staff=True)
    client = Client()
    client.force_login(helpdesk)
    assert client.get(reverse(page)).status_code == 403
    helpdesk.user_permissions.add(Permission.objects.get(codename="view_toolcall"))
    assert client.get(reverse(page)).status_code == 200


def test_people_and_their_assistants_are_named_where_keys_are(operator):
    acme = tenant_create(slug="people-dash")
    record(acme, key_prefix="", person="rina", oauth_client="Claude")
    page = operator.get(reverse("operator-dashboard")).content.decode()
    assert '<td class="person">rina</td>' in page and "<td>Claude</td>" in page
    feed = operator.get(reverse("operator-live-feed")).content.decode()
    assert '<span class="person" title="Claude">rina</span>' in feed
    audit = operator.get(reverse("admin:controlplane_toolcall_changelist")).content.decode()
    assert '<span title="Claude">rina</span>' in audit


def test_calls_waiting_for_approval_are_on_the_dashboard_and_the_feed(operator):
    from controlplane.models import Approval

    acme = tenant_create(slug="approvals-dash")
    waiting = Approval.objects.create(
        tenant=acme,
        key_prefix="qmcp_test0000",
        tool="delete_deal",
        arguments={"id": 7},
        arguments_digest="0" * 64,
        expires_at=timezone.now() + timedelta(minutes=30),
    )
    Approval.objects.create(
        tenant=acme,
        key_prefix="qmcp_test0000",
        tool="delete_task",
        arguments_digest="1" * 64,
        expires_at=timezone.now() - timedelta(minutes=1),
    )
    decide = reverse("admin:controlplane_approval_decide", args=[waiting.pk])
    for page in (reverse("operator-dashboard"), reverse("operator-live-feed")):
        html = operator.get(page).content.decode()
        assert 'id="approvals-count">1<' in html and decide in html
        assert "delete_deal" in html and "delete_task" not in html  # expired: nothing to decide
    record(acme, outcome="pending_approval", tool="delete_deal")
    dashboard = dashboard_activity(tenant_slug="approvals-dash")
    assert dashboard.overall.outcomes.denied == 1  # held by policy, not an error


def test_with_many_tenants_the_pages_stay_short_and_lead_with_what_needs_attention(
    operator, monkeypatch
):
    from controlplane.operator import dashboard, views

    monkeypatch.setattr(dashboard, "QUIET_SHOWN", 2)
    monkeypatch.setattr(views, "BUSY_PANELS", 1)
    monkeypatch.setattr(views, "TENANT_MENU_LIMIT", 3)
    busiest, busy = tenant_create(slug="busiest"), tenant_create(slug="busy")
    for _ in range(3):
        record(busiest)
    record(busy)
    for slug in ("q-a", "q-b", "q-c"):
        QontakCredential.objects.filter(tenant=tenant_create(slug=slug)).update(status="valid")
    broken = tenant_create(slug="q-z-broken")
    QontakCredential.objects.filter(tenant=broken).update(status="needs_reauthorization")

    html = operator.get(reverse("operator-dashboard")).content.decode()

    assert 'id="tenant-busiest"' in html and 'id="tenant-busy"' not in html  # one panel
    assert re.search(r'class="ops-table more-busy".*?\?tenant=busy"', html, re.S)
    start = html.index("No calls in the last hour")
    quiet = html[start : html.index("</section>", start)]
    assert quiet.index("q-z-broken") < quiet.index("q-a")  # the broken token first
    assert "q-b" not in quiet and "And 2 more tenants without calls" in quiet
    # Six tenants are too many for the (lowered) menu: a box takes the short name instead.
    for page in ("operator-dashboard", "operator-live-feed"):
        body = operator.get(reverse(page)).content.decode()
        assert 'type="search"' in body and "<option" not in body
