"""The audit trail built for a year of rows: whole-value searches through indexes, estimated
counts on large lists, exports in keyset pages, prunes in batches with progress.

The timings themselves are measured with 20 million rows by `make bench BENCH_ARGS=--audit-scale`;
these tests hold the behaviour those timings depend on.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from controlplane import audit
from controlplane.admin.tool_calls import EstimatedCountPaginator
from controlplane.models import Tenant, ToolCall
from controlplane.tenants import api_key_issue, tenant_create

LIST = "admin:controlplane_toolcall_changelist"


def _call(tenant: Tenant, **fields: Any) -> ToolCall:
    values: dict[str, Any] = {
        "key_prefix": "qmcp_x",
        "tool": "get_contact",
        "outcome": "ok",
        "latency_ms": 5.0,
        "arguments_digest": "0" * 64,
        "request_id": "r",
        **fields,
    }
    return ToolCall.objects.create(tenant=tenant, **values)


def _listed(response: Any) -> list[int]:
    assert response.status_code == 200
    return [call.pk for call in response.context["cl"].result_list]


@pytest.mark.django_db
def test_search_reads_each_word_as_the_request_key_tool_tenant_or_person_it_names(operator):
    acme = tenant_create(slug="acme")
    globex = tenant_create(slug="globex")
    key = api_key_issue(tenant=acme).api_key
    by_request = _call(acme, request_id="req-7f3a")
    by_key = _call(acme, api_key=key, key_prefix=key.prefix, request_id="k")
    by_tool = _call(acme, tool="delete_contact", request_id="t")
    by_tenant = _call(globex, request_id="g")
    by_person = _call(acme, person="rina", key_prefix="", request_id="p")

    def search(term: str) -> list[int]:
        return _listed(operator.get(reverse(LIST), {"q": term}))

    assert search("req-7f3a") == [by_request.pk]
    assert search(key.prefix) == [by_key.pk]
    assert search("delete_contact") == [by_tool.pk]
    assert search("globex") == [by_tenant.pk]
    assert search("rina") == [by_person.pk]
    assert search("acme delete_contact") == [by_tool.pk]  # every word must match
    assert search("req-7f") == []  # whole values: a part of a request id finds nothing
    page = operator.get(reverse(LIST), {"q": "x"}).content.decode()
    assert "written in full" in page  # the search box says how it matches


@pytest.mark.django_db
def test_a_keys_calls_stay_reachable_by_link_without_a_filter_listing_every_key(operator):
    acme = tenant_create(slug="acme")
    key = api_key_issue(tenant=acme).api_key
    mine = _call(acme, api_key=key, key_prefix=key.prefix)
    _call(acme)
    response = operator.get(reverse(LIST), {"api_key__id__exact": key.pk})
    assert _listed(response) == [mine.pk]
    titles = [spec.title for spec in response.context["cl"].filter_specs]
    assert "api key" not in titles


@pytest.mark.django_db
def test_the_tool_filter_offers_the_tools_called_and_one_entry_for_invented_names(operator):
    acme = tenant_create(slug="acme")
    for tool in ("list_deals", "get_contact", "get_contact", "made_up_tool", "other_invention"):
        _call(acme, tool=tool)
    assert audit.tools_called() == sorted(
        ["get_contact", "list_deals", "made_up_tool", "other_invention"]
    )
    response = operator.get(reverse(LIST))
    tool_filter = next(s for s in response.context["cl"].filter_specs if s.title == "tool")
    assert tool_filter.lookup_choices == [
        ("get_contact", "get_contact"),
        ("list_deals", "list_deals"),
        ("unknown", "unknown tool"),
    ]


@pytest.mark.django_db
@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the planner's estimate is PostgreSQL's"
)
def test_a_large_audit_list_shows_an_estimated_count_without_counting_rows(operator, monkeypatch):
    acme = tenant_create(slug="acme")
    ToolCall.objects.bulk_create(
        ToolCall(
            tenant=acme,
            key_prefix="qmcp_x",
            tool="get_contact",
            outcome="ok",
            latency_ms=1.0,
            arguments_digest="0" * 64,
            request_id=f"r{i}",
        )
        for i in range(300)
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE controlplane_toolcall")
    monkeypatch.setattr(EstimatedCountPaginator, "ESTIMATE_ABOVE", 100)
    with CaptureQueriesContext(connection) as queries:
        response = operator.get(reverse(LIST))
    assert response.status_code == 200
    assert not [q["sql"] for q in queries if "COUNT(" in q["sql"].upper()]
    assert response.context["cl"].paginator.estimated
    assert "about " in response.content.decode()
    # A small result (one request id) is counted exactly, and says so.
    exact = operator.get(reverse(LIST), {"q": "r7"})
    assert exact.context["cl"].result_count == 1
    assert not exact.context["cl"].paginator.estimated


@pytest.mark.django_db
def test_exports_page_through_rows_sharing_a_time_without_losing_or_repeating_one(
    operator, monkeypatch
):
    monkeypatch.setattr(audit, "EXPORT_PAGE", 3)
    acme = tenant_create(slug="acme")
    same = timezone.now() - timedelta(minutes=5)
    times = [same - timedelta(minutes=1)] + [same] * 5 + [same + timedelta(minutes=1)] * 2
    written = [_call(acme, created_at=at, request_id=f"r{i}") for i, at in enumerate(times)]
    expected = [call.request_id for call in sorted(written, key=lambda c: (c.created_at, c.pk))]

    out = io.StringIO()
    call_command("export_audit", stdout=out)
    exported = [json.loads(line)["request_id"] for line in out.getvalue().splitlines()]
    assert exported == expected

    response = operator.get(reverse("admin:controlplane_toolcall_export"))
    with pytest.warns(Warning, match="asynchronous iterators"):  # the test client is sync
        text = b"".join(response).decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [row["request_id"] for row in rows] == expected


@pytest.mark.django_db
def test_prune_deletes_oldest_first_in_batches_and_reports_progress(monkeypatch):
    from controlplane.management.commands import prune_audit

    monkeypatch.setattr(audit, "PRUNE_BATCH", 2)
    monkeypatch.setattr(prune_audit, "PROGRESS_EVERY_S", 0)
    acme = tenant_create(slug="acme")
    now = timezone.now()
    for age in (100, 101, 102, 103, 104, 5):
        _call(acme, created_at=now - timedelta(days=age), request_id=f"age{age}")
    out, err = io.StringIO(), io.StringIO()
    with CaptureQueriesContext(connection) as queries:
        call_command("prune_audit", stdout=out, stderr=err)
    assert "Deleted 5 audit rows" in out.getvalue()
    assert "Deleting 5 audit rows" in err.getvalue()
    assert "deleted 2 of 5 (40%)" in err.getvalue()
    assert list(ToolCall.objects.values_list("request_id", flat=True)) == ["age5"]
    deletes = [q["sql"] for q in queries if q["sql"].startswith("DELETE")]
    assert len(deletes) == 3  # 2 + 2 + 1 rows, each its own short statement


@pytest.mark.skipif(connection.vendor != "postgresql", reason="VACUUM is PostgreSQL's")
@pytest.mark.django_db(transaction=True)
def test_prune_vacuums_the_table_paced_like_autovacuum():
    """An unpaced VACUUM of a large table made concurrent audit inserts wait over a second."""
    acme = tenant_create(slug="acme")
    now = timezone.now()
    for age in (100, 101, 5):
        _call(acme, created_at=now - timedelta(days=age), request_id=f"age{age}")
    with CaptureQueriesContext(connection) as queries:
        call_command("prune_audit", stdout=io.StringIO(), stderr=io.StringIO())
    sent = [q["sql"] for q in queries if "vacuum" in q["sql"].lower()]
    assert sent == [
        f"SET vacuum_cost_delay = '{audit.PRUNE_VACUUM_COST_DELAY}'",
        'VACUUM (ANALYZE) "controlplane_toolcall"',
        "RESET vacuum_cost_delay",
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT n_live_tup, last_vacuum IS NOT NULL FROM pg_stat_user_tables "
            "WHERE relname = 'controlplane_toolcall'"
        )
        assert cursor.fetchone() == (1, True)


@pytest.mark.django_db
def test_with_many_tenants_the_audit_list_filters_by_a_typed_short_name(operator, monkeypatch):
    from controlplane.admin.tool_calls import TenantFilter

    acme, globex = tenant_create(slug="acme"), tenant_create(slug="globex")
    mine = _call(acme, outcome="denied")
    _call(acme)
    _call(globex, outcome="denied")
    listed = operator.get(reverse(LIST)).content.decode()
    assert "?tenant__id__exact=" in listed  # two tenants: links

    monkeypatch.setattr(TenantFilter, "LISTED", 1)
    boxed = operator.get(reverse(LIST), {"outcome__exact": "denied"})
    page = boxed.content.decode()
    assert 'name="tenant_slug"' in page and "?tenant__id__exact=" not in page
    assert '<input type="hidden" name="outcome__exact" value="denied">' in page  # kept
    filtered = operator.get(reverse(LIST), {"outcome__exact": "denied", "tenant_slug": "acme"})
    assert _listed(filtered) == [mine.pk]
    by_link = operator.get(
        reverse(LIST), {"tenant__id__exact": acme.pk, "outcome__exact": "denied"}
    )
    assert _listed(by_link) == [mine.pk]
