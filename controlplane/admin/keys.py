"""API keys: issued and revoked through controlplane.tenants, like the commands do."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from controlplane import tenants
from controlplane.admin.actions import confirmation_page
from controlplane.admin.client_configs import client_configs
from controlplane.admin.display import FullWidthList, utc, utc_with_zone, word
from controlplane.admin.forms import ApiKeyForm
from controlplane.models import ApiKey, ApiKeyQuerySet

# The clear key, between save_model and response_add of one request; never stored.
ISSUED_KEY = "_issued_api_key"


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
class ApiKeyAdmin(FullWidthList, admin.ModelAdmin):
    form = ApiKeyForm
    list_display = (
        "prefix",
        "tenant",
        "label",
        "access",
        "state",
        "created",
        "last_used",
        "expires",
    )
    # By pepper id: which keys still wait for their first use since a pepper rotation.
    list_filter = (KeyStateFilter, "read_only", "tenant", "pepper_id", "created_at", "last_used_at")
    list_select_related = ("tenant",)
    search_fields = ("prefix", "label", "tenant__slug", "tenant__name")
    readonly_fields = ("prefix", "created", "last_used", "revoked", "pepper_id")
    add_fields = ("tenant", "label", "read_only", "qontak_user", "expires_at")
    fields = (*add_fields, *readonly_fields)
    actions = ("revoke",)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.add_fields if obj is None else self.fields

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        """A key's tenant is fixed: moving it would hand its holder another CRM account. Its
        CRM user is checked when issued, so it is fixed too."""
        fields = tuple(super().get_readonly_fields(request, obj))
        return ("tenant", "qontak_user", *fields) if obj is not None else ()

    @admin.display(description="State")
    def state(self, obj: ApiKey) -> str:
        if obj.revoked_at is not None:
            return "revoked"
        return "usable" if obj.is_usable else "expired"

    @admin.display(description="Access", ordering="read_only")
    def access(self, obj: ApiKey) -> str:
        return word(obj.read_only, "read-only", "read-write")

    @admin.display(description="Created (UTC)", ordering="created_at")
    def created(self, obj: ApiKey) -> str:
        return utc(obj.created_at)

    @admin.display(description="Last used (UTC)", ordering="last_used_at")
    def last_used(self, obj: ApiKey) -> str:
        return utc(obj.last_used_at)

    @admin.display(description="Expires (UTC)", ordering="expires_at")
    def expires(self, obj: ApiKey) -> str:
        return utc(obj.expires_at) if obj.expires_at else "never"

    @admin.display(description="Revoked")
    def revoked(self, obj: ApiKey) -> str:
        return utc_with_zone(obj.revoked_at) if obj.revoked_at else "no"

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
        setattr(request, ISSUED_KEY, issued.key)

    def response_add(
        self, request: HttpRequest, obj: ApiKey, post_url_continue: str | None = None
    ) -> HttpResponse:
        """The key, once, with what to paste into each assistant: the answer to this POST,
        never stored (the admin's pages are not cached), so reloading cannot show it again."""
        key = getattr(request, ISSUED_KEY, None)
        if key is None or "_popup" in request.POST:
            return super().response_add(request, obj, post_url_continue)
        mcp_url = request.build_absolute_uri("/mcp")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"API key issued for {obj.tenant.slug}",
            "api_key": obj,
            "key": key,
            "mcp_url": mcp_url,
            "configs": client_configs(mcp_url=mcp_url, key=key),
            "tenant_url": reverse("admin:controlplane_tenant_change", args=[obj.tenant_id]),
        }
        return TemplateResponse(request, "admin/controlplane/apikey/issued.html", context)

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
