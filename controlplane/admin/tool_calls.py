"""The audit trail's admin: filtered, searched and exported by operators, never edited."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters, ShowFacets
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseBadRequest
from django.http.response import HttpResponseBase
from django.urls import path
from django.utils.functional import cached_property
from django.utils.html import format_html

from controlplane import audit
from controlplane.admin.display import FullWidthList, utc, utc_with_zone
from controlplane.models import Tenant, ToolCall
from controlplane.operator.dashboard import UNKNOWN_TOOL, known_tool_q, outcome_group
from controlplane.operator.exports import tool_calls_csv_response
from qontak.endpoints import ENDPOINTS_BY_NAME


class ToolFilter(admin.SimpleListFilter):
    """The tools called, with every name that is no tool (an assistant's invention) gathered
    under one "unknown tool" entry instead of one entry each."""

    title = "tool"
    parameter_name = "tool"
    UNKNOWN = "unknown"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        called = audit.tools_called()
        known = sorted(name for name in called if name in ENDPOINTS_BY_NAME)
        unknown = any(name not in ENDPOINTS_BY_NAME for name in called)
        return [(name, name) for name in known] + (
            [(self.UNKNOWN, UNKNOWN_TOOL)] if unknown else []
        )

    def queryset(self, request: HttpRequest, queryset: QuerySet[ToolCall]) -> QuerySet[ToolCall]:
        if self.value() == self.UNKNOWN:
            return queryset.exclude(known_tool_q())
        if self.value():
            return queryset.filter(tool=self.value())
        return queryset


class TenantFilter(admin.SimpleListFilter):
    """Tenants as links while they fit in the sidebar (LISTED); beyond, a box for the short
    name (`tenant_slug`), so a deployment of thousands of tenants does not render them all.
    Links elsewhere keep using `?tenant__id__exact=`."""

    title = "tenant"
    parameter_name = "tenant__id__exact"
    SLUG = "tenant_slug"
    LISTED = 100

    def __init__(self, request: HttpRequest, params: Any, model: Any, model_admin: Any) -> None:
        slug = params.pop(self.SLUG, [""])
        self.slug = str(slug[-1]).strip()
        self.kept = [
            (name, value)
            for name, value in request.GET.items()
            if name not in (self.parameter_name, self.SLUG, "p")
        ]
        super().__init__(request, params, model, model_admin)
        if self.slug:
            self.used_parameters[self.SLUG] = self.slug
        if self.boxed:
            self.template = "admin/controlplane/toolcall/tenant_filter.html"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        tenants = list(Tenant.objects.order_by("slug").values_list("pk", "slug")[: self.LISTED + 1])
        self.boxed = len(tenants) > self.LISTED
        return [] if self.boxed else [(str(pk), slug) for pk, slug in tenants]

    def has_output(self) -> bool:
        return self.boxed or super().has_output()

    def expected_parameters(self) -> list[str | None]:
        return [self.parameter_name, self.SLUG]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ToolCall]) -> QuerySet[ToolCall]:
        if tenant_id := self.value():
            queryset = queryset.filter(tenant_id=tenant_id)
        if self.slug:
            queryset = queryset.filter(tenant__slug=self.slug)
        return queryset


class EstimatedCountPaginator(Paginator):
    """Pages of a list too large to count on every page view: above ESTIMATE_ABOVE rows the
    count is the database planner's estimate (the page says "about"), below it is exact."""

    ESTIMATE_ABOVE = 10_000
    estimated = False

    @cached_property
    def count(self) -> int:
        rows = self.object_list
        estimate = audit.rows_estimate(rows) if isinstance(rows, QuerySet) else None
        if estimate is None or estimate <= self.ESTIMATE_ABOVE:
            return super().count
        self.estimated = True
        return estimate


@admin.register(ToolCall)
class ToolCallAdmin(FullWidthList, admin.ModelAdmin):
    """Read-only: the audit trail is written by the MCP endpoint and never edited.

    Built for a year of rows: no date hierarchy and no key filter (each would read the whole
    table, or list every key), no facet counts, an estimated count on large lists, and a search
    that matches whole values through an index (audit.tool_calls_search)."""

    list_display = (
        "created",
        "tenant",
        "key",
        "tool",
        "outcome_badge",
        "upstream",
        "latency",
    )
    list_filter = ("outcome", TenantFilter, ToolFilter, "created_at")
    list_select_related = ("tenant",)
    search_fields = ("request_id",)  # shows the search box; get_search_results does the work
    search_help_text = (
        "A request id, key prefix, person, tool or tenant slug, written in full "
        "(words are matched exactly, not as parts of the message)."
    )
    paginator = EstimatedCountPaginator
    # The audit table grows without bound: skip the unfiltered COUNT(*) on every page.
    show_full_result_count = False
    show_facets = ShowFacets.NEVER
    actions = ("export_csv",)

    @admin.display(description="Outcome", ordering="outcome")
    def outcome_badge(self, obj: ToolCall) -> str:
        return format_html(
            '<span class="outcome outcome-{}">{}</span>', outcome_group(obj.outcome), obj.outcome
        )

    @admin.display(description="Key or person", ordering="key_prefix")
    def key(self, obj: ToolCall) -> str:
        """An OAuth call names its person, with the assistant client on hover."""
        if obj.person:
            return format_html('<span title="{}">{}</span>', obj.oauth_client, obj.person)
        return obj.key_prefix

    @admin.display(description="Time (UTC)", ordering="created_at")
    def created(self, obj: ToolCall) -> str:
        return utc(obj.created_at, seconds=True)

    @admin.display(description="Created at")
    def created_at_utc(self, obj: ToolCall) -> str:
        return utc_with_zone(obj.created_at)

    @admin.display(description="Qontak HTTP", ordering="upstream_status")
    def upstream(self, obj: ToolCall) -> str:
        return str(obj.upstream_status) if obj.upstream_status else "\u2013"

    @admin.display(description="Latency (ms)", ordering="latency_ms")
    def latency(self, obj: ToolCall) -> str:
        return f"{obj.latency_ms:.1f}"

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[ToolCall], search_term: str
    ) -> tuple[QuerySet[ToolCall], bool]:
        return audit.tool_calls_search(queryset, search_term), False

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest) -> bool:
        """A key's calls stay reachable by link (`?api_key__id__exact=`) without a filter
        listing every key in the sidebar."""
        return lookup == "api_key__id__exact" or super().lookup_allowed(lookup, value, request)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        """Every column, with the time in UTC and the latency rounded as on the list."""
        shown = {"created_at": "created_at_utc", "latency_ms": "latency"}
        names = [shown.get(str(name), str(name)) for name in super().get_fields(request, obj)]
        return list(dict.fromkeys(names))  # the read-only ones come back at the end too

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return ("created_at_utc", "latency")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Export selected calls as CSV", permissions=("view",))
    def export_csv(self, request: HttpRequest, queryset: QuerySet[ToolCall]) -> Any:
        return tool_calls_csv_response(queryset)

    def get_urls(self) -> list[Any]:
        return [
            path(
                "export.csv",
                self.admin_site.admin_view(self.export_view),
                name="controlplane_toolcall_export",
            ),
            *super().get_urls(),
        ]

    def export_view(self, request: HttpRequest) -> HttpResponseBase:
        """Every row of the list as currently filtered and searched (all pages), as CSV."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            return HttpResponseBadRequest("Unknown filter in the export link.")
        return tool_calls_csv_response(changelist.get_queryset(request))
