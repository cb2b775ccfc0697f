"""The authorization server's pages and endpoints that are ours rather than the toolkit's: the
consent page (tenant, scopes, write access), the person's login page, the protected-resource
metadata of /mcp, and rate-limited Dynamic Client Registration."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from django import forms
from django.conf import settings
from django.contrib.auth.views import LoginView
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.decorators import method_decorator
from django.views.decorators.csrf import csrf_exempt
from django_ratelimit.core import is_ratelimited
from oauth2_provider.forms import AllowForm
from oauth2_provider.models import get_application_model
from oauth2_provider.settings import oauth2_settings
from oauth2_provider.views import AuthorizationView
from oauth2_provider.views.dynamic_client_registration import DynamicClientRegistrationView
from oauth2_provider.views.metadata import OAuthProtectedResourceMetadataView

from controlplane import people
from controlplane.models import TenantMembership
from controlplane.oauth.clients import is_loopback_host, redirect_uri_problem
from controlplane.oauth.resource import mcp_resource, origin_of_request


def _memberships(user: Any) -> list[TenantMembership]:
    return list(
        TenantMembership.objects.filter(user=user, tenant__is_active=True)
        .select_related("tenant")
        .order_by("tenant__name")
    )


class ConsentForm(AllowForm):
    """The toolkit's hidden fields, plus the person's choices: the tenant, and whether the
    assistant may write and delete."""

    membership = forms.TypedChoiceField(
        coerce=int, required=False, empty_value=None, label="Qontak account"
    )
    write = forms.BooleanField(
        required=False, initial=True, label="Let it create and change records"
    )
    delete = forms.BooleanField(required=False, initial=True, label="Let it delete records")

    def __init__(self, *args: Any, memberships: list[TenantMembership], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.memberships = {membership.pk: membership for membership in memberships}
        field = self.fields["membership"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = [(pk, m.tenant.name) for pk, m in self.memberships.items()]
        if len(self.memberships) == 1:
            field.initial = next(iter(self.memberships))

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean()
        if cleaned.get("allow") and cleaned.get("membership") is None:
            raise forms.ValidationError("Choose the Qontak account the assistant may use.")
        return cleaned

    def granted_scopes(self) -> str:
        """The scopes asked for, less those the person withheld or their membership excludes."""
        asked = str(self.cleaned_data.get("scope") or "").split()
        membership = self.memberships.get(self.cleaned_data.get("membership") or 0)
        if membership is None:  # denied: nothing is granted
            return " ".join(asked)
        withheld = set()
        if membership.read_only or not self.cleaned_data.get("write"):
            withheld |= {people.WRITE_SCOPE, people.DELETE_SCOPE}
        if not self.cleaned_data.get("delete"):
            withheld.add(people.DELETE_SCOPE)
        return " ".join(scope for scope in asked if scope not in withheld)


class ConsentView(AuthorizationView):
    """A person grants an assistant access to one of their tenants. Rendered without inline
    script or style, and never in a frame; the form may post back to the client's redirect
    origin only."""

    template_name = "oauth/consent.html"
    form_class = ConsentForm
    _membership_id: int | None = None

    def get_form_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = super().get_form_kwargs()
        kwargs["memberships"] = _memberships(self.request.user)
        return kwargs

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        problem = redirect_uri_problem(request.GET.get("redirect_uri", ""))
        if request.GET.get("redirect_uri") and problem:
            return render(request, "oauth/error.html", {"problem": problem}, status=400)
        response: HttpResponse = super().get(request, *args, **kwargs)
        return _allow_redirect_to(response, request.GET.get("redirect_uri", ""))

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context: dict[str, Any] = super().get_context_data(**kwargs)
        application = context.get("application")
        memberships = _memberships(self.request.user)
        scopes = context.get("scopes") or []
        context.update(
            {
                "client_name": people.client_name(application) if application else "",
                "client_host": _verified_host(application, context.get("redirect_uri", "")),
                "memberships": memberships,
                "scope_words": [people.SCOPE_WORDS.get(s, s) for s in scopes],
                "asks_write": people.WRITE_SCOPE in scopes,
                "asks_delete": people.DELETE_SCOPE in scopes,
            }
        )
        return context

    def form_valid(self, form: ConsentForm) -> HttpResponse:
        self._membership_id = form.cleaned_data["membership"]
        form.cleaned_data["scope"] = form.granted_scopes()
        response: HttpResponse = super().form_valid(form)
        return response

    def form_invalid(self, form: ConsentForm) -> HttpResponse:
        """The page again, saying what to fix: the client, its host and the scopes come from
        the posted form, as get() took them from the authorization request."""
        redirect_uri = str(form.data.get("redirect_uri", ""))
        application = (
            get_application_model().objects.filter(client_id=form.data.get("client_id", "")).first()
        )
        scopes = [s for s in str(form.data.get("scope", "")).split() if s in people.SCOPE_WORDS]
        context = self.get_context_data(
            form=form, application=application, scopes=scopes, redirect_uri=redirect_uri
        )
        return _allow_redirect_to(self.render_to_response(context), redirect_uri)

    def error_response(self, error: Any, application: Any, **kwargs: Any) -> HttpResponse:
        """An error sent back to the client (the person denied, or the request was wrong)
        names the issuer too, as a code does (RFC 9207): a client talking to several
        authorization servers can tell which one answered."""
        response: HttpResponse = super().error_response(error, application, **kwargs)
        location = response.get("Location")
        if location:
            issuer = oauth2_settings.oauth2_authorization_server_issuer(self.request)
            response["Location"] = _with_issuer(location, issuer)
        return response

    def create_authorization_response(
        self, request: HttpRequest, scopes: str, credentials: dict[str, Any], allow: bool
    ) -> Any:
        """Hands the chosen membership to the validator (controlplane.oauth.validator), which
        records the consent with the authorization code."""
        credentials["membership_id"] = self._membership_id
        return super().create_authorization_response(request, scopes, credentials, allow)


def _with_issuer(location: str, issuer: str) -> str:
    """`location` with `iss` set to `issuer` in its query (one, replacing any other)."""
    parts = urlsplit(location)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "iss"]
    return urlunsplit(parts._replace(query=urlencode([*query, ("iss", issuer)])))


def _verified_host(application: Any, redirect_uri: str) -> str:
    """The host that vouches for the client: its metadata document's host (CIMD), else where
    it sends the person back to; "this computer" for loopback redirects."""
    if application is not None and application.client_id.startswith("https://"):
        return urlsplit(application.client_id).hostname or ""
    host = urlsplit(redirect_uri).hostname or ""
    return "this computer (a desktop or command-line app)" if is_loopback_host(host) else host


def _allow_redirect_to(response: HttpResponse, redirect_uri: str) -> HttpResponse:
    """CSP form-action also governs the redirect after the form is sent: allow the client's
    redirect origin on this page only."""
    parts = urlsplit(redirect_uri)
    if (
        parts.scheme in ("http", "https")
        and parts.netloc
        and not redirect_uri_problem(redirect_uri)
    ):
        response._csp_update = {"form-action": [f"{parts.scheme}://{parts.netloc}"]}  # type: ignore[attr-defined]
    return response


class PersonLoginView(LoginView):
    """Where a person signs in before consenting (operators use the admin's own login)."""

    template_name = "oauth/login.html"
    redirect_authenticated_user = True


class McpResourceMetadataView(OAuthProtectedResourceMetadataView):
    """RFC 9728 metadata of /mcp, at the root and at the path-suffixed location alike."""

    def get_resource(self, request: HttpRequest) -> str:
        return mcp_resource(origin_of_request(request))

    def get_authorization_servers(self, request: HttpRequest) -> list[str]:
        return [origin_of_request(request)]


@method_decorator(csrf_exempt, name="dispatch")
class RegistrationView(DynamicClientRegistrationView):
    """RFC 7591 registration, open to any client but OAUTH_REGISTRATION_RATE per address, and
    only for redirect URIs that are https or loopback."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if is_ratelimited(
            request,
            group="oauth-registration",
            key="ip",
            rate=settings.OAUTH_REGISTRATION_RATE,
            increment=True,
        ):
            response = JsonResponse(
                {
                    "error": "too_many_requests",
                    "error_description": "too many client registrations from this address; "
                    "retry in an hour",
                },
                status=429,
            )
            response["Retry-After"] = "3600"
            return response
        try:
            metadata = json.loads(request.body or b"{}")
        except ValueError:
            metadata = {}
        uris = metadata.get("redirect_uris") if isinstance(metadata, dict) else None
        for uri in uris if isinstance(uris, list) else []:
            problem = redirect_uri_problem(uri) if isinstance(uri, str) else "not a string"
            if problem:
                return JsonResponse(
                    {"error": "invalid_redirect_uri", "error_description": problem}, status=400
                )
        registered: HttpResponse = super().post(request, *args, **kwargs)
        return registered
