"""The dashboard and live feed pages, served under /admin/ like the admin's own pages.

Both need an active staff user (operator_view) allowed to view the audit trail.
"""

from __future__ import annotations

from collections.abc import Callable

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponsePermanentRedirect,
    HttpResponseRedirect,
)
from django.template.response import TemplateResponse
from django.templatetags.static import static
from django.urls import reverse

from controlplane import approvals
from controlplane.models import Tenant, ToolCall
from controlplane.operator import charts
from controlplane.operator.consumers import FEED_PERMISSION
from controlplane.operator.dashboard import dashboard_activity, outcome_group
from controlplane.operator.routing import LIVE_FEED_PATH


def _require_audit_view(request: HttpRequest) -> None:
    if not request.user.has_perm(FEED_PERMISSION):
        raise PermissionDenied


# The busiest tenants get a panel of charts each; the others, one line each in a table.
BUSY_PANELS = 12
# Tenants beyond this many get a box for the short name instead of a menu listing them all.
TENANT_MENU_LIMIT = 200


def _tenant_menu() -> list[str] | None:
    """Every tenant's slug for the pages' tenant menu, or None when there are too many."""
    slugs = list(
        Tenant.objects.order_by("slug").values_list("slug", flat=True)[: TENANT_MENU_LIMIT + 1]
    )
    return None if len(slugs) > TENANT_MENU_LIMIT else slugs


def dashboard_view(request: HttpRequest) -> HttpResponse:
    """The last hour at a glance, for every tenant or the one named by ?tenant=<slug>.

    When one tenant made every call, the overview is that tenant's panel: drawing both would
    show the same figures twice.
    """
    _require_audit_view(request)
    slug = request.GET.get("tenant", "")
    dashboard = dashboard_activity(tenant_slug=slug)
    busy = dashboard.busy_tenants
    single = busy[0] if len(busy) == 1 else None
    panels = [
        {
            "row": row,
            "minutes": charts.minute_chart(row.activity.minutes),
            "shares": charts.outcome_shares(row.activity.outcomes),
            "tools": charts.tool_bars(row.activity.top_tools),
            "p50": charts.latency_label(row.activity.p50_ms),
            "p95": charts.latency_label(row.activity.p95_ms),
        }
        for row in busy[:BUSY_PANELS]
        if single is None
    ]
    context = {
        **admin.site.each_context(request),
        "title": "Dashboard",
        "is_nav_sidebar_enabled": False,  # the charts need the width
        "dashboard": dashboard,
        "overall_minutes": charts.minute_chart(dashboard.overall.minutes),
        "overall_shares": charts.outcome_shares(dashboard.overall.outcomes),
        "overall_tools": charts.tool_bars(dashboard.overall.top_tools),
        "overall_p50": charts.latency_label(dashboard.overall.p50_ms),
        "overall_p95": charts.latency_label(dashboard.overall.p95_ms),
        "panels": panels,
        "more_busy": [] if single else busy[BUSY_PANELS:],
        "single": single,
        "selected_tenant": slug,
        "tenant_slugs": _tenant_menu(),
        "outcome_labels": charts.OUTCOME_LABELS,
        "pending_approvals": list(
            approvals.approvals_list(tenant_slug=slug or None, pending_only=True)[:20]
        ),
    }
    return TemplateResponse(request, "admin/controlplane/dashboard.html", context)


def live_feed_view(request: HttpRequest) -> HttpResponse:
    """Recent calls, then each new one as it happens over the websocket."""
    _require_audit_view(request)
    slug = request.GET.get("tenant", "")
    recent = ToolCall.objects.select_related("tenant").order_by("-created_at")
    if slug:
        recent = recent.filter(tenant__slug=slug)
    context = {
        **admin.site.each_context(request),
        "title": "Live tool calls",
        "is_nav_sidebar_enabled": False,
        "recent": [{"call": call, "group": outcome_group(call.outcome)} for call in recent[:25]],
        "selected_tenant": slug,
        "tenant_slugs": _tenant_menu(),
        "socket_path": "/" + LIVE_FEED_PATH,
        "pending_approvals": list(
            approvals.approvals_list(tenant_slug=slug or None, pending_only=True)[:20]
        ),
    }
    return TemplateResponse(request, "admin/controlplane/live_feed.html", context)


def operator_view(view: Callable[[HttpRequest], HttpResponse]) -> Callable[..., HttpResponse]:
    """Wrap a page like the admin's own: staff login required, CSRF-protected, never cached."""
    return admin.site.admin_view(view)


def home_view(request: HttpRequest) -> HttpResponse:
    """`/`: there is no public site, so the root leads to the admin (its login when signed
    out) instead of a bare 404."""
    return HttpResponseRedirect(reverse("admin:index"))


def favicon_view(request: HttpRequest) -> HttpResponse:
    """`/favicon.ico`, which browsers ask for on pages that name no icon (the JSON ones)."""
    return HttpResponsePermanentRedirect(static("controlplane/favicon.svg"))
