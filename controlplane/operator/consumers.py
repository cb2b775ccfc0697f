"""The live feed's websocket: forwards each audited tool call to the operators watching.

Only an active staff user allowed to view the audit trail may connect; anyone else has the
handshake refused (HTTP 403), before joining the group. The session comes from the admin login
(channels' AuthMiddlewareStack, database-backed sessions), and the Origin header is checked
against ALLOWED_HOSTS in controlplane.asgi, which is what stops cross-site websocket hijacking.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from controlplane.operator.live import LIVE_GROUP, mark_feed_watched

logger = logging.getLogger(__name__)

FEED_PERMISSION = "controlplane.view_toolcall"


def may_watch_tool_calls(user: Any) -> bool:
    """Staff with view permission on the audit trail: the same rule as the admin pages.

    Blocking (has_perm reads the database for non-superusers).
    """
    return bool(
        user is not None
        and user.is_authenticated
        and user.is_active
        and user.is_staff
        and user.has_perm(FEED_PERMISSION)
    )


class LiveFeedConsumer(AsyncJsonWebsocketConsumer):
    """Joins LIVE_GROUP and sends each call, optionally only one tenant's.

    The tenant filter comes from `?tenant=<slug>` and can be changed at any time by sending
    `{"tenant": "<slug>"}` (an empty slug means every tenant). The page also sends
    `{"type": "ping"}` every 30 s so calls keep being published (see controlplane.operator.live).
    """

    tenant_filter: str = ""

    async def connect(self) -> None:
        user = self.scope.get("user")
        if not await database_sync_to_async(may_watch_tool_calls)(user):
            logger.info(
                "live feed refused to user %s",
                getattr(user, "pk", None),
                extra={"event": "live_feed_refused"},
            )
            await self.close()
            return
        query = parse_qs(self.scope.get("query_string", b"").decode("latin1"))
        self.tenant_filter = query.get("tenant", [""])[0]
        await mark_feed_watched()
        await self.channel_layer.group_add(LIVE_GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(LIVE_GROUP, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await mark_feed_watched()  # any message, pings included, says the page is open
        if isinstance(content, dict) and isinstance(content.get("tenant"), str):
            self.tenant_filter = content["tenant"][:50]
            await self.send_json({"type": "filter", "tenant": self.tenant_filter})

    async def tool_call_event(self, event: dict[str, Any]) -> None:
        """Handler for live.EVENT_TYPE ("tool_call.event") messages from the group."""
        if self.tenant_filter and event.get("tenant") != self.tenant_filter:
            return
        await self.send_json(
            # controlplane.operator.live.tool_call_event decides what an operator sees of a call.
            {
                **{name: value for name, value in event.items() if name != "type"},
                "type": "tool_call",
            }
        )

    async def approval_event(self, event: dict[str, Any]) -> None:
        """Handler for live.APPROVAL_EVENT_TYPE messages: a call held or decided."""
        if self.tenant_filter and event.get("tenant") != self.tenant_filter:
            return
        await self.send_json(
            {**{name: value for name, value in event.items() if name != "type"}, "type": "approval"}
        )
