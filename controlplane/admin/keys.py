"""API keys: issued and revoked through controlplane.tenants, like the commands do."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from controlplane import tenants
from controlplane.admin.actions import confirmation_page
from controlplane.admin.forms import ApiKeyForm
from controlplane.models import ApiKey, ApiKeyQuerySet


class KeyStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("usable", "Usable"), ("revoked", "Revoked"), ("expired", "Expired")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> QuerySet[ApiKey]:
        now = timezone.now()
        if self.value() == "usable":
            return queryset.filter(ApiKeyQuerySet.usable_q(now))
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        if self.value() == "expired":
            return queryset.filter(ApiKeyQuerySet.expired_q(now))
        return queryset


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    list_display = (
        "prefix",
        "tenant",
        "label",
        "read_only",
        "state",
        "created_at",
        "last_used_at",
        "expires_at",
        "pepper_id",
    )
    # By pepper id: which keys still wait for their first use since a pepper rotation.
    list_filter = (KeyStateFilter, "read_only", "tenant", "pepper_id", "created_at", "last_used_at")
    list_select_related = ("tenant",)
    search_fields = ("prefix", "label", "tenant__slug", "tenant__name")
    readonly_fields = ("prefix", "created_at", "last_used_at", "revoked_at", "pepper_id")
    fields = ("tenant", "label", "read_only", "expires_at", *readonly_fields)
    actions = ("revoke",)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        """A key's tenant is fixed: moving it would hand its holder another CRM account."""
        fields = tuple(super().get_readonly_fields(request, obj))
        return ("tenant", *fields) if obj is not None else fields

    @admin.display(description="State")
    def state(self, obj: ApiKey) -> str:
        if obj.revoked_at is not None:
            return "revoked"
        return "usable" if obj.is_usable else "expired"

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        issued = tenants.api_key_issue(
            tenant=obj.tenant,
            label=obj.label,
            read_only=obj.read_only,
            expires_at=obj.expires_at,
            qontak_user=obj.qontak_user,
        )
        obj.pk = issued.api_key.pk
        messages.warning(
            request,
            f"New API key (shown once, copy it now): {issued.key}",
        )

    @admin.action(description="Revoke selected keys…", permissions=("change",))
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> Any:
        page = confirmation_page(
            self,
            request,
            queryset,
            action="revoke",
            title="Revoke these API keys?",
            consequence="Assistants using them get HTTP 401 from their next call. A revoked "
            "key cannot be restored; issue a new one instead.",
            button="Yes, revoke them",
        )
        if page is not None:
            return page
        revoked = tenants.api_keys_revoke(keys=queryset)
        self.message_user(request, f"Revoked {revoked} key(s).", messages.SUCCESS)
        return None
