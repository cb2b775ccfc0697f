"""Operator pages. Writes go through the same services the commands use."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from controlplane import tenants, tokens
from controlplane.errors import ApplicationError
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


class RefreshTokenForm(forms.Form):
    refresh_token = forms.CharField(
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        strip=True,
        help_text="Paste the tenant's Qontak refresh token. It is validated with one refresh "
        "and stored in Vault; it is never shown again.",
    )


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = (
        "slug",
        "name",
        "is_active",
        "credential_status",
        "token_valid_until",
        "token_last_refresh",
        "token_last_error",
    )
    list_filter = ("is_active", "credential__status")
    list_select_related = ("credential",)
    search_fields = ("slug", "name")
    readonly_fields = ("refresh_token_link",)
    inlines = (CredentialInline, RateLimitInline, ToolPolicyInline)
    actions = ("rotate_now", "test_connection")

    @admin.display(description="Qontak token", ordering="credential__status")
    def credential_status(self, obj: Tenant) -> str:
        credential = getattr(obj, "credential", None)
        return credential.get_status_display() if credential else "-"

    @admin.display(description="Valid until", ordering="credential__access_token_expires_at")
    def token_valid_until(self, obj: Tenant) -> Any:
        credential = getattr(obj, "credential", None)
        return credential.access_token_expires_at if credential else None

    @admin.display(description="Last refresh", ordering="credential__last_refreshed_at")
    def token_last_refresh(self, obj: Tenant) -> Any:
        credential = getattr(obj, "credential", None)
        return credential.last_refreshed_at if credential else None

    @admin.display(description="Last error")
    def token_last_error(self, obj: Tenant) -> str:
        credential = getattr(obj, "credential", None)
        return credential.last_error if credential else ""

    @admin.display(description="Qontak refresh token")
    def refresh_token_link(self, obj: Tenant) -> str:
        if obj.pk is None:
            return "Save the tenant first."
        url = reverse("admin:controlplane_tenant_refresh_token", args=[obj.pk])
        return format_html('<a class="button" href="{}">Replace refresh token</a>', url)

    def get_urls(self) -> list[Any]:
        return [
            path(
                "<int:tenant_id>/refresh-token/",
                self.admin_site.admin_view(self.refresh_token_view),
                name="controlplane_tenant_refresh_token",
            ),
            *super().get_urls(),
        ]

    def refresh_token_view(self, request: HttpRequest, tenant_id: int) -> HttpResponse:
        """A form that takes the token and never renders it back, even on errors."""
        tenant = get_object_or_404(Tenant, pk=tenant_id)
        if not self.has_change_permission(request, tenant):
            return HttpResponse(status=403)
        form = RefreshTokenForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                tokens.store_refresh_token(
                    tenant=tenant, refresh_token=form.cleaned_data["refresh_token"]
                )
            except ApplicationError as exc:
                form.add_error("refresh_token", exc.message)
            else:
                self.message_user(request, f"Stored a validated refresh token for {tenant.slug}.")
                return HttpResponseRedirect(
                    reverse("admin:controlplane_tenant_change", args=[tenant.pk])
                )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": tenant,
            "title": f"Replace the Qontak refresh token of {tenant.slug}",
            "form": form,
        }
        return TemplateResponse(request, "admin/controlplane/tenant/refresh_token.html", context)

    @admin.action(description="Rotate the Qontak token now")
    def rotate_now(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        for tenant in queryset:
            try:
                seen = tokens.stored_version(tenant=tenant)
            except ApplicationError as exc:
                self.message_user(request, f"{tenant.slug}: {exc.message}", messages.ERROR)
                continue
            result = tokens.token_rotate(tenant=tenant, seen_version=seen, window=0, force=True)
            level = messages.ERROR if result.failed else messages.SUCCESS
            self.message_user(request, f"{tenant.slug}: {result.action}, {result.detail}", level)

    @admin.action(description="Test the connection to Qontak")
    def test_connection(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        for tenant in queryset:
            try:
                self.message_user(request, tokens.tenant_connection_test(tenant=tenant))
            except ApplicationError as exc:
                self.message_user(request, f"{tenant.slug}: {exc.message}", messages.ERROR)

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
