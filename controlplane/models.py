"""The control plane's data: who may call, under which rules, and what they did.

No secret is stored here: Qontak tokens live in Vault (QontakCredential only points at them)
and API keys are kept as HMAC digests.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from controlplane.qontak_urls import validate_qontak_base_url

RATE_PATTERN = r"^[1-9][0-9]*/[smhd]$"
rate_validator = RegexValidator(
    RATE_PATTERN, "Write a rate as COUNT/UNIT with UNIT one of s, m, h, d (e.g. 120/m)."
)


SSO_USER_HELP = (
    "The Mekari SSO id (a UUID) of the Qontak CRM user calls act as: records get that user as "
    "creator or owner, and Qontak applies that user's permissions."
)


class Tenant(models.Model):
    """One Qontak account, reached through the keys and credential that belong to it."""

    class Auth(models.TextChoices):
        """How the control plane authenticates to Qontak for this tenant; a kind added later
        (Mekari OAuth2) is one more choice and one more scheme, not a new model."""

        MEKARI_HMAC = "mekari-hmac", "Mekari API Gateway (HMAC client id and secret)"
        QONTAK_OAUTH = "qontak-oauth", "Legacy Qontak OAuth (refresh token)"

    slug = models.SlugField(unique=True, help_text="Stable identifier used by commands and Vault.")
    name = models.CharField(max_length=200)
    auth = models.CharField(
        max_length=20,
        choices=Auth.choices,
        default=Auth.QONTAK_OAUTH,
        help_text="Companies onboarding today get Mekari HMAC credentials.",
    )
    default_qontak_user = models.CharField(
        max_length=64,
        blank=True,
        help_text=SSO_USER_HELP + " Used for API keys and members that name no user.",
    )
    qontak_base_url = models.URLField(
        blank=True,
        validators=[validate_qontak_base_url],
        help_text="Overrides QONTAK_BASE_URL for this tenant (e.g. a regional host). "
        "Leave empty for the default.",
    )
    is_active = models.BooleanField(
        default=True, help_text="Inactive tenants' keys are refused with HTTP 401."
    )
    qontak_request_ceiling = models.CharField(
        max_length=20,
        blank=True,
        validators=[rate_validator],
        help_text="Most requests sent to this tenant's Qontak account, retries included "
        "(e.g. 600/m), to protect its Qontak quota. Empty uses QONTAK_REQUEST_CEILING.",
    )
    destructive_needs_approval = models.BooleanField(
        default=False,
        verbose_name="hold destructive tools for approval",
        help_text="Hold every tool annotated destructive (deletes) until a person approves it, "
        "unless a tool rule says otherwise.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class QontakCredential(models.Model):
    """Where a tenant's Qontak tokens live in Vault, and what we know about them (no secret)."""

    class Status(models.TextChoices):
        MISSING = "missing", "No credential stored"
        VALID = "valid", "Valid"
        NEEDS_REAUTHORIZATION = "needs_reauthorization", "Needs re-authorization in Qontak"
        ERROR = "error", "Last refresh failed"

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="credential")
    vault_mount = models.CharField(max_length=100)
    vault_path = models.CharField(max_length=300, help_text="KV v2 path of the token secret.")
    client_id = models.CharField(
        max_length=200,
        blank=True,
        help_text="Mekari HMAC client id (not secret; the client secret is in Vault).",
    )
    vault_version = models.PositiveIntegerField(
        null=True, blank=True, help_text="KV version last written; used for check-and-set."
    )
    status = models.CharField(max_length=32, choices=Status.choices, default=Status.MISSING)
    access_token_expires_at = models.DateTimeField(null=True, blank=True)
    last_refreshed_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    lock_nonce = models.CharField(
        max_length=64, blank=True, editable=False, help_text="Touched to take the row lock."
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.vault_mount}/{self.vault_path}"


class ApiKeyQuerySet(models.QuerySet["ApiKey"]):
    """Where the rule for a usable key is written once: not revoked and not expired.

    Whether its tenant is active is a separate check, made by tenants.api_key_usable: a key's
    state is its own, and reactivating a tenant brings its usable keys back.
    """

    @staticmethod
    def usable_q(now: datetime, *, via: str = "") -> Q:
        """The rule as a filter; `via` is the path to the keys from the queried model (e.g.
        "api_keys" to count a tenant's usable keys)."""
        lookup = f"{via}__" if via else ""
        return Q(**{f"{lookup}revoked_at__isnull": True}) & (
            Q(**{f"{lookup}expires_at__isnull": True}) | Q(**{f"{lookup}expires_at__gt": now})
        )

    @staticmethod
    def expired_q(now: datetime) -> Q:
        """Not revoked but past expires_at: the keys neither usable nor revoked."""
        return Q(revoked_at__isnull=True, expires_at__lte=now)

    def usable(self, now: datetime) -> ApiKeyQuerySet:
        return self.filter(self.usable_q(now))

    def expired(self, now: datetime) -> ApiKeyQuerySet:
        return self.filter(self.expired_q(now))


class ApiKey(models.Model):
    """A bearer key an assistant presents to /mcp; only its HMAC digest is stored."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    label = models.CharField(max_length=200, blank=True)
    prefix = models.CharField(
        max_length=16, unique=True, help_text="First characters of the key, safe to show."
    )
    digest = models.CharField(max_length=64, unique=True, editable=False)
    pepper_id = models.CharField(
        max_length=16,
        blank=True,
        editable=False,
        help_text="Which API_KEY_PEPPER keyed the digest (a fingerprint, not the pepper); "
        "updated to the current pepper's when the key is next used after a rotation.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    read_only = models.BooleanField(
        default=False,
        help_text="Read-only preset: only tools annotated readOnlyHint are listed and callable.",
    )
    qontak_user = models.CharField(
        max_length=64, blank=True, help_text=SSO_USER_HELP + " Empty: the tenant's default."
    )

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.tenant.slug})"

    @property
    def is_usable(self) -> bool:
        """ApiKeyQuerySet.usable_q evaluated on this row, without a query: every MCP request
        checks it. Keep the two in step."""
        now = timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


class RateLimitPolicy(models.Model):
    """A rate for a tenant's calls, optionally for one tool and optionally counted per key."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="rate_limits")
    rate = models.CharField(max_length=20, validators=[rate_validator], help_text="e.g. 120/m")
    tool = models.CharField(
        max_length=100, blank=True, help_text="Limit only this tool; empty means all tools."
    )
    per_key = models.BooleanField(
        default=False, help_text="Count each API key separately instead of the whole tenant."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["tenant", "tool", "per_key"]
        verbose_name = "rate limit policy"
        verbose_name_plural = "rate limit policies"
        constraints = [
            models.UniqueConstraint(fields=["tenant", "tool", "per_key"], name="one_rate_per_scope")
        ]

    def __str__(self) -> str:
        scope = self.tool or "all tools"
        return f"{self.tenant.slug}: {self.rate} ({scope}{', per key' if self.per_key else ''})"


class ToolPolicy(models.Model):
    """Allows, denies or holds for approval one tool (or every tool, `*`) for a tenant, one
    of its keys or one of its members."""

    class Effect(models.TextChoices):
        ALLOW = "allow", "Allow"
        DENY = "deny", "Deny"
        APPROVE = "approve", "Approve first"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="tool_policies")
    api_key = models.ForeignKey(
        ApiKey,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="tool_policies",
        help_text="Applies to this key only; empty applies to every key of the tenant.",
    )
    membership = models.ForeignKey(
        "TenantMembership",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="tool_policies",
        verbose_name="member",
        help_text="Applies to this member's OAuth calls only.",
    )
    tool = models.CharField(max_length=100, help_text="Tool name, or * for every tool.")
    effect = models.CharField(max_length=8, choices=Effect.choices)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["tenant", "tool"]
        verbose_name = "tool policy"
        verbose_name_plural = "tool policies"
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "api_key", "membership", "tool"],
                name="one_tool_rule_per_subject",
                nulls_distinct=False,
            ),
            models.CheckConstraint(
                condition=Q(api_key__isnull=True) | Q(membership__isnull=True),
                name="tool_rule_for_a_key_or_a_member",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.tenant.slug}: {self.effect} {self.tool}"

    def clean(self) -> None:
        if self.api_key is not None and self.api_key.tenant_id != self.tenant_id:
            raise ValidationError({"api_key": "This key belongs to another tenant."})
        if self.membership is not None and self.membership.tenant_id != self.tenant_id:
            raise ValidationError({"membership": "This member belongs to another tenant."})
        if self.api_key is not None and self.membership is not None:
            raise ValidationError("A rule applies to a key or to a member, not both.")


class ToolCall(models.Model):
    """One row per tools/call, whatever its outcome; append-only."""

    class Outcome(models.TextChoices):
        OK = "ok"
        DENIED = "denied"
        RATE_LIMITED = "rate_limited"
        INVALID_INPUT = "invalid_input"
        UPSTREAM_ERROR = "upstream_error"
        UNAVAILABLE = "unavailable"
        INTERNAL_ERROR = "internal_error"
        PENDING_APPROVAL = "pending_approval"

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    # The foreign keys and filtered columns are indexed together with the time (Meta), so a
    # filtered page of the newest calls is read from one index however large the table grows.
    tenant = models.ForeignKey(
        Tenant, on_delete=models.PROTECT, related_name="tool_calls", db_index=False
    )
    api_key = models.ForeignKey(
        ApiKey, on_delete=models.SET_NULL, null=True, blank=True, db_index=False
    )
    key_prefix = models.CharField(max_length=16)
    tool = models.CharField(max_length=100)
    arguments = models.JSONField(default=dict, help_text="Arguments with personal data redacted.")
    arguments_digest = models.CharField(max_length=64, help_text="SHA-256 of the raw arguments.")
    outcome = models.CharField(max_length=20, choices=Outcome.choices)
    upstream_status = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.FloatField()
    qontak_user = models.CharField(
        max_length=64, blank=True, help_text="The CRM user (Mekari SSO id) the call acted as."
    )
    person = models.CharField(
        max_length=150, blank=True, help_text="The person (username) an OAuth call was made as."
    )
    oauth_client = models.CharField(
        max_length=255, blank=True, help_text="The OAuth client (assistant) that made the call."
    )
    request_id = models.CharField(max_length=64)
    message = models.CharField(max_length=500, blank=True)
    approval = models.ForeignKey(
        "Approval",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="tool_calls",
        db_index=False,  # a partial index (Meta): few calls wait for an approval
        help_text="The approval this call waited for or ran under; it says who decided, when.",
    )
    # Names the call, so a row replayed from the audit spool twice is stored once. NULL, not
    # "", on rows written before it existed: a unique column allows many NULLs (hence DJ001).
    call_id = models.CharField(max_length=32, null=True, editable=False)  # noqa: DJ001

    class Meta:
        ordering = ["-created_at"]
        # Chosen by measurement with 20 million rows (README, "Audit at scale"): every list the
        # admin shows is the newest calls of one filter, so each filter leads an index that
        # ends in the time. No LIKE indexes (nothing searches by prefix), and a unique
        # constraint rather than unique=True for the same reason.
        indexes = [
            models.Index(fields=["tenant", "-created_at"]),
            models.Index(fields=["outcome", "created_at"], name="toolcall_outcome_time"),
            models.Index(fields=["tool", "created_at"], name="toolcall_tool_time"),
            models.Index(fields=["api_key", "created_at"], name="toolcall_key_time"),
            models.Index(fields=["request_id"], name="toolcall_request_id"),
            models.Index(
                fields=["person", "created_at"],
                name="toolcall_person_time",
                condition=~models.Q(person=""),
            ),
            models.Index(
                fields=["approval"],
                name="toolcall_approval",
                condition=models.Q(approval__isnull=False),
            ),
        ]
        constraints = [models.UniqueConstraint(fields=["call_id"], name="toolcall_call_id")]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.tool} {self.outcome}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise ValueError("Tool call audit rows are append-only.")
        super().save(*args, **kwargs)


class TenantMembership(models.Model):
    """A person's access to a tenant through OAuth: whom their calls act as in Qontak, and
    whether they may change anything."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    qontak_user = models.CharField(
        max_length=64, blank=True, help_text=SSO_USER_HELP + " Empty: the tenant's default."
    )
    read_only = models.BooleanField(
        default=False, help_text="Only tools annotated readOnlyHint, whatever the token allows."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["tenant", "user"]
        verbose_name = "member"
        constraints = [
            models.UniqueConstraint(fields=["tenant", "user"], name="one_membership_per_tenant")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.tenant.slug}"


class OAuthConnection(models.Model):
    """One person's consent, for one assistant client, on one tenant: what every token of the
    refresh-token family it starts acts as. Made at consent with the authorization code, and
    tied to the token family when the code is exchanged."""

    membership = models.ForeignKey(
        TenantMembership, on_delete=models.CASCADE, related_name="connections"
    )
    application = models.ForeignKey(
        settings.OAUTH2_PROVIDER_APPLICATION_MODEL,
        on_delete=models.CASCADE,
        related_name="connections",
    )
    grant = models.OneToOneField(
        settings.OAUTH2_PROVIDER_GRANT_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="connection",
    )
    token_family = models.UUIDField(null=True, blank=True, unique=True, editable=False)
    scope = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "OAuth connection"

    def __str__(self) -> str:
        return f"{self.application} for {self.membership}"


class DisabledClient(models.Model):
    """An OAuth client an operator turned off: its tokens are refused on the next call and it
    cannot be authorized again until the row is deleted."""

    application = models.OneToOneField(
        settings.OAUTH2_PROVIDER_APPLICATION_MODEL,
        on_delete=models.CASCADE,
        related_name="disabled",
    )
    reason = models.CharField(max_length=200, blank=True)
    disabled_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.application} (disabled)"


class TrustedClientHost(models.Model):
    """A host whose Client ID Metadata Documents are accepted: an assistant that names itself
    by an https URL (claude.ai, chatgpt.com) may connect only from a host listed here."""

    host = models.CharField(
        max_length=253,
        unique=True,
        help_text="A host name (claude.ai), or .example.com for the domain and its subdomains.",
    )
    note = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["host"]

    def __str__(self) -> str:
        return self.host


class Approval(models.Model):
    """A risky tool call held until a person decides: approved calls run once, when the
    assistant calls again with the same arguments (matched by their digest)."""

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting for approval"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"
        EXECUTED = "executed", "Approved and run"

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="approvals")
    api_key = models.ForeignKey(ApiKey, on_delete=models.SET_NULL, null=True, blank=True)
    key_prefix = models.CharField(max_length=16, blank=True)
    membership = models.ForeignKey(
        TenantMembership, on_delete=models.SET_NULL, null=True, blank=True
    )
    person = models.CharField(max_length=150, blank=True)
    oauth_client = models.CharField(max_length=255, blank=True)
    tool = models.CharField(max_length=100)
    arguments = models.JSONField(default=dict, help_text="As the audit shows them (redacted).")
    arguments_digest = models.CharField(max_length=64)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(help_text="A pending call not decided by then is refused.")
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.CharField(max_length=150, blank=True)
    reason = models.CharField(max_length=500, blank=True)
    executed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["tenant", "tool", "arguments_digest"])]

    def __str__(self) -> str:
        return f"#{self.pk} {self.tool} ({self.get_status_display().lower()})"

    @property
    def asked_by(self) -> str:
        return self.person or self.key_prefix

    def is_expired(self, now: datetime | None = None) -> bool:
        return self.status == self.Status.PENDING and self.expires_at <= (now or timezone.now())

    @property
    def shown_status(self) -> str:
        """The status people read: "expired" for a pending call past its time."""
        return "expired" if self.is_expired() else str(self.status)
