"""Operator pages: the models, the dashboard and the live feed.

Writes go through the same services the commands use (controlplane.tenants, tokens and
policies), so the admin cannot drift from the CLI or the MCP path. Destructive bulk actions
(revoking keys, rotating tokens) show a confirmation page first. Every page here requires an
active staff user; the dashboard, the live feed and the CSV export also need permission to view
the audit trail.
"""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator, Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from controlplane import audit, charts, config_version, policies, tenants, tokens
from controlplane.consumers import FEED_PERMISSION
from controlplane.dashboard import dashboard_activity, outcome_group
from controlplane.errors import ApplicationError
from controlplane.models import (
    ApiKey,
    QontakCredential,
    RateLimitPolicy,
    Tenant,
    ToolCall,
    ToolPolicy,
)
from controlplane.routing import LIVE_FEED_PATH

admin.site.site_header = "Qontak MCP control plane"
admin.site.site_title = "Qontak MCP admin"
admin.site.index_title = "Operations"
admin.site.site_url = None  # there is no public site; the header links to the operator pages

CONFIRM_FIELD = "confirmed"


def confirmation_page(
    modeladmin: admin.ModelAdmin[Any],
    request: HttpRequest,
    queryset: QuerySet[Any],
    *,
    action: str,
    title: str,
    consequence: str,
    button: str,
) -> TemplateResponse | None:
    """None once the operator has confirmed; until then, the page that asks them to.

    The page posts the same action and selection back with CONFIRM_FIELD=yes, like Django's
    own "delete selected" confirmation.
    """
    if request.POST.get(CONFIRM_FIELD) == "yes":
        return None
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": title,
        "consequence": consequence,
        "button": button,
        "objects": list(queryset),
        "action": action,
        "confirm_field": CONFIRM_FIELD,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "opts": modeladmin.model._meta,
    }
    return TemplateResponse(request, "admin/controlplane/confirm_action.html", context)


class TenantForm(forms.ModelForm):
    class Meta:
        model = Tenant
        fields = ("slug", "name", "is_active", "qontak_base_url", "qontak_request_ceiling")
        help_texts = {
            "name": "Shown to operators only, e.g. the customer's company name.",
        }


class RateLimitPolicyForm(forms.ModelForm):
    class Meta:
        model = RateLimitPolicy
        fields = ("tenant", "rate", "tool", "per_key")
        help_texts = {
            "rate": "Calls allowed per window: COUNT/UNIT with UNIT s, m, h or d (e.g. 120/m). "
            "Applies on the next call in every worker.",
        }


class ToolPolicyForm(forms.ModelForm):
    class Meta:
        model = ToolPolicy
        fields = ("tenant", "api_key", "tool", "effect")
        help_texts = {
            "effect": "Deny hides the tool from tools/list and refuses calls. A rule for one "
            "key beats a rule for the whole tenant; an exact tool name beats *.",
        }


class ApiKeyForm(forms.ModelForm):
    class Meta:
        model = ApiKey
        fields = ("tenant", "label", "read_only", "expires_at")
        help_texts = {
            "tenant": "The Qontak account this key reaches. It cannot be moved to another "
            "tenant later.",
            "label": "Who uses the key (e.g. 'Claude, sales team'); shown next to its calls.",
            "expires_at": "After this moment the key gets HTTP 401. Empty: it never expires.",
        }


def _save_policy(obj: RateLimitPolicy | ToolPolicy, *, scope_changed: bool) -> None:
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
            tenant=obj.tenant, tool=obj.tool, effect=obj.effect, api_key=obj.api_key
        )
        obj.pk = ToolPolicy.objects.get(tenant=obj.tenant, tool=obj.tool, api_key=obj.api_key).pk


RATE_SCOPE = {"tenant", "tool", "per_key"}
TOOL_SCOPE = {"tenant", "api_key", "tool"}


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


class RefreshTokenForm(forms.Form):
    refresh_token = forms.CharField(
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        strip=True,
        help_text="Paste the tenant's Qontak refresh token. It is validated with one refresh "
        "and stored in Vault; it is never shown again.",
    )


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    form = TenantForm
    list_display = (
        "slug",
        "name",
        "is_active",
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
    readonly_fields = ("refresh_token_link", "activity_links")
    fieldsets = (
        (None, {"fields": ("slug", "name", "is_active")}),
        (
            "Qontak",
            {"fields": ("qontak_base_url", "qontak_request_ceiling", "refresh_token_link")},
        ),
        ("Activity", {"fields": ("activity_links",)}),
    )
    inlines = (CredentialInline, RateLimitInline, ToolPolicyInline)
    actions = ("rotate_now", "test_connection", "revoke_all_keys")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Tenant]:
        now = timezone.now()
        return (
            super()
            .get_queryset(request)
            .annotate(
                usable_key_count=Count(
                    "api_keys",
                    filter=Q(api_keys__revoked_at__isnull=True)
                    & (Q(api_keys__expires_at__isnull=True) | Q(api_keys__expires_at__gt=now)),
                )
            )
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        """The slug names the tenant's Vault secret, so it is fixed once created."""
        fields = tuple(super().get_readonly_fields(request, obj))
        return ("slug", *fields) if obj is not None else fields

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

    @admin.display(description="Qontak refresh token")
    def refresh_token_link(self, obj: Tenant) -> str:
        if obj.pk is None:
            return "Save the tenant first."
        url = reverse("admin:controlplane_tenant_refresh_token", args=[obj.pk])
        return format_html('<a class="button" href="{}">Replace refresh token</a>', url)

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
                seen = tokens.stored_version(tenant=tenant)
            except ApplicationError as exc:
                self.message_user(request, f"{tenant.slug}: {exc.message}", messages.ERROR)
                continue
            result = tokens.token_rotate(tenant=tenant, seen_version=seen, window=0, force=True)
            level = messages.ERROR if result.failed else messages.SUCCESS
            self.message_user(request, f"{tenant.slug}: {result.action}, {result.detail}", level)
        return None

    @admin.action(description="Test the connection to Qontak")
    def test_connection(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        for tenant in queryset:
            try:
                self.message_user(request, tokens.tenant_connection_test(tenant=tenant))
            except ApplicationError as exc:
                self.message_user(request, f"{tenant.slug}: {exc.message}", messages.ERROR)

    @admin.action(description="Revoke every API key of these tenants…", permissions=("change",))
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
        revoked = 0
        for api_key in ApiKey.objects.filter(tenant__in=queryset, revoked_at__isnull=True):
            tenants.api_key_revoke(prefix=api_key.prefix)
            revoked += 1
        self.message_user(request, f"Revoked {revoked} key(s).", messages.SUCCESS)
        return None

    def save_model(self, request: HttpRequest, obj: Tenant, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        created = tenants.tenant_create(
            slug=obj.slug, name=obj.name, qontak_base_url=obj.qontak_base_url
        )
        if obj.qontak_request_ceiling or not obj.is_active:
            Tenant.objects.filter(pk=created.pk).update(
                qontak_request_ceiling=obj.qontak_request_ceiling, is_active=obj.is_active
            )
            config_version.announce_change_on_commit()  # update() sends no signal
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
            _save_policy(instance, scope_changed=bool(changed.get(instance.pk, set()) & scope))


class KeyStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("usable", "Usable"), ("revoked", "Revoked"), ("expired", "Expired")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> QuerySet[ApiKey]:
        now = timezone.now()
        if self.value() == "usable":
            return queryset.filter(revoked_at__isnull=True).filter(
                Q(expires_at__isnull=True) | Q(expires_at__gt=now)
            )
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        if self.value() == "expired":
            return queryset.filter(revoked_at__isnull=True, expires_at__lte=now)
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
    )
    list_filter = (KeyStateFilter, "read_only", "tenant", "created_at", "last_used_at")
    list_select_related = ("tenant",)
    search_fields = ("prefix", "label", "tenant__slug", "tenant__name")
    readonly_fields = ("prefix", "created_at", "last_used_at", "revoked_at")
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
        issued = tenants.api_key_issue(tenant=obj.tenant, label=obj.label, read_only=obj.read_only)
        if obj.expires_at:
            ApiKey.objects.filter(pk=issued.api_key.pk).update(expires_at=obj.expires_at)
            config_version.announce_change_on_commit()  # update() sends no signal
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
        for api_key in queryset:
            tenants.api_key_revoke(prefix=api_key.prefix)
        self.message_user(request, f"Revoked {queryset.count()} key(s).", messages.SUCCESS)
        return None


@admin.register(RateLimitPolicy)
class RateLimitPolicyAdmin(admin.ModelAdmin):
    form = RateLimitPolicyForm
    list_display = ("tenant", "rate", "scope", "per_key", "updated_at")
    list_filter = ("tenant", "per_key", "tool")
    list_select_related = ("tenant",)
    search_fields = ("tenant__slug", "tenant__name", "tool", "rate")

    @admin.display(description="Tool", ordering="tool")
    def scope(self, obj: RateLimitPolicy) -> str:
        return obj.tool or "all tools"

    def save_model(
        self, request: HttpRequest, obj: RateLimitPolicy, form: Any, change: bool
    ) -> None:
        _save_policy(obj, scope_changed=change and bool(set(form.changed_data) & RATE_SCOPE))


@admin.register(ToolPolicy)
class ToolPolicyAdmin(admin.ModelAdmin):
    form = ToolPolicyForm
    list_display = ("tenant", "tool", "effect", "api_key", "updated_at")
    list_filter = ("tenant", "effect", ("api_key", admin.EmptyFieldListFilter), "tool")
    list_select_related = ("tenant", "api_key")
    search_fields = ("tenant__slug", "tenant__name", "tool", "api_key__prefix")

    def save_model(self, request: HttpRequest, obj: ToolPolicy, form: Any, change: bool) -> None:
        _save_policy(obj, scope_changed=change and bool(set(form.changed_data) & TOOL_SCOPE))


class _Line:
    """A file-like sink for csv.writer that hands back the line just written."""

    def write(self, value: str) -> str:
        return value


async def _csv_lines(queryset: QuerySet[ToolCall]) -> AsyncIterator[str]:
    """CSV text, fetched and sent in chunks so an export of any size streams under ASGI."""
    writer = csv.writer(_Line())
    yield writer.writerow(audit.EXPORT_FIELDS)
    # Model rows, not values_list(): Django 5.2's aiterator() runs a values_list() query on
    # the event loop and raises SynchronousOnlyOperation.
    calls = queryset.select_related("tenant").only(
        *(name for name in audit.EXPORT_FIELDS if name != "tenant"), "tenant__slug"
    )
    async for call in calls.aiterator(chunk_size=2000):
        yield writer.writerow(audit.tool_call_csv_row(call))


def tool_calls_csv_response(queryset: QuerySet[ToolCall]) -> StreamingHttpResponse:
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    response = StreamingHttpResponse(_csv_lines(queryset), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="tool-calls-{stamp}.csv"'
    return response


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


def _require_audit_view(request: HttpRequest) -> None:
    if not request.user.has_perm(FEED_PERMISSION):
        raise PermissionDenied


def dashboard_view(request: HttpRequest) -> HttpResponse:
    """The last hour at a glance, for every tenant or the one named by ?tenant=<slug>."""
    _require_audit_view(request)
    slug = request.GET.get("tenant", "")
    dashboard = dashboard_activity(tenant_slug=slug)
    panels = [
        {
            "row": row,
            "minutes": charts.minute_chart(row.activity.minutes),
            "shares": charts.outcome_shares(row.activity.outcomes),
            "tools": charts.tool_bars(row.activity.top_tools),
            "p50": charts.latency_label(row.activity.p50_ms),
            "p95": charts.latency_label(row.activity.p95_ms),
        }
        for row in dashboard.busy_tenants
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
        "selected_tenant": slug,
        "tenant_slugs": list(Tenant.objects.order_by("slug").values_list("slug", flat=True)),
        "outcome_labels": charts.OUTCOME_LABELS,
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
        "tenant_slugs": list(Tenant.objects.order_by("slug").values_list("slug", flat=True)),
        "socket_path": "/" + LIVE_FEED_PATH,
    }
    return TemplateResponse(request, "admin/controlplane/live_feed.html", context)


def operator_view(view: Callable[[HttpRequest], HttpResponse]) -> Callable[..., HttpResponse]:
    """Wrap a page like the admin's own: staff login required, CSRF-protected, never cached."""
    return admin.site.admin_view(view)
