"""Tool access and rate limits as operators set them: resolved from the database and cached per
worker. Counting calls against the limits is controlplane.ratelimit's job.

A worker keeps each tenant's policies for one configuration version (controlplane.config_version),
so an edit in the admin or through a command applies on the next call everywhere, without a
restart and without reading the database on every call.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError
from django.db.models import Model
from django.db.models.signals import post_delete

from controlplane.config_version import VersionedCache
from controlplane.errors import DatabaseUnavailable, InvalidInput
from controlplane.models import (
    ApiKey,
    RateLimitPolicy,
    Tenant,
    TenantMembership,
    ToolPolicy,
    rate_validator,
)
from qontak.endpoints import ENDPOINTS_BY_NAME

ANY_TOOL = "*"


@dataclass(frozen=True)
class ToolRule:
    api_key_id: int | None
    tool: str
    effect: str  # ToolPolicy.Effect
    membership_id: int | None = None


@dataclass(frozen=True)
class RateRule:
    rate: str
    tool: str
    per_key: bool

    @property
    def scope(self) -> str:
        what = f"tool {self.tool}" if self.tool else "all tools"
        who = "this API key or person" if self.per_key else "this tenant"
        return f"{what}, {who}"


@dataclass(frozen=True)
class TenantPolicy:
    tool_rules: tuple[ToolRule, ...]
    rate_rules: tuple[RateRule, ...]
    qontak_ceiling: str
    destructive_needs_approval: bool = False

    def tool_effect(
        self,
        *,
        tool: str,
        api_key_id: int | None,
        membership_id: int | None = None,
        key_read_only: bool,
        tool_read_only: bool,
        tool_destructive: bool = False,
    ) -> str:
        """allow, deny or approve. A read-only key or member gets read-only tools only; then
        the key's or member's rules beat the tenant's, an exact tool name beats `*`, and
        without a rule a tool is allowed, or held for approval when it is destructive and the
        tenant says so."""
        if key_read_only and not tool_read_only:
            return ToolPolicy.Effect.DENY
        for subject in ((api_key_id, membership_id), (None, None)):
            for name in (tool, ANY_TOOL):
                for rule in self.tool_rules:
                    if (rule.api_key_id, rule.membership_id) == subject and rule.tool == name:
                        return rule.effect
        if self.destructive_needs_approval and tool_destructive:
            return ToolPolicy.Effect.APPROVE
        return ToolPolicy.Effect.ALLOW

    @property
    def may_hold_calls(self) -> bool:
        """Whether any call of this tenant can be held for approval."""
        return self.destructive_needs_approval or any(
            rule.effect == ToolPolicy.Effect.APPROVE for rule in self.tool_rules
        )

    def tool_allowed(
        self, *, tool: str, api_key_id: int | None, key_read_only: bool, tool_read_only: bool
    ) -> bool:
        """Whether the tool may be called at all (held for approval counts as yes)."""
        return (
            self.tool_effect(
                tool=tool,
                api_key_id=api_key_id,
                key_read_only=key_read_only,
                tool_read_only=tool_read_only,
            )
            != ToolPolicy.Effect.DENY
        )

    def rates_for(self, tool: str) -> tuple[RateRule, ...]:
        rules = tuple(rule for rule in self.rate_rules if rule.tool in ("", tool))
        if not any(rule.tool == "" and not rule.per_key for rule in rules):
            rules = (RateRule(rate=settings.DEFAULT_RATE_LIMIT, tool="", per_key=False), *rules)
        return rules


logger = logging.getLogger(__name__)

_policies: VersionedCache[int, TenantPolicy] = VersionedCache()


def cached_tenant_policy(*, tenant_id: int, version: str | None) -> TenantPolicy | None:
    """This worker's copy when it is still current; no I/O, safe on the event loop."""
    return _policies.get(tenant_id, version)


async def policy_for_call(*, tenant_id: int, version: str | None) -> TenantPolicy:
    """The tenant's policies for a tool call: this worker's copy when current (no thread hop),
    else the database in a thread; while the database cannot be reached, this worker's copy
    of any age (no announcement said it changed). Raises DatabaseUnavailable."""
    cached = cached_tenant_policy(tenant_id=tenant_id, version=version)
    if cached is not None:
        return cached
    try:
        return await sync_to_async(tenant_policy)(tenant_id=tenant_id, version=version)
    except DatabaseError:
        aged = _policies.get(tenant_id, version, any_age=True)
        if aged is not None:
            return aged
        raise DatabaseUnavailable(
            "the control plane cannot reach its database to read this tenant's policies; "
            "retry shortly"
        ) from None


def tenant_policy(*, tenant_id: int, version: str | None = None) -> TenantPolicy:
    """The tenant's policies, cached under `version`. Blocking (database) on a miss; read
    `version` before calling, so a change committed meanwhile is not cached as current."""
    cached = cached_tenant_policy(tenant_id=tenant_id, version=version)
    if cached is not None:
        return cached
    ceiling, destructive_needs_approval = Tenant.objects.filter(pk=tenant_id).values_list(
        "qontak_request_ceiling", "destructive_needs_approval"
    ).first() or ("", False)
    policy = TenantPolicy(
        qontak_ceiling=ceiling or settings.QONTAK_REQUEST_CEILING,
        destructive_needs_approval=destructive_needs_approval,
        tool_rules=tuple(
            ToolRule(api_key_id=api_key_id, membership_id=membership_id, tool=tool, effect=effect)
            for api_key_id, membership_id, tool, effect in ToolPolicy.objects.filter(
                tenant_id=tenant_id
            ).values_list("api_key_id", "membership_id", "tool", "effect")
        ),
        rate_rules=tuple(
            RateRule(rate=rate, tool=tool, per_key=per_key)
            for rate, tool, per_key in RateLimitPolicy.objects.filter(
                tenant_id=tenant_id
            ).values_list("rate", "tool", "per_key")
        ),
    )
    _policies.put(tenant_id, version, policy)
    return policy


def forget_cached_policies() -> None:
    _policies.clear()


def rate_limit_set(*, tenant: Tenant, rate: str, tool: str = "", per_key: bool = False) -> None:
    """Upsert the tenant's limit for one tool (a known name) or, with "" or `*`, all tools.
    Raises InvalidInput for a rate that does not parse or a misspelt tool, which no call would
    ever count against."""
    tool = rate_tool_checked(tool)
    try:
        rate_validator(rate)
    except Exception:
        raise InvalidInput(
            f"'{rate}' is not a rate: write COUNT/UNIT with UNIT s, m, h or d (e.g. 120/m)"
        ) from None
    RateLimitPolicy.objects.update_or_create(
        tenant=tenant, tool=tool, per_key=per_key, defaults={"rate": rate}
    )


def known_tool_names() -> list[str]:
    """The names a tool rule may name, `*` first: one per row of qontak.endpoints."""
    return [ANY_TOOL, *sorted(ENDPOINTS_BY_NAME)]


def tool_name_checked(tool: str) -> str:
    """`tool` stripped when it is `*` or a known tool; raises InvalidInput naming the closest
    known tool otherwise, since a rule for a misspelt name would never apply."""
    tool = tool.strip()
    if tool == ANY_TOOL or tool in ENDPOINTS_BY_NAME:
        return tool
    shown = tool[:100]
    closest = difflib.get_close_matches(tool, ENDPOINTS_BY_NAME, n=1, cutoff=0.6)
    hint = f"did you mean '{closest[0]}'?" if closest else "pick one from the list of tools"
    raise InvalidInput(f"there is no tool '{shown}': {hint} (or * for every tool)")


def rate_tool_checked(tool: str) -> str:
    """A rate limit's tool: "" (all tools, also written `*`) or a known tool name."""
    if not tool.strip():
        return ""
    checked = tool_name_checked(tool)
    return "" if checked == ANY_TOOL else checked


def tool_access_set(
    *,
    tenant: Tenant,
    tool: str,
    effect: str,
    api_key: ApiKey | None = None,
    membership: TenantMembership | None = None,
) -> None:
    """Allow, deny or hold for approval `tool` (a known tool name or `*`) for the tenant, one
    of its keys or one of its members. Raises InvalidInput for an unknown tool (naming the
    closest one), effect, key or member."""
    tool = tool_name_checked(tool)
    if effect not in ToolPolicy.Effect.values:
        raise InvalidInput(f"'{effect}' is not an access effect: use allow, deny or approve")
    if api_key is not None and api_key.tenant_id != tenant.pk:
        raise InvalidInput(f"API key {api_key.prefix} belongs to another tenant")
    if membership is not None and membership.tenant_id != tenant.pk:
        raise InvalidInput(f"{membership.user} is not a member of {tenant.slug}")
    if api_key is not None and membership is not None:
        raise InvalidInput("a rule applies to one API key or one member, not both")
    ToolPolicy.objects.update_or_create(
        tenant=tenant,
        api_key=api_key,
        membership=membership,
        tool=tool,
        defaults={"effect": effect},
    )


def policy_changed(sender: type[Model], instance: Model, **kwargs: Any) -> None:
    """Log every change to a policy row, whichever path made it (admin, command, shell).

    Connected to post_save and post_delete in the app config; workers pick the change up
    through the configuration version (controlplane.config_version).
    """
    tenant = getattr(instance, "tenant", None)
    logger.info(
        "%s %s: %s",
        sender._meta.verbose_name,
        "deleted" if kwargs.get("signal") is post_delete else "saved",
        instance,
        extra={"event": "policy_changed", "tenant": getattr(tenant, "slug", None)},
    )
