"""People and the assistants they connect: memberships, OAuth connections (a person's consent
for one client on one tenant), registered clients, and the hosts trusted to vouch for clients.

Every write goes through controlplane.people, so removing a member, revoking a connection or
disabling a client ends the tokens concerned on the next call in every worker, exactly as the
commands do.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from oauth2_provider.admin import ApplicationAdmin
from oauth2_provider.models import Application, Grant, IDToken

from controlplane import people
from controlplane.errors import InvalidInput
from controlplane.models import OAuthConnection, TenantMembership, TrustedClientHost
from controlplane.tenants import sso_user_checked


class MembershipForm(forms.ModelForm):
    class Meta:
        model = TenantMembership
        fields = ("qontak_user", "read_only")

    def clean_qontak_user(self) -> str:
        try:
            return sso_user_checked(str(self.cleaned_data.get("qontak_user") or ""))
        except InvalidInput as exc:
            raise forms.ValidationError(exc.message) from None


class MembershipAddForm(MembershipForm):
    """Adds a person by username: an existing user, or a new one with the password given."""

    username = forms.CharField(max_length=150, help_text="The name the person signs in with.")
    password = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Only for a new person; leave empty for someone who already has an account.",
    )

    class Meta:
        model = TenantMembership
        fields = ("tenant", "qontak_user", "read_only")

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        username = str(cleaned.get("username") or "").strip()
        tenant = cleaned.get("tenant")
        if not username:
            return cleaned
        if not people.person_exists(username):
            password = cleaned.get("password") or ""
            if not password:
                self.add_error("password", "This is a new person: set their first password.")
            else:
                try:
                    validate_password(password, User(username=username))
                except ValidationError as exc:
                    self.add_error("password", exc)
        elif (
            tenant is not None
            and TenantMembership.objects.filter(tenant=tenant, user__username=username).exists()
        ):
            self.add_error("username", f"{username} is already a member of {tenant}.")
        return cleaned


@admin.register(TenantMembership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("user", "tenant", "access", "qontak_user", "connections", "created_at")
    list_filter = ("tenant", "read_only")
    search_fields = ("user__username", "tenant__slug", "tenant__name")
    list_select_related = ("user", "tenant")

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> Any:
        kwargs["form"] = MembershipAddForm if obj is None else MembershipForm
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ("tenant", "username", "password", "qontak_user", "read_only")
        return ("tenant", "user", "qontak_user", "read_only")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return ("tenant", "user") if obj is not None else ()

    def get_queryset(self, request: HttpRequest) -> QuerySet[TenantMembership]:
        return super().get_queryset(request).annotate(connection_count=Count("connections"))

    @admin.display(description="access")
    def access(self, membership: TenantMembership) -> str:
        return "read only" if membership.read_only else "read and write"

    @admin.display(description="assistant connections", ordering="connection_count")
    def connections(self, membership: TenantMembership) -> int:
        return int(getattr(membership, "connection_count", 0))

    def save_model(
        self, request: HttpRequest, obj: TenantMembership, form: Any, change: bool
    ) -> None:
        """Through the service, as add_member does (the form has checked what it refuses)."""
        membership, created = people.member_add(
            tenant=obj.tenant if change else form.cleaned_data["tenant"],
            username=obj.user.get_username() if change else form.cleaned_data["username"],
            password=None if change else form.cleaned_data.get("password") or None,
            qontak_user=obj.qontak_user,
            read_only=obj.read_only,
        )
        obj.pk, obj.user = membership.pk, membership.user
        if created:
            messages.info(request, f"Created the account {membership.user} for this person.")

    def delete_model(self, request: HttpRequest, obj: TenantMembership) -> None:
        people.member_remove(tenant=obj.tenant, username=obj.user.get_username())

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[TenantMembership]) -> None:
        for membership in queryset.select_related("tenant", "user"):
            self.delete_model(request, membership)


@admin.register(OAuthConnection)
class ConnectionAdmin(admin.ModelAdmin):
    """A person's consent for one assistant on one tenant; revoking it ends its tokens."""

    list_display = ("person", "tenant", "client", "scope", "created_at")
    list_filter = ("membership__tenant",)
    search_fields = ("membership__user__username", "application__name", "application__client_id")
    list_select_related = ("membership__user", "membership__tenant", "application")
    actions = ("revoke",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="person", ordering="membership__user__username")
    def person(self, connection: OAuthConnection) -> str:
        return str(connection.membership.user)

    @admin.display(description="tenant", ordering="membership__tenant__slug")
    def tenant(self, connection: OAuthConnection) -> str:
        return connection.membership.tenant.slug

    @admin.display(description="assistant")
    def client(self, connection: OAuthConnection) -> str:
        return people.client_name(connection.application)

    @admin.action(description="Revoke access (its tokens stop working on the next call)")
    def revoke(self, request: HttpRequest, queryset: QuerySet[OAuthConnection]) -> None:
        count = sum(1 for connection in queryset if people.connection_revoke(connection))
        self.message_user(request, f"Revoked {count} connection(s).", messages.SUCCESS)

    def delete_model(self, request: HttpRequest, obj: OAuthConnection) -> None:
        people.connection_revoke(obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[OAuthConnection]) -> None:
        for connection in queryset:
            people.connection_revoke(connection)


admin.site.unregister(Application)
# Grants live a minute and ID tokens are unused (no OpenID Connect): nothing to manage.
admin.site.unregister(Grant)
admin.site.unregister(IDToken)


@admin.register(Application)
class AssistantClientAdmin(ApplicationAdmin):
    """Assistant clients, registered by DCR, by a metadata document (CIMD) or by hand."""

    list_display = ("shown_name", "client_id", "registration_source", "status", "created")
    list_filter = ("registration_source", "client_type")
    search_fields = ("name", "client_id")
    actions = ("disable", "enable")

    @admin.display(description="name", ordering="name")
    def shown_name(self, application: Application) -> str:
        return people.client_name(application)

    @admin.display(description="status")
    def status(self, application: Application) -> str:
        return "disabled" if hasattr(application, "disabled") else "enabled"

    @admin.action(description="Disable (tokens refused on the next call)")
    def disable(self, request: HttpRequest, queryset: QuerySet[Application]) -> None:
        for application in queryset:
            people.client_disable(application=application, reason=f"disabled by {request.user}")
        self.message_user(request, f"Disabled {queryset.count()} client(s).", messages.SUCCESS)

    @admin.action(description="Enable again")
    def enable(self, request: HttpRequest, queryset: QuerySet[Application]) -> None:
        for application in queryset:
            people.client_enable(application=application)
        self.message_user(request, f"Enabled {queryset.count()} client(s).", messages.SUCCESS)


class TrustedClientHostForm(forms.ModelForm):
    class Meta:
        model = TrustedClientHost
        fields = ("host", "note")

    def clean_host(self) -> str:
        host = str(self.cleaned_data["host"]).strip().lower()
        bare = host.lstrip(".")
        if not bare or "/" in host or ":" in host or " " in host or "." not in bare + ".":
            raise forms.ValidationError(
                "Give a host name such as claude.ai, or .example.com for a domain and its "
                "subdomains (no scheme, port or path)."
            )
        return host


@admin.register(TrustedClientHost)
class TrustedClientHostAdmin(admin.ModelAdmin):
    """Hosts whose client metadata documents (the client_id URLs of claude.ai, ChatGPT) are
    accepted; a client from any other host must register by DCR instead."""

    form = TrustedClientHostForm
    list_display = ("host", "note")
    search_fields = ("host",)
