"""The audit trail's admin: filtered, searched and exported by operators, never edited."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseBadRequest
from django.http.response import HttpResponseBase
from django.urls import path
from django.utils.html import format_html

from controlplane.models import ToolCall
from controlplane.operator.dashboard import outcome_group
from controlplane.operator.exports import tool_calls_csv_response


@admin.register(ToolCall)
class ToolCallAdmin(admin.ModelAdmin):
    """Read-only: the audit trail is written by the MCP endpoint and never edited."""

    list_display = (
        "created_at",
        "tenant",
        "key_prefix",
        "tool",
        "outcome_badge",
        "upstream_status",
        "latency",
    )
    list_filter = ("outcome", "tenant", "api_key", "tool", "created_at")
    list_select_related = ("tenant",)
    search_fields = ("tool", "key_prefix", "request_id", "tenant__slug", "message")
    date_hierarchy = "created_at"
    # The audit table grows without bound: skip the unfiltered COUNT(*) on every page.
    show_full_result_count = False
    actions = ("export_csv",)

    @admin.display(description="Outcome", ordering="outcome")
    def outcome_badge(self, obj: ToolCall) -> str:
        return format_html(
            '<span class="outcome outcome-{}">{}</span>', outcome_group(obj.outcome), obj.outcome
        )

    @admin.display(description="Latency (ms)", ordering="latency_ms")
    def latency(self, obj: ToolCall) -> str:
        return f"{obj.latency_ms:.1f}"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Export selected calls as CSV", permissions=("view",))
    def export_csv(self, request: HttpRequest, queryset: QuerySet[ToolCall]) -> Any:
        return tool_calls_csv_response(queryset.order_by("created_at", "pk"))

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
        queryset = changelist.get_queryset(request).order_by("created_at", "pk")
        return tool_calls_csv_response(queryset)
