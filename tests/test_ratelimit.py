"""Rate-limit windows counted in one round trip are django-ratelimit's own windows.

Tests that expect a refusal use day-long windows: a fixed window ends at a moment that
depends on the subject, and a minute-long one could roll over in the middle of a test."""

from __future__ import annotations

import asyncio
import uuid

from django_ratelimit.core import get_usage

from controlplane import ratelimit
from controlplane.policies import RateRule, TenantPolicy
from controlplane.ratelimit import RateLimitHit


def _usage(group: str, subject: str, rate: str) -> int:
    usage = get_usage(None, group=group, key=lambda _g, _r: subject, rate=rate, increment=False)
    assert usage is not None
    return int(usage["count"])


def test_admission_counts_the_windows_django_ratelimit_reads_and_stops_at_the_first_full_one():
    slug = f"adm-{uuid.uuid4().hex[:8]}"
    policy = TenantPolicy(
        tool_rules=(),
        rate_rules=(RateRule(rate="3/d", tool="", per_key=False),),
        qontak_ceiling="9/d",
    )

    async def four_calls() -> list[RateLimitHit | None]:
        return [
            await ratelimit.admit_call(
                policy=policy, tenant_slug=slug, caller_subject="key:qmcp_test", tool="get_contact"
            )
            for _ in range(4)
        ]

    hits = asyncio.run(four_calls())
    assert hits[:3] == [None, None, None]
    refused = hits[3]
    assert refused is not None and refused.rule.rate == "3/d"
    assert 1 <= refused.retry_after <= 86_400
    assert _usage("mcp:*", f"tenant:{slug}", "3/d") == 4
    # The refused call never reached Qontak, so it did not count against the ceiling.
    assert _usage("qontak", f"tenant:{slug}", "9/d") == 3


def test_a_qontak_retry_counts_against_the_ceiling_only():
    slug = f"adm-{uuid.uuid4().hex[:8]}"
    policy = TenantPolicy(tool_rules=(), rate_rules=(), qontak_ceiling="1/d")

    async def retries() -> list[RateLimitHit | None]:
        return [
            await ratelimit.admit_qontak_retry(policy=policy, tenant_slug=slug) for _ in range(2)
        ]

    first, second = asyncio.run(retries())
    assert first is None
    assert second is not None and second.scope == ratelimit.QONTAK_CEILING_SCOPE
    assert _usage("mcp:*", f"tenant:{slug}", "120/m") == 0
