"""The live feed of tool calls: audited calls are also published on the channel layer.

Consumers (the admin's live activity page) join LIVE_GROUP; the message carries only what
the audit list shows, never arguments. Publishing is best effort: a channel layer failure is
logged and never fails the tool call. It only happens while a feed page is open (the page
renews a short-lived flag in the shared cache), because publishing to the Redis channel layer
costs each call real CPU that would be spent for nobody when no operator watches.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.cache import cache

from controlplane.models import Approval, ToolCall

logger = logging.getLogger(__name__)

LIVE_GROUP = "tool-calls"
EVENT_TYPE = "tool_call.event"
WATCHED_KEY = "live-feed:watched"
# An open feed page pings every 30 s; the flag outlives a missed ping or two.
WATCHED_SECONDS = 90


def feed_watched() -> bool:
    """Whether any operator has a live feed open. Blocking (shared cache); False when the
    cache cannot say, since the feed is a convenience."""
    try:
        return bool(cache.get(WATCHED_KEY))
    except Exception:
        logger.warning(
            "live feed flag unreadable", exc_info=True, extra={"event": "live_feed_flag_failed"}
        )
        return False


async def mark_feed_watched() -> None:
    await cache.aset(WATCHED_KEY, True, WATCHED_SECONDS)


def tool_call_event(call: ToolCall, *, tenant_slug: str) -> dict[str, Any]:
    return {
        "type": EVENT_TYPE,
        "id": call.pk,
        "created_at": call.created_at.isoformat(),
        "tenant": tenant_slug,
        "key_prefix": call.key_prefix,
        "person": call.person,
        "oauth_client": call.oauth_client,
        "tool": call.tool,
        "outcome": call.outcome,
        "upstream_status": call.upstream_status,
        "latency_ms": round(call.latency_ms, 1),
        "message": call.message[:200],  # the reason given to the assistant, as the list shows
    }


async def publish_tool_call(call: ToolCall, *, tenant_slug: str) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        await layer.group_send(LIVE_GROUP, tool_call_event(call, tenant_slug=tenant_slug))
    except Exception:  # the feed is a convenience; the audit row is the record
        logger.warning(
            "live feed publish failed for %s",
            call.tool,
            exc_info=True,
            extra={"event": "live_feed_publish_failed", "tool": call.tool},
        )


_pending: set[asyncio.Task[None]] = set()


def publish_in_background(call: ToolCall, *, tenant_slug: str) -> None:
    """Publish without holding up the tool result (a Redis round trip saved per call)."""
    task = asyncio.get_running_loop().create_task(publish_tool_call(call, tenant_slug=tenant_slug))
    _pending.add(task)  # keep a reference until done, or the task may be collected
    task.add_done_callback(_pending.discard)


APPROVAL_EVENT_TYPE = "approval.event"


def approval_event(approval: Approval) -> dict[str, Any]:
    """A held call as the feed shows it: what the approval list shows (arguments as the audit
    keeps them, redacted)."""
    return {
        "type": APPROVAL_EVENT_TYPE,
        "id": approval.pk,
        "tenant": approval.tenant.slug,
        "tool": approval.tool,
        "arguments": approval.arguments,
        "status": approval.shown_status,
        "asked_by": approval.asked_by,
        "created_at": approval.created_at.isoformat(),
        "expires_at": approval.expires_at.isoformat(),
        "decided_by": approval.decided_by,
        "reason": approval.reason[:200],
    }


def publish_approval(approval: Approval) -> None:
    """Publish a held call or its decision to the operators' feed; always, since approvals are
    rare and someone must see them. Blocking; raises whatever the channel layer raises."""
    layer = get_channel_layer()
    if layer is not None:
        async_to_sync(layer.group_send)(LIVE_GROUP, approval_event(approval))
