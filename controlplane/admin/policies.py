"""Rate limits and tool rules, written through controlplane.policies like the commands do."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse

from controlplane import policies
from controlplane.admin.display import FullWidthList, utc, word
from controlplane.admin.forms import RateLimitPolicyForm, ToolPolicyForm
from controlplane.models import RateLimitPolicy, ToolPolicy

RATE_SCOPE = {"tenant", "tool", "per_key"}
TOOL_SCOPE = {"tenant", "api_key", "membership", "tool"}


def save_policy(obj: RateLimitPolicy | ToolPolicy, *, scope_changed: bool) -> None:
    """Write a policy through its service; a changed scope replaces the old row.

    The services upsert by scope (tenant, tool, per key / key), so editing a row's scope would
    otherwise leave the old rule in force next to the new one.
    """
    if scope_changed and obj.pk is not None:
        type(obj).objects.filter(pk=obj.pk).delete()
    if isinstance(obj, RateLimitPolicy):
        policies.rate_limit_set(
            tenant=obj.tenant, rate=obj.rate, tool=obj.tool, per_key=obj.per_key
        )
        obj.pk = RateLimitPolicy.objects.get(
            tenant=obj.tenant, tool=obj.tool, per_key=obj.per_key
        ).pk
    else:
        policies.tool_access_set(
            tenant=obj.tenant,
            tool=obj.tool,
            effect=obj.effect,
            api_key=obj.api_key,
            membership=obj.membership,
        )
        obj.pk = ToolPolicy.objects.get(
            tenant=obj.tenant, tool=obj.tool, api_key=obj.api_key, membership=obj.membership
        ).pk


class PolicyListAdmin(FullWidthList, admin.ModelAdmin):
    """A policy list that says what applies where it has no row."""

    change_list_template = "admin/controlplane/policy_change_list.html"

    def default_rule(self) -> str:
        raise NotImplementedError

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        return super().changelist_view(
            request, {**(extra_context or {}), "default_rule": self.default_rule()}
        )

    @admin.display(description="Updated (UTC)", ordering="updated_at")
    def updated(self, obj: RateLimitPolicy | ToolPolicy) -> str:
        return utc(obj.updated_at)


@admin.register(RateLimitPolicy)
class RateLimitPolicyAdmin(PolicyListAdmin):
    form = RateLimitPolicyForm
    list_display = ("tenant", "rate", "scope", "counted", "updated")
    list_filter = ("tenant", "per_key", "tool")
    list_select_related = ("tenant",)
    search_fields = ("tenant__slug", "tenant__name", "tool", "rate")

    def default_rule(self) -> str:
        return (
            f"A tenant without a rate limit for all its tools gets {settings.DEFAULT_RATE_LIMIT} "
            "for the whole tenant; the rows here add to or replace that."
        )

    @admin.display(description="Tool", ordering="tool")
    def scope(self, obj: RateLimitPolicy) -> str:
        return obj.tool or "all tools"

    @admin.display(description="Counted", ordering="per_key")
    def counted(self, obj: RateLimitPolicy) -> str:
        return word(obj.per_key, "per key", "whole tenant")

    def save_model(
        self, request: HttpRequest, obj: RateLimitPolicy, form: Any, change: bool
    ) -> None:
        save_policy(obj, scope_changed=change and bool(set(form.changed_data) & RATE_SCOPE))


@admin.register(ToolPolicy)
class ToolPolicyAdmin(PolicyListAdmin):
    form = ToolPolicyForm
    list_display = ("tenant", "tool", "effect", "api_key", "membership", "updated")
    list_filter = ("tenant", "effect", ("api_key", admin.EmptyFieldListFilter), "tool")
    list_select_related = ("tenant", "api_key", "membership__user")
    search_fields = ("tenant__slug", "tenant__name", "tool", "api_key__prefix")

    def default_rule(self) -> str:
        return (
            "Without a rule every tool is allowed (read-only keys: only the tools that read), "
            "and deletes wait for approval where the tenant says so. A rule for one key or "
            "member beats a rule for its tenant; an exact tool name beats *."
        )

    def save_model(self, request: HttpRequest, obj: ToolPolicy, form: Any, change: bool) -> None:
        save_policy(obj, scope_changed=change and bool(set(form.changed_data) & TOOL_SCOPE))
