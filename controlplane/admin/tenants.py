"""Tenants, with their credential, rate limits and tool rules inline, and the actions an
operator takes on a whole tenant (rotate its Qontak token, test it, revoke its keys)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from controlplane import credentials, tenants
from controlplane.admin.actions import confirmation_page
from controlplane.admin.forms import (
    HmacCredentialForm,
    RateLimitPolicyForm,
    RefreshTokenForm,
    TenantForm,
    ToolPolicyForm,
)
from controlplane.admin.policies import RATE_SCOPE, TOOL_SCOPE, save_policy
from controlplane.errors import ApplicationError
from controlplane.models import (
    ApiKey,
    ApiKeyQuerySet,
    QontakCredential,
    RateLimitPolicy,
    Tenant,
    ToolCall,
    ToolPolicy,
)


class CredentialInline(admin.StackedInline):
    model = QontakCredential
    can_delete = False
    verbose_name = "Qontak credential (in Vault)"
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
    form = RateLimitPolicyForm
    extra = 0


class ToolPolicyInline(admin.TabularInline):
    model = ToolPolicy
    form = ToolPolicyForm
    extra = 0

    def formfield_for_foreignkey(
        self, db_field: Any, request: HttpRequest, **kwargs: Any
    ) -> forms.ModelChoiceField | None:
        """Offer only this tenant's keys: a rule for another tenant's key would be refused."""
        if db_field.name == "api_key":
            match = request.resolver_match
            tenant_id = match.kwargs.get("object_id") if match else None
            kwargs["queryset"] = (
                ApiKey.objects.filter(tenant_id=tenant_id) if tenant_id else ApiKey.objects.none()
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


@dataclass(frozen=True)
class CredentialPage:
    """The admin's write-only page for one credential kind."""

    form: type[forms.Form]
    button: str
    title: str
    explanation: str
    stored: str
    store: Callable[[Tenant, dict[str, Any]], None]


CREDENTIAL_PAGES: dict[str, CredentialPage] = {
    Tenant.Auth.MEKARI_HMAC: CredentialPage(
        form=HmacCredentialForm,
        button="Set HMAC credential",
        title="Set the Mekari HMAC credential of {slug}",
        explanation="The company creates the client id and secret in the Mekari Developer "
        "Center (Applications, with the qontak-crm:all scope). They are checked with one "
        "signed call to the gateway; the secret is kept in Vault only and never displayed.",
        stored="Stored a validated HMAC credential for {slug}.",
        store=lambda tenant, data: credentials.store_hmac_credential(
            tenant=tenant, client_id=data["client_id"], client_secret=data["client_secret"]
        ),
    ),
    Tenant.Auth.QONTAK_OAUTH: CredentialPage(
        form=RefreshTokenForm,
        button="Replace refresh token",
        title="Replace the Qontak refresh token of {slug}",
        explanation="The token is exchanged once with Qontak to prove it works (Qontak then "
        "issues a new one, which is what Vault keeps). It is never displayed or written to "
        "the database.",
        stored="Stored a validated refresh token for {slug}.",
        store=lambda tenant, data: credentials.store_refresh_token(
            tenant=tenant, refresh_token=data["refresh_token"]
        ),
    ),
}


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    form = TenantForm
    list_display = (
        "slug",
        "name",
        "is_active",
        "auth",
        "credential_status",
        "token_valid_until",
        "token_last_refresh",
        "token_last_error",
        "usable_keys",
        "request_ceiling",
    )
    list_filter = ("is_active", "credential__status")
    list_select_related = ("credential",)
    search_fields = ("slug", "name")
    readonly_fields = ("credential_link", "activity_links")
    fieldsets = (
        (None, {"fields": ("slug", "name", "is_active")}),
        (
            "Qontak",
            {
                "fields": (
                    "auth",
                    "credential_link",
                    "qontak_base_url",
                    "default_qontak_user",
                    "qontak_request_ceiling",
                )
            },
        ),
        ("Activity", {"fields": ("activity_links",)}),
    )
    inlines = (CredentialInline, RateLimitInline, ToolPolicyInline)
    actions = ("rotate_now", "test_connection", "revoke_all_keys")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Tenant]:
        usable = ApiKeyQuerySet.usable_q(timezone.now(), via="api_keys")
        return (
            super()
            .get_queryset(request)
            .annotate(usable_key_count=Count("api_keys", filter=usable))
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        """The slug names the tenant's Vault secret, so it is fixed once created. Only
        superusers set the Qontak URL: the tenant's tokens are sent there."""
        fields = tuple(super().get_readonly_fields(request, obj))
        if obj is not None:
            fields = ("slug", "auth", *fields)
        if not request.user.is_superuser:
            fields = (*fields, "qontak_base_url")
        return fields

    def has_revoke_keys_permission(self, request: HttpRequest) -> bool:
        """Revoking a tenant's keys changes API keys, not the tenant."""
        opts = ApiKey._meta
        return request.user.has_perm(f"{opts.app_label}.{get_permission_codename('change', opts)}")

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

    @admin.display(description="Usable keys", ordering="usable_key_count")
    def usable_keys(self, obj: Tenant) -> int:
        return int(getattr(obj, "usable_key_count", 0))

    @admin.display(description="Qontak ceiling", ordering="qontak_request_ceiling")
    def request_ceiling(self, obj: Tenant) -> str:
        return obj.qontak_request_ceiling or "default"

    @admin.display(description="Qontak credential")
    def credential_link(self, obj: Tenant) -> str:
        if obj.pk is None:
            return "Save the tenant first."
        url = reverse("admin:controlplane_tenant_credential", args=[obj.pk])
        return format_html(
            '<a class="button" href="{}">{}</a>', url, CREDENTIAL_PAGES[obj.auth].button
        )

    @admin.display(description="See its calls")
    def activity_links(self, obj: Tenant) -> str:
        if obj.pk is None:
            return "-"
        links = (
            (reverse("operator-dashboard") + f"?tenant={obj.slug}", "Dashboard"),
            (reverse("operator-live-feed") + f"?tenant={obj.slug}", "Live feed"),
            (
                reverse("admin:controlplane_toolcall_changelist") + f"?tenant__id__exact={obj.pk}",
                "Audit trail",
            ),
        )
        return format_html_join(" · ", '<a href="{}">{}</a>', links)

    def get_urls(self) -> list[Any]:
        return [
            path(
                "<int:tenant_id>/credential/",
                self.admin_site.admin_view(self.credential_view),
                name="controlplane_tenant_credential",
            ),
            *super().get_urls(),
        ]

    def credential_view(self, request: HttpRequest, tenant_id: int) -> HttpResponse:
        """The write-only form of the tenant's credential kind: what is typed is validated,
        stored in Vault, and never rendered back, even on errors."""
        tenant = get_object_or_404(Tenant, pk=tenant_id)
        if not self.has_change_permission(request, tenant):
            return HttpResponse(status=403)
        page = CREDENTIAL_PAGES[tenant.auth]
        form = page.form(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                page.store(tenant, form.cleaned_data)
            except ApplicationError as exc:
                form.add_error(None, exc.message)
            else:
                self.message_user(request, page.stored.format(slug=tenant.slug))
                return HttpResponseRedirect(
                    reverse("admin:controlplane_tenant_change", args=[tenant.pk])
                )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": tenant,
            "title": page.title.format(slug=tenant.slug),
            "explanation": page.explanation,
            "form": form,
        }
        return TemplateResponse(request, "admin/controlplane/tenant/credential.html", context)

    @admin.action(description="Rotate the Qontak token now…", permissions=("change",))
    def rotate_now(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> Any:
        page = confirmation_page(
            self,
            request,
            queryset,
            action="rotate_now",
            title="Rotate the Qontak tokens of these tenants?",
            consequence="Each tenant's refresh token is exchanged with Qontak now. Qontak "
            "invalidates the old refresh token, so any copy kept outside Vault stops working.",
            button="Yes, rotate now",
        )
        if page is not None:
            return page
        for tenant in queryset:
            try:
                seen = credentials.stored_version(tenant=tenant)
            except ApplicationError as exc:
                self.message_user(request, f"{tenant.slug}: {exc.message}", messages.ERROR)
                continue
            result = credentials.token_rotate(
                tenant=tenant, seen_version=seen, window=0, force=True
            )
            level = messages.ERROR if result.failed else messages.SUCCESS
            self.message_user(request, f"{tenant.slug}: {result.action}, {result.detail}", level)
        return None

    # Change, not view: the test may spend the tenant's refresh token on a refresh.
    @admin.action(description="Test the connection to Qontak", permissions=("change",))
    def test_connection(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        for tenant in queryset:
            try:
                self.message_user(request, credentials.tenant_connection_test(tenant=tenant))
            except ApplicationError as exc:
                self.message_user(request, f"{tenant.slug}: {exc.message}", messages.ERROR)

    @admin.action(
        description="Revoke every API key of these tenants…", permissions=("revoke_keys",)
    )
    def revoke_all_keys(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> Any:
        page = confirmation_page(
            self,
            request,
            queryset,
            action="revoke_all_keys",
            title="Revoke every API key of these tenants?",
            consequence="Every assistant using these tenants' keys gets HTTP 401 from its next "
            "call. Revoked keys cannot be restored; issue new ones instead.",
            button="Yes, revoke their keys",
        )
        if page is not None:
            return page
        revoked = tenants.api_keys_revoke(keys=ApiKey.objects.filter(tenant__in=queryset))
        self.message_user(request, f"Revoked {revoked} key(s).", messages.SUCCESS)
        return None

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        """No bulk delete: each deletion destroys a Vault secret and may be refused."""
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """A tenant with an audit trail is deactivated, never deleted (the rows are kept)."""
        if obj is not None and ToolCall.objects.filter(tenant=obj).exists():
            return False
        return super().has_delete_permission(request, obj)

    def delete_model(self, request: HttpRequest, obj: Tenant) -> None:
        tenants.tenant_delete(tenant=obj)

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        try:
            return super().delete_view(request, object_id, extra_context)
        except ApplicationError as exc:  # Vault could not destroy the secret: nothing deleted
            self.message_user(request, f"Not deleted: {exc.message}", messages.ERROR)
            return HttpResponseRedirect(
                reverse("admin:controlplane_tenant_change", args=[object_id])
            )

    def save_model(self, request: HttpRequest, obj: Tenant, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        created = tenants.tenant_create(
            slug=obj.slug,
            name=obj.name,
            qontak_base_url=obj.qontak_base_url,
            is_active=obj.is_active,
            qontak_request_ceiling=obj.qontak_request_ceiling,
            auth=obj.auth,
            default_qontak_user=obj.default_qontak_user,
        )
        obj.pk = created.pk
        obj.created_at = created.created_at

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        """Policy rows are written through controlplane.policies, like set_rate_limit does."""
        if formset.model not in (RateLimitPolicy, ToolPolicy):
            super().save_formset(request, form, formset, change)
            return
        instances = formset.save(commit=False)
        for deleted in formset.deleted_objects:
            deleted.delete()
        scope = RATE_SCOPE if formset.model is RateLimitPolicy else TOOL_SCOPE
        changed = {obj.pk: set(fields) for obj, fields in formset.changed_objects}
        for instance in instances:
            instance.tenant = form.instance
            save_policy(instance, scope_changed=bool(changed.get(instance.pk, set()) & scope))
