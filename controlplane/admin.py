"""Operator pages. Writes go through the same services the commands use."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from controlplane import tenants
from controlplane.models import (
    ApiKey,
    QontakCredential,
    RateLimitPolicy,
    Tenant,
    ToolCall,
    ToolPolicy,
)


class CredentialInline(admin.StackedInline):
    model = QontakCredential
    can_delete = False
    readonly_fields = (
        "vault_mount",
        "vault_path",
        "vault_version",
        "status",
        "access_token_expires_at",
        "last_refreshed_at",
        "last_error",
    )
    fields = readonly_fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class RateLimitInline(admin.TabularInline):
    model = RateLimitPolicy
    extra = 0


class ToolPolicyInline(admin.TabularInline):
    model = ToolPolicy
    extra = 0


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "is_active", "credential_status", "created_at")
    list_filter = ("is_active", "credential__status")
    search_fields = ("slug", "name")
    inlines = (CredentialInline, RateLimitInline, ToolPolicyInline)

    @admin.display(description="Qontak token")
    def credential_status(self, obj: Tenant) -> str:
        credential = getattr(obj, "credential", None)
        return credential.get_status_display() if credential else "-"

    def save_model(self, request: HttpRequest, obj: Tenant, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        created = tenants.tenant_create(
            slug=obj.slug, name=obj.name, qontak_base_url=obj.qontak_base_url
        )
        obj.pk = created.pk
        obj.created_at = created.created_at


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("prefix", "tenant", "label", "created_at", "last_used_at", "revoked_at")
    list_filter = ("tenant", "revoked_at")
    search_fields = ("prefix", "label", "tenant__slug")
    readonly_fields = ("prefix", "created_at", "last_used_at", "revoked_at")
    fields = ("tenant", "label", "expires_at", *readonly_fields)
    actions = ("revoke",)

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        issued = tenants.api_key_issue(tenant=obj.tenant, label=obj.label)
        if obj.expires_at:
            ApiKey.objects.filter(pk=issued.api_key.pk).update(expires_at=obj.expires_at)
        obj.pk = issued.api_key.pk
        messages.warning(
            request,
            f"New API key (shown once, copy it now): {issued.key}",
        )

    @admin.action(description="Revoke selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for api_key in queryset:
            tenants.api_key_revoke(prefix=api_key.prefix)
        self.message_user(request, f"Revoked {queryset.count()} key(s).")


@admin.register(RateLimitPolicy)
class RateLimitPolicyAdmin(admin.ModelAdmin):
    list_display = ("tenant", "rate", "tool", "per_key", "updated_at")
    list_filter = ("tenant", "per_key")
    search_fields = ("tenant__slug", "tool")


@admin.register(ToolPolicy)
class ToolPolicyAdmin(admin.ModelAdmin):
    list_display = ("tenant", "api_key", "tool", "effect", "updated_at")
    list_filter = ("tenant", "effect")
    search_fields = ("tenant__slug", "tool")


@admin.register(ToolCall)
class ToolCallAdmin(admin.ModelAdmin):
    """Read-only: the audit trail is written by the MCP endpoint and never edited."""

    list_display = (
        "created_at",
        "tenant",
        "key_prefix",
        "tool",
        "outcome",
        "upstream_status",
        "latency_ms",
    )
    list_filter = ("outcome", "tenant", "tool", "created_at")
    search_fields = ("tool", "key_prefix", "request_id", "tenant__slug")
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
