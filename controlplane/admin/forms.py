"""The admin's forms: which fields an operator edits, and the help shown next to them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from controlplane import policies, tenants
from controlplane.errors import InvalidInput
from controlplane.models import ApiKey, RateLimitPolicy, Tenant, ToolPolicy

# Where a company gets each kind of credential, in the words an operator passes on to it.
AUTH_CHOICES = (
    (
        Tenant.Auth.MEKARI_HMAC,
        "Mekari API Gateway (HMAC client id and secret): what companies onboarding today get. "
        "A company admin creates them in the Mekari Developer Center (developers.mekari.com), "
        "under Applications, with the qontak-crm:all scope.",
    ),
    (
        Tenant.Auth.QONTAK_OAUTH,
        "Legacy Qontak OAuth (refresh token): only for companies already connected this way. "
        "A Qontak admin generates the refresh token in Qontak CRM's API settings.",
    ),
)


class ToolNameInput(forms.TextInput):
    """A text box that suggests the known tools (and *) as the operator types; the form still
    checks the name, since a browser lets anything through."""

    def render(
        self, name: str, value: Any, attrs: dict[str, Any] | None = None, renderer: Any = None
    ) -> SafeString:
        list_id = f"{(attrs or {}).get('id') or name}-known-tools"
        box = super().render(name, value, {**(attrs or {}), "list": list_id}, renderer)
        options = format_html_join(
            "", '<option value="{}"></option>', ((tool,) for tool in policies.known_tool_names())
        )
        return format_html('{}<datalist id="{}">{}</datalist>', box, list_id, options)


def _checked_tool(value: str, check: Callable[[str], str]) -> str:
    """`value` as `check` (a policies checker) returns it, its refusal shown on the field."""
    try:
        return check(value)
    except InvalidInput as exc:
        raise forms.ValidationError(exc.message[:1].upper() + exc.message[1:] + ".") from None


class TenantForm(forms.ModelForm):
    class Meta:
        model = Tenant
        fields = (
            "slug",
            "name",
            "is_active",
            "auth",
            "qontak_base_url",
            "default_qontak_user",
            "qontak_request_ceiling",
        )
        labels = {"auth": "Credential kind", "slug": "Short name"}
        widgets = {"auth": forms.RadioSelect}
        help_texts = {
            "auth": "Fixed once the tenant is saved. The credential itself is asked for after "
            "saving; it is checked with Qontak and kept in Vault only.",
            "slug": "Lower case letters, digits and hyphens, e.g. acme. It names the tenant in "
            "URLs, logs and Vault and cannot be changed later.",
            "name": "Shown to operators only, e.g. the customer's company name.",
            "qontak_base_url": "Overrides QONTAK_BASE_URL for this tenant; its Qontak tokens "
            "are sent there. https:// and a host listed in QONTAK_ALLOWED_HOSTS, no user name, "
            "query or fragment. Only superusers can change it. Empty uses the default.",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "auth" in self.fields:  # absent once saved: the kind is fixed
            auth = self.fields["auth"]
            assert isinstance(auth, forms.ChoiceField)
            auth.choices = AUTH_CHOICES
            if self.instance.pk is None:
                self.fields["auth"].initial = Tenant.Auth.MEKARI_HMAC


class RateLimitPolicyForm(forms.ModelForm):
    class Meta:
        model = RateLimitPolicy
        fields = ("tenant", "rate", "tool", "per_key")
        widgets = {"tool": ToolNameInput(attrs={"placeholder": "all tools"})}
        help_texts = {
            "rate": "Calls allowed per window: COUNT/UNIT with UNIT s, m, h or d (e.g. 120/m). "
            "Applies on the next call in every worker.",
        }

    def clean_tool(self) -> str:
        return _checked_tool(self.cleaned_data.get("tool", ""), policies.rate_tool_checked)


class ToolPolicyForm(forms.ModelForm):
    class Meta:
        model = ToolPolicy
        fields = ("tenant", "api_key", "membership", "tool", "effect")
        widgets = {"tool": ToolNameInput(attrs={"placeholder": "a tool name, or *"})}
        help_texts = {
            "tool": "Pick a tool from the list as you type, or * for every tool.",
            "effect": "Deny hides the tool from tools/list and refuses calls; Approve first "
            "holds each call until a person approves it. A rule for one key or member beats a "
            "rule for the whole tenant; an exact tool name beats *.",
        }

    def clean_tool(self) -> str:
        return _checked_tool(self.cleaned_data.get("tool", ""), policies.tool_name_checked)


class ApiKeyForm(forms.ModelForm):
    class Meta:
        model = ApiKey
        fields = ("tenant", "label", "read_only", "qontak_user", "expires_at")
        labels = {"expires_at": "Expires at (UTC)", "qontak_user": "Acts as CRM user"}
        help_texts = {
            "tenant": "The Qontak account this key reaches. It cannot be moved to another "
            "tenant later.",
            "label": "Who uses the key (e.g. 'Claude, sales team'); shown next to its calls.",
            "read_only": "Only tools that read are listed and callable: nothing can be "
            "created, changed or deleted with this key.",
            "expires_at": "Date and time in UTC. After this moment the key gets HTTP 401. "
            "Empty: it never expires.",
        }

    def clean_qontak_user(self) -> str:
        try:
            return tenants.sso_user_checked(self.cleaned_data.get("qontak_user", ""))
        except InvalidInput as exc:
            raise forms.ValidationError(exc.message) from None


class HmacCredentialForm(forms.Form):
    client_id = forms.CharField(
        max_length=200,
        strip=True,
        help_text="The HMAC client id from the Mekari Developer Center.",
    )
    client_secret = forms.CharField(
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        strip=True,
        help_text="The client secret. It is checked with one signed call to the gateway and "
        "stored in Vault; it is never shown again.",
    )


class RefreshTokenForm(forms.Form):
    refresh_token = forms.CharField(
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        strip=True,
        help_text="Paste the tenant's Qontak refresh token. It is validated with one refresh "
        "and stored in Vault; it is never shown again.",
    )
