"""The operators' approval queue: tool calls held until a person decides, each decided on its
own page (the tool, the arguments as the audit shows them, who asked) with an optional reason.
Decisions go through controlplane.approvals, as decide_approval does; the first one recorded
stands, so two operators clicking at once cannot both decide."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from controlplane import approvals
from controlplane.errors import InvalidInput
from controlplane.models import Approval


class StatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("waiting", "Waiting for a decision"),
            *((value, label) for value, label in Approval.Status.choices if value != "pending"),
            ("expired", "Expired"),
        ]

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        value = self.value()
        if value == "waiting":
            return approvals.approvals_list(pending_only=True).filter(pk__in=queryset.values("pk"))
        if value == "expired":
            pending = queryset.filter(status=Approval.Status.PENDING)
            return pending.exclude(pk__in=approvals.approvals_list(pending_only=True).values("pk"))
        if value:
            return queryset.filter(status=value)
        return queryset


@admin.register(Approval)
class ApprovalAdmin(admin.ModelAdmin):
    list_display = ("number", "created_at", "tenant", "tool", "asked_by", "shown", "decision")
    list_filter = (StatusFilter, "tenant")
    search_fields = ("tool", "person", "key_prefix", "decided_by")
    list_select_related = ("tenant",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the audit trail points at them

    @admin.display(description="id", ordering="pk")
    def number(self, approval: Approval) -> str:
        return f"#{approval.pk}"

    @admin.display(description="status", ordering="status")
    def shown(self, approval: Approval) -> str:
        return approval.shown_status

    @admin.display(description="decision")
    def decision(self, approval: Approval) -> str:
        if approval.shown_status == Approval.Status.PENDING:
            url = reverse("admin:controlplane_approval_decide", args=[approval.pk])
            return format_html('<a class="button" href="{}">Decide</a>', url)
        if approval.decided_by:
            return f"{approval.decided_by}" + (f": {approval.reason}" if approval.reason else "")
        return ""

    def get_urls(self) -> list[Any]:
        return [
            path(
                "<int:approval_id>/decide/",
                self.admin_site.admin_view(self.decide_view),
                name="controlplane_approval_decide",
            ),
            *super().get_urls(),
        ]

    def decide_view(self, request: HttpRequest, approval_id: int) -> HttpResponse:
        if not request.user.has_perm("controlplane.view_approval"):
            return HttpResponse(status=403)
        approval = get_object_or_404(Approval.objects.select_related("tenant"), pk=approval_id)
        changelist = reverse("admin:controlplane_approval_changelist")
        if request.method == "POST":
            decision = request.POST.get("decision")
            if decision not in ("approve", "reject"):
                messages.error(request, "Choose Approve or Reject.")
                return HttpResponseRedirect(request.path)
            try:
                decided = approvals.decide(
                    approval_id=approval.pk,
                    approve=decision == "approve",
                    decided_by=request.user.get_username(),
                    reason=request.POST.get("reason", "").strip(),
                )
            except InvalidInput as exc:
                messages.error(request, exc.message)
                return HttpResponseRedirect(changelist)
            messages.success(
                request,
                f"#{decided.pk} {decided.tool}: {decided.get_status_display().lower()}. "
                + (
                    "It runs once, when the assistant calls again."
                    if decided.status == Approval.Status.APPROVED
                    else "The assistant is told why."
                ),
            )
            return HttpResponseRedirect(changelist)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Approve {approval.tool}?",
            "approval": approval,
            "arguments": json.dumps(approval.arguments, indent=2, ensure_ascii=False),
            "pending": approval.shown_status == Approval.Status.PENDING,
        }
        return TemplateResponse(request, "admin/controlplane/approval/decide.html", context)
