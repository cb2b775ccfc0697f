"""Selectors for the operator dashboard: what the assistants did in the last hour, per tenant.

Read-only. Every query is bounded to the window (one hour by default) and read through the
time index, so the page's cost follows the calls of the last hour, not the table's size: one
query for tenants, one per aggregate (minutes x outcomes, tools, keys) and one for the
latency percentiles.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import Case, Count, Max, Q, QuerySet, Value, When
from django.db.models.functions import TruncMinute
from django.utils import timezone

from controlplane.models import ApiKey, ApiKeyQuerySet, QontakCredential, Tenant, ToolCall
from qontak.endpoints import ENDPOINTS_BY_NAME

# The outcome groups an operator reads at a glance. Whose mistake an error is decides who acts:
# the assistant's (bad arguments, an invented tool), Qontak's, or this control plane's
# (credential, Vault, database, a bug); everything not listed is the last.
OUTCOME_GROUPS = ("ok", "denied", "rate_limited", "client_error", "qontak_error", "error")
_GROUP_OF: dict[str, str] = {
    ToolCall.Outcome.OK: "ok",
    ToolCall.Outcome.DENIED: "denied",
    ToolCall.Outcome.PENDING_APPROVAL: "denied",  # held by policy until a person decides
    ToolCall.Outcome.RATE_LIMITED: "rate_limited",
    ToolCall.Outcome.INVALID_INPUT: "client_error",
    ToolCall.Outcome.UPSTREAM_ERROR: "qontak_error",
}
# How every called name that is no tool (an assistant's invention) is shown and counted.
UNKNOWN_TOOL = "unknown tool"


def outcome_group(outcome: str) -> str:
    """ok, denied, rate_limited, client_error (invalid input, unknown tools), qontak_error
    (Qontak failed or paused), or error (unavailable, internal)."""
    return _GROUP_OF.get(outcome, "error")


def known_tool_q() -> Q:
    """Calls of a tool that exists, as a filter; its negation is the "unknown tool" calls."""
    return Q(tool__in=list(ENDPOINTS_BY_NAME))


def tool_shown(tool: str) -> str:
    """The tool's name, or UNKNOWN_TOOL for a name that is no tool."""
    return tool if tool in ENDPOINTS_BY_NAME else UNKNOWN_TOOL


@dataclass
class OutcomeCounts:
    ok: int = 0
    denied: int = 0
    rate_limited: int = 0
    client_error: int = 0
    qontak_error: int = 0
    error: int = 0

    @property
    def total(self) -> int:
        return sum(getattr(self, group) for group in OUTCOME_GROUPS)

    def add(self, outcome: str, count: int) -> None:
        group = outcome_group(outcome)
        setattr(self, group, getattr(self, group) + count)

    def merge(self, other: OutcomeCounts) -> None:
        for group, count in other.items():
            setattr(self, group, getattr(self, group) + count)

    def items(self) -> list[tuple[str, int]]:
        return [(group, getattr(self, group)) for group in OUTCOME_GROUPS]


@dataclass
class MinuteBucket:
    start: datetime
    outcomes: OutcomeCounts = field(default_factory=OutcomeCounts)


@dataclass(frozen=True)
class ToolCount:
    tool: str
    outcomes: OutcomeCounts

    @property
    def calls(self) -> int:
        return self.outcomes.total

    @property
    def failed(self) -> int:
        """Calls that did not succeed: denied, rate-limited or errors."""
        return self.outcomes.total - self.outcomes.ok


@dataclass(frozen=True)
class KeyUsage:
    """An API key's calls, or a person's (`person` set, `prefix` empty) through a client."""

    prefix: str
    label: str
    read_only: bool
    revoked: bool
    calls: int
    last_call: datetime
    person: str = ""
    client: str = ""


@dataclass(frozen=True)
class TokenStatus:
    status: str
    label: str
    expires_at: datetime | None
    last_refreshed_at: datetime | None
    last_error: str

    @property
    def healthy(self) -> bool:
        return self.status == QontakCredential.Status.VALID


@dataclass
class Activity:
    """Calls in the window: per-minute outcome counts, totals, latency percentiles, top tools."""

    minutes: list[MinuteBucket]
    outcomes: OutcomeCounts = field(default_factory=OutcomeCounts)
    p50_ms: float | None = None
    p95_ms: float | None = None
    top_tools: list[ToolCount] = field(default_factory=list)


@dataclass
class TenantActivity:
    tenant_id: int
    slug: str
    name: str
    is_active: bool
    token: TokenStatus
    usable_keys: int
    activity: Activity
    keys_in_use: list[KeyUsage] = field(default_factory=list)


@dataclass
class Dashboard:
    since: datetime
    until: datetime
    overall: Activity
    tenants: list[TenantActivity]  # the busy ones, busiest first, then the quiet ones shown
    quiet_not_shown: int = 0  # quiet tenants beyond QUIET_SHOWN

    @property
    def busy_tenants(self) -> list[TenantActivity]:
        return [t for t in self.tenants if t.activity.outcomes.total]

    @property
    def quiet_tenants(self) -> list[TenantActivity]:
        return [t for t in self.tenants if not t.activity.outcomes.total]


def _empty_minutes(since: datetime, count: int) -> list[MinuteBucket]:
    return [MinuteBucket(start=since + timedelta(minutes=i)) for i in range(count)]


def _nearest_rank_latencies(
    calls: QuerySet[ToolCall], quantiles: tuple[float, ...]
) -> dict[float, dict[int | None, float]]:
    """Latency at each quantile (nearest rank: the value at rank ceil(q * n)) per tenant, and
    for all tenants under key None.

    One read of the window's (tenant, latency) pairs, ranked here: four window-function
    queries (two quantiles, per tenant and overall) cost several times more in the database.
    """
    latencies: dict[int | None, list[float]] = defaultdict(list)
    for tenant_id, latency in calls.values_list("tenant_id", "latency_ms"):
        latencies[tenant_id].append(latency)
        latencies[None].append(latency)
    found: dict[float, dict[int | None, float]] = {quantile: {} for quantile in quantiles}
    for key, values in latencies.items():
        values.sort()
        for quantile in quantiles:
            found[quantile][key] = values[max(math.ceil(quantile * len(values)), 1) - 1]
    return found


def _token_status(tenant: Tenant) -> TokenStatus:
    credential: QontakCredential | None = getattr(tenant, "credential", None)
    if credential is None:
        return TokenStatus("missing", "No credential reference", None, None, "")
    return TokenStatus(
        status=credential.status,
        label=credential.get_status_display(),
        expires_at=credential.access_token_expires_at,
        last_refreshed_at=credential.last_refreshed_at,
        last_error=credential.last_error,
    )


def _top(counts: Iterable[ToolCount], top_n: int) -> list[ToolCount]:
    return sorted(counts, key=lambda t: (-t.calls, t.tool))[:top_n]


# Quiet tenants listed (those whose token needs attention first): with thousands of tenants the
# page would otherwise list every one of them.
QUIET_SHOWN = 50


def _needs_attention_first() -> Case:
    """Tenants whose Qontak credential failed sort first, then those still without one, then
    the healthy ones."""
    return Case(
        When(credential__status=QontakCredential.Status.VALID, then=Value(2)),
        When(credential__status=QontakCredential.Status.MISSING, then=Value(1)),
        When(credential__isnull=True, then=Value(1)),
        default=Value(0),
    )


def _with_usable_keys(tenants: QuerySet[Tenant], now: datetime) -> QuerySet[Tenant]:
    return tenants.annotate(
        usable_keys=Count("api_keys", filter=ApiKeyQuerySet.usable_q(now, via="api_keys"))
    )


def dashboard_activity(
    *,
    now: datetime | None = None,
    minutes: int = 60,
    top_n: int = 5,
    tenant_slug: str = "",
) -> Dashboard:
    """Activity of every tenant (or one, by slug) in the last `minutes`, busiest first.

    The window starts on a minute boundary so each bar of the per-minute chart is a whole
    minute except the current one.
    """
    now = now or timezone.now()
    since = now.replace(second=0, microsecond=0) - timedelta(minutes=minutes - 1)
    tenants_qs = Tenant.objects.select_related("credential")
    calls = ToolCall.objects.filter(created_at__gte=since, created_at__lte=now).order_by()
    if tenant_slug:
        tenants_qs = tenants_qs.filter(slug=tenant_slug)
        calls = calls.filter(tenant__slug=tenant_slug)

    overall = Activity(minutes=_empty_minutes(since, minutes))
    by_tenant: dict[int, Activity] = defaultdict(
        lambda: Activity(minutes=_empty_minutes(since, minutes))
    )

    per_minute = (
        calls.annotate(minute=TruncMinute("created_at", tzinfo=UTC))
        .values_list("tenant_id", "minute", "outcome")
        .annotate(count=Count("id"))
    )
    for tenant_id, minute, outcome, count in per_minute:
        index = int((minute - since).total_seconds() // 60)
        if not 0 <= index < minutes:
            continue
        for activity in (by_tenant[tenant_id], overall):
            activity.minutes[index].outcomes.add(outcome, count)
            activity.outcomes.add(outcome, count)

    tools = calls.values_list("tool", "tenant_id", "outcome").annotate(total=Count("id"))
    tenant_tools: dict[int, dict[str, OutcomeCounts]] = defaultdict(
        lambda: defaultdict(OutcomeCounts)
    )
    overall_tools: dict[str, OutcomeCounts] = defaultdict(OutcomeCounts)
    for tool, tenant_id, outcome, total in tools:
        name = tool_shown(tool)  # invented names are counted together
        tenant_tools[tenant_id][name].add(outcome, total)
        overall_tools[name].add(outcome, total)
    for tenant_id, counts_by_tool in tenant_tools.items():
        by_tenant[tenant_id].top_tools = _top(
            (ToolCount(t, c) for t, c in counts_by_tool.items()), top_n
        )
    overall.top_tools = _top((ToolCount(t, c) for t, c in overall_tools.items()), top_n)

    percentiles = _nearest_rank_latencies(calls, (0.5, 0.95))
    for quantile, attribute in ((0.5, "p50_ms"), (0.95, "p95_ms")):
        for tenant_key, latency in percentiles[quantile].items():
            target = overall if tenant_key is None else by_tenant[tenant_key]
            setattr(target, attribute, latency)

    keys: dict[int, list[KeyUsage]] = defaultdict(list)
    # Grouped without joining the keys, whose labels are read after for the keys that called:
    # a join would read the whole key table (tens of thousands of keys) on every page view.
    key_rows = list(
        calls.values_list("tenant_id", "api_key_id", "key_prefix", "person", "oauth_client")
        .annotate(count=Count("id"), last=Max("created_at"))
        .order_by("-count")
    )
    called = ApiKey.objects.only("label", "read_only", "revoked_at").in_bulk(
        {row[1] for row in key_rows if row[1] is not None}
    )
    for tenant_id, api_key_id, prefix, person, client, count, last in key_rows:
        api_key = called.get(api_key_id) if api_key_id is not None else None
        keys[tenant_id].append(
            KeyUsage(
                prefix=prefix,
                label=api_key.label if api_key else "",
                read_only=bool(api_key and api_key.read_only),
                revoked=bool(api_key and api_key.revoked_at is not None),
                calls=count,
                last_call=last,
                person=person,
                client=client,
            )
        )

    def row(tenant: Any) -> TenantActivity:  # a Tenant annotated with usable_keys
        return TenantActivity(
            tenant_id=tenant.pk,
            slug=tenant.slug,
            name=tenant.name,
            is_active=tenant.is_active,
            token=_token_status(tenant),
            usable_keys=tenant.usable_keys,
            activity=by_tenant.get(tenant.pk) or Activity(minutes=_empty_minutes(since, minutes)),
            keys_in_use=keys.get(tenant.pk, []),
        )

    busy_qs = tenants_qs.filter(pk__in=list(by_tenant))
    busy = sorted(
        (row(tenant) for tenant in _with_usable_keys(busy_qs, now)),
        key=lambda t: (-t.activity.outcomes.total, t.slug),
    )
    quiet_qs = tenants_qs.exclude(pk__in=list(by_tenant)).order_by(_needs_attention_first(), "slug")
    # The tenants are picked first and their keys counted after: counting every tenant's keys
    # before the LIMIT would cost a count per tenant, thousands of them.
    shown = list(quiet_qs.values_list("pk", flat=True)[:QUIET_SHOWN])
    quiet_rows = _with_usable_keys(tenants_qs.filter(pk__in=shown), now).in_bulk()
    quiet = [row(quiet_rows[pk]) for pk in shown]
    quiet_not_shown = quiet_qs.count() - QUIET_SHOWN if len(quiet) == QUIET_SHOWN else 0
    return Dashboard(
        since=since,
        until=now,
        overall=overall,
        tenants=busy + quiet,
        quiet_not_shown=quiet_not_shown,
    )
