"""The admin's forms: which fields an operator edits, and the help shown next to them."""

from __future__ import annotations

from django import forms

from controlplane.models import ApiKey, RateLimitPolicy, Tenant, ToolPolicy


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
        help_texts = {
            "auth": "Mekari API Gateway: the company creates an HMAC client id and secret in "
            "the Mekari Developer Center (scope qontak-crm:all), which is what companies "
            "onboarding today are given. Legacy Qontak OAuth: a refresh token from Qontak. "
            "Fixed once the tenant is saved.",
            "name": "Shown to operators only, e.g. the customer's company name.",
            "qontak_base_url": "Overrides QONTAK_BASE_URL for this tenant; its Qontak tokens "
            "are sent there. https:// and a host listed in QONTAK_ALLOWED_HOSTS, no user name, "
            "query or fragment. Only superusers can change it. Empty uses the default.",
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
        fields = ("tenant", "label", "read_only", "qontak_user", "expires_at")
        help_texts = {
            "tenant": "The Qontak account this key reaches. It cannot be moved to another "
            "tenant later.",
            "label": "Who uses the key (e.g. 'Claude, sales team'); shown next to its calls.",
            "expires_at": "After this moment the key gets HTTP 401. Empty: it never expires.",
        }


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
