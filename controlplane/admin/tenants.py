"""Tenants, with their rate limits and tool rules inline, and the onboarding path an operator
follows on the tenant page: add the tenant, store its credential, test the connection, issue
the first key. The actions on whole tenants (rotate, test, revoke keys) call the same
services."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.views.decorators.http import require_POST

from controlplane import credentials, tenants
from controlplane.admin.actions import confirmation_page
from controlplane.admin.display import EMPTY, FullWidthList, utc_with_zone, word
from controlplane.admin.forms import (
    HmacCredentialForm,
    RateLimitPolicyForm,
    RefreshTokenForm,
    TenantForm,
    ToolPolicyForm,
)
from controlplane.admin.policies import RATE_SCOPE, TOOL_SCOPE, save_policy
from controlplane.errors import ApplicationError, CredentialMissing, ReauthorizationRequired
from controlplane.models import (
    ApiKey,
    ApiKeyQuerySet,
    RateLimitPolicy,
    Tenant,
    TenantMembership,
    ToolCall,
    ToolPolicy,
)


class RateLimitInline(admin.TabularInline):
    model = RateLimitPolicy
    form = RateLimitPolicyForm
    extra = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.verbose_name_plural = (
            f"Rate limits (none set: {settings.DEFAULT_RATE_LIMIT} for the whole tenant)"
        )


class ToolPolicyInline(admin.TabularInline):
    model = ToolPolicy
    form = ToolPolicyForm
    extra = 0
    verbose_name_plural = "Tool rules (none set: every tool is allowed)"

    def formfield_for_foreignkey(
        self, db_field: Any, request: HttpRequest, **kwargs: Any
    ) -> forms.ModelChoiceField | None:
        """Offer only this tenant's keys: a rule for another tenant's key would be refused."""
        match = request.resolver_match
        tenant_id = match.kwargs.get("object_id") if match else None
        if db_field.name == "api_key":
            kwargs["queryset"] = (
                ApiKey.objects.filter(tenant_id=tenant_id) if tenant_id else ApiKey.objects.none()
            )
        if db_field.name == "membership":
            kwargs["queryset"] = (
                TenantMembership.objects.filter(tenant_id=tenant_id).select_related("user")
                if tenant_id
                else TenantMembership.objects.none()
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


@dataclass(frozen=True)
class CredentialPage:
    """The admin's write-only page for one credential kind."""

    form: type[forms.Form]
    button: str  # the tenant page's button while no credential is stored
    replace_button: str  # ... and once one is
    title: str
    explanation: str
    stored: str
    store: Callable[[Tenant, dict[str, Any]], None]


CREDENTIAL_PAGES: dict[str, CredentialPage] = {
    Tenant.Auth.MEKARI_HMAC: CredentialPage(
        form=HmacCredentialForm,
        button="Set HMAC credential",
        replace_button="Replace HMAC credential",
        title="Set the Mekari HMAC credential of {slug}",
        explanation="Ask the company's admin for an HMAC client id and client secret. They "
        "create them in the Mekari Developer Center (developers.mekari.com): Applications, "
        "create an application, add an HMAC credential with the qontak-crm:all scope. Both "
        "are checked with one signed call to the gateway; the secret is kept in Vault only "
        "and never displayed.",
        stored="Stored a validated HMAC credential for {slug}.",
        store=lambda tenant, data: credentials.store_hmac_credential(
            tenant=tenant, client_id=data["client_id"], client_secret=data["client_secret"]
        ),
    ),
    Tenant.Auth.QONTAK_OAUTH: CredentialPage(
        form=RefreshTokenForm,
        button="Store refresh token",
        replace_button="Replace refresh token",
        title="Store the Qontak refresh token of {slug}",
        explanation="Ask the company's Qontak admin for a refresh token from Qontak CRM's "
        "API settings. It is exchanged once with Qontak to prove it works (Qontak then "
        "issues a new one, which is what Vault keeps). It is never displayed or written to "
        "the database.",
        stored="Stored a validated refresh token for {slug}.",
        store=lambda tenant, data: credentials.store_refresh_token(
            tenant=tenant, refresh_token=data["refresh_token"]
        ),
    ),
}


def credential_button(tenant: Tenant) -> str:
    """The label of the tenant page's credential button: set, or replace once stored."""
    page = CREDENTIAL_PAGES[tenant.auth]
    credential = getattr(tenant, "credential", None)
    stored = credential is not None and credential.vault_version is not None
    return page.replace_button if stored else page.button


def connection_problem(tenant: Tenant, exc: ApplicationError) -> str:
    """A failed connection test in the admin's words: what to press, not what to run."""
    if isinstance(exc, CredentialMissing):
        return (
            f"{tenant.slug}: no credential is stored yet. Press “{credential_button(tenant)}” "
            "on the tenant's page, then test again."
        )
    if isinstance(exc, ReauthorizationRequired):
        return (
            f"{tenant.slug}: Qontak rejected the refresh token. Re-authorize in Qontak, then "
            f"press “{CREDENTIAL_PAGES[tenant.auth].replace_button}” on the tenant's page."
        )
    return f"{tenant.slug}: {exc.message}"


@admin.register(Tenant)
class TenantAdmin(FullWidthList, admin.ModelAdmin):
    form = TenantForm
    list_display = (
        "slug",
        "name",
        "active",
        "auth_kind",
        "credential_status",
        "usable_keys",
        "request_ceiling",
    )
    list_filter = ("is_active", "auth", "credential__status")
    list_select_related = ("credential",)
    search_fields = ("slug", "name")
    readonly_fields = ("connection", "key_summary", "activity_links")
    add_fieldsets = (
        (None, {"fields": ("name", "slug", "auth")}),
        (
            "Optional",
            {
                "fields": (
                    "default_qontak_user",
                    "qontak_request_ceiling",
                    "qontak_base_url",
                    "is_active",
                ),
                "description": "All of these can be changed later on the tenant's page.",
            },
        ),
    )
    fieldsets = (
        (None, {"fields": ("slug", "name", "is_active")}),
        (
            "Qontak",
            {
                "fields": (
                    "auth",
                    "connection",
                    "default_qontak_user",
                    "qontak_request_ceiling",
                    "qontak_base_url",
                )
            },
        ),
        ("Approvals", {"fields": ("destructive_needs_approval",)}),
        ("API keys", {"fields": ("key_summary",)}),
        ("Activity", {"fields": ("activity_links",)}),
    )
    inlines = (RateLimitInline, ToolPolicyInline)
    actions = ("rotate_now", "test_connection", "revoke_all_keys")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Tenant]:
        """Each tenant's usable keys, counted by a subquery per row shown: a join grouped by
        tenant would count every tenant's keys to show one page of tenants."""
        usable = (
            ApiKey.objects.filter(ApiKeyQuerySet.usable_q(timezone.now()), tenant=OuterRef("pk"))
            .order_by()
            .values("tenant")
            .annotate(count=Count("pk"))
            .values("count")
        )
        return (
            super().get_queryset(request).annotate(usable_key_count=Coalesce(Subquery(usable), 0))
        )

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.add_fieldsets if obj is None else super().get_fieldsets(request, obj)

    def get_inlines(self, request: HttpRequest, obj: Any) -> Any:
        """Policies come once the tenant exists: adding one is about its name and kind."""
        return self.inlines if obj is not None else ()

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

    @admin.display(description="Active", ordering="is_active")
    def active(self, obj: Tenant) -> str:
        return word(obj.is_active, "active", "inactive")

    @admin.display(description="Credential kind", ordering="auth")
    def auth_kind(self, obj: Tenant) -> str:
        return "Mekari HMAC" if obj.auth == Tenant.Auth.MEKARI_HMAC else "Qontak OAuth"

    @admin.display(description="Qontak credential", ordering="credential__status")
    def credential_status(self, obj: Tenant) -> str:
        credential = getattr(obj, "credential", None)
        if credential is None:
            return EMPTY
        badge = format_html(
            '<span class="badge token-{}">{}</span>',
            credential.status,
            credential.get_status_display(),
        )
        if not credential.last_error:
            return badge
        return format_html(
            '{} <span class="list-note" title="{}">{}</span>',
            badge,
            credential.last_error,
            credential.last_error[:60] + ("…" if len(credential.last_error) > 60 else ""),
        )

    @admin.display(description="Usable keys", ordering="usable_key_count")
    def usable_keys(self, obj: Tenant) -> int:
        return int(getattr(obj, "usable_key_count", 0))

    @admin.display(description="Qontak ceiling", ordering="qontak_request_ceiling")
    def request_ceiling(self, obj: Tenant) -> str:
        return obj.qontak_request_ceiling or "default"

    @admin.display(description="Credential")
    def connection(self, obj: Tenant) -> str:
        """The credential's state in words, with the buttons that change or test it."""
        credential = getattr(obj, "credential", None)
        if obj.pk is None or credential is None:
            return "Save the tenant first."
        credential_url = reverse("admin:controlplane_tenant_credential", args=[obj.pk])
        state = format_html(
            '<span class="badge token-{}">{}</span>',
            credential.status,
            credential.get_status_display(),
        )
        details: list[str] = []
        if obj.auth == Tenant.Auth.MEKARI_HMAC and credential.client_id:
            details.append(format_html("client id <code>{}</code>", credential.client_id))
        if credential.access_token_expires_at:
            details.append(
                "access token valid until " + utc_with_zone(credential.access_token_expires_at)
            )
        if credential.last_refreshed_at:
            details.append("last refreshed " + utc_with_zone(credential.last_refreshed_at))
        error = (
            format_html('<p class="connection-error">Last error: {}</p>', credential.last_error)
            if credential.last_error
            else ""
        )
        return format_html(
            '<div class="tenant-connection"><p>{} {}</p>{}<p class="connection-buttons">'
            '<a class="button" href="{}">{}</a> '
            '<button type="submit" class="button" form="test-connection-form">'
            "Test connection</button></p></div>",
            state,
            format_html_join("; ", "{}", ((detail,) for detail in details)),
            error,
            credential_url,
            credential_button(obj),
        )

    @admin.display(description="Keys")
    def key_summary(self, obj: Tenant) -> str:
        if obj.pk is None:
            return EMPTY
        usable = int(getattr(obj, "usable_key_count", 0))
        keys_url = reverse("admin:controlplane_apikey_changelist") + f"?tenant__id__exact={obj.pk}"
        issue_url = reverse("admin:controlplane_apikey_add") + f"?tenant={obj.pk}"
        return format_html(
            '<p><a class="button" href="{}">Issue an API key</a> '
            '<a href="{}">{} usable key{}</a></p>'
            '<p class="quiet">The key is shown once, with the configuration to paste into '
            "Cursor, VS Code or Claude Desktop.</p>",
            issue_url,
            keys_url,
            usable,
            "" if usable == 1 else "s",
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
            path(
                "<int:tenant_id>/test-connection/",
                self.admin_site.admin_view(require_POST(self.test_connection_view)),
                name="controlplane_tenant_test_connection",
            ),
            *super().get_urls(),
        ]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        """The test button posts a form of its own, outside the change form (see
        admin/controlplane/tenant/change_form.html)."""
        extra = {**(extra_context or {})}
        if object_id.isdigit():
            extra["test_connection_url"] = reverse(
                "admin:controlplane_tenant_test_connection", args=[object_id]
            )
        return super().change_view(request, object_id, form_url, extra)

    def response_add(
        self, request: HttpRequest, obj: Tenant, post_url_continue: str | None = None
    ) -> HttpResponse:
        """The next step of onboarding is the credential, so that is where saving leads."""
        if "_addanother" in request.POST or "_popup" in request.POST:
            return super().response_add(request, obj, post_url_continue)
        self.message_user(
            request,
            f"Added tenant {obj.slug}. Next: its credential, which the company gives you.",
            messages.SUCCESS,
        )
        return HttpResponseRedirect(reverse("admin:controlplane_tenant_credential", args=[obj.pk]))

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
                self.message_user(
                    request,
                    page.stored.format(slug=tenant.slug)
                    + " Next: issue an API key for the assistant with “Issue an API key”.",
                    messages.SUCCESS,
                )
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

    def test_connection_view(self, request: HttpRequest, tenant_id: int) -> HttpResponse:
        """The tenant page's "Test connection" button: one real read, answered in words."""
        tenant = get_object_or_404(Tenant.objects.select_related("credential"), pk=tenant_id)
        if not self.has_change_permission(request, tenant):  # it may spend a refresh token
            return HttpResponse(status=403)
        self._test(request, tenant)
        return HttpResponseRedirect(reverse("admin:controlplane_tenant_change", args=[tenant.pk]))

    def _test(self, request: HttpRequest, tenant: Tenant) -> None:
        try:
            answer = credentials.tenant_connection_test(tenant=tenant)
        except ApplicationError as exc:
            self.message_user(
                request, "Connection failed. " + connection_problem(tenant, exc), messages.ERROR
            )
        else:
            self.message_user(request, f"Connection works. {answer}.", messages.SUCCESS)

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
            detail = result.detail
            if "manage.py" in detail:  # the service's advice names the command, not the button
                detail = detail.split(" (admin:")[0].split(" and store the new token")[0]
                detail += f"; press “{CREDENTIAL_PAGES[tenant.auth].replace_button}” on its page"
            self.message_user(request, f"{tenant.slug}: {result.action}, {detail}", level)
        return None

    # Change, not view: the test may spend the tenant's refresh token on a refresh.
    @admin.action(description="Test the connection to Qontak", permissions=("change",))
    def test_connection(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        for tenant in queryset.select_related("credential"):
            self._test(request, tenant)

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
