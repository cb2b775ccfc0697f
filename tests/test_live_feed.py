"""The live feed websocket: staff see each tool call as it happens; nobody else connects."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
import websockets
from asgiref.sync import sync_to_async
from asgiref.testing import ApplicationCommunicator
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from mcp import Client as McpClient

from controlplane.asgi import websockets as websocket_app
from controlplane.operator.live import EVENT_TYPE, LIVE_GROUP
from tests.calls import with_mcp

SOCKET_PATH = "/ws/tool-calls/"
ORIGIN = (b"origin", b"http://127.0.0.1")


class Socket(ApplicationCommunicator):
    """A websocket client speaking ASGI to the app directly (channels.testing needs daphne)."""

    def __init__(self, path: str, query: str, headers: list[tuple[bytes, bytes]]) -> None:
        scope = {
            "type": "websocket",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "headers": headers,
            "subprotocols": [],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
        super().__init__(websocket_app, scope)

    async def connect(self) -> bool:
        await self.send_input({"type": "websocket.connect"})
        return (await self.receive_output(5))["type"] == "websocket.accept"

    async def send_json(self, content: Any) -> None:
        await self.send_input({"type": "websocket.receive", "text": json.dumps(content)})

    async def receive_json(self) -> Any:
        message = await self.receive_output(5)
        assert message["type"] == "websocket.send", message
        return json.loads(message["text"])

    async def disconnect(self) -> None:
        await self.send_input({"type": "websocket.disconnect", "code": 1000})
        await self.wait(2)


def _session_cookie(user: Any) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


@sync_to_async
def _user_cookie(kind: str) -> str | None:
    """A logged-in session for a user of `kind`, or None for an anonymous visitor."""
    users = get_user_model().objects
    if kind == "anonymous":
        return None
    if kind == "superuser":
        user = users.create_superuser("root", "root@example.com", "pw-123456")
    elif kind == "auditor":
        user = users.create_user("auditor", password="pw-123456", is_staff=True)
        user.user_permissions.add(Permission.objects.get(codename="view_toolcall"))
    elif kind == "staff-without-audit":
        user = users.create_user("helpdesk", password="pw-123456", is_staff=True)
    else:
        user = users.create_user("customer", password="pw-123456")
    return _session_cookie(user)


def _communicator(
    cookie: str | None, query: str = "", origin: tuple[bytes, bytes] = ORIGIN
) -> Socket:
    headers = [origin]
    if cookie:
        headers.append((b"cookie", f"sessionid={cookie}".encode()))
    return Socket(SOCKET_PATH, query, headers)


def _event(tenant: str, tool: str = "list_contacts", **extra: Any) -> dict[str, Any]:
    return {
        "type": EVENT_TYPE,
        "id": 1,
        "created_at": "2026-11-25T10:00:00+00:00",
        "tenant": tenant,
        "key_prefix": "qmcp_abcdefgh",
        "tool": tool,
        "outcome": "ok",
        "upstream_status": 200,
        "latency_ms": 12.5,
        **extra,
    }


def _slug(name: str) -> str:
    """A tenant name no other test run shares: with Redis, the group spans processes."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


async def _next_call_of(communicator: Socket, tenants: set[str]) -> dict[str, Any]:
    """The next forwarded call of one of `tenants`, skipping other runs' traffic."""
    for _ in range(50):
        message = await communicator.receive_json()
        if message.get("type") == "filter" or message.get("tenant") in tenants:
            return dict(message)
    raise AssertionError(f"no call of {tenants} arrived")


async def _publish(event: dict[str, Any]) -> None:
    layer = get_channel_layer()
    assert layer is not None
    await layer.group_send(LIVE_GROUP, event)


@pytest.mark.parametrize("kind", ["superuser", "auditor"])
async def test_staff_allowed_to_view_the_audit_trail_see_calls_as_they_happen(
    transactional_db, kind
):
    acme = _slug("acme")
    communicator = _communicator(await _user_cookie(kind))
    connected = await communicator.connect()
    assert connected
    await _publish(_event(acme, tool="create_deal", outcome="denied"))
    message = await _next_call_of(communicator, {acme})
    assert message["type"] == "tool_call"
    assert (message["tool"], message["outcome"]) == ("create_deal", "denied")
    assert message["latency_ms"] == 12.5
    await communicator.disconnect()


@pytest.mark.parametrize("kind", ["anonymous", "customer", "staff-without-audit"])
async def test_anonymous_non_staff_and_unpermitted_websockets_are_refused(transactional_db, kind):
    communicator = _communicator(await _user_cookie(kind))
    connected = await communicator.connect()
    assert not connected


async def test_a_page_on_another_origin_cannot_open_the_feed_with_the_admins_cookie(
    transactional_db,
):
    cookie = await _user_cookie("superuser")
    communicator = _communicator(cookie, origin=(b"origin", b"https://evil.example"))
    connected = await communicator.connect()
    assert not connected


async def test_tenant_filter_from_the_query_string_drops_other_tenants_calls(transactional_db):
    acme, globex = _slug("acme"), _slug("globex")
    communicator = _communicator(await _user_cookie("superuser"), query=f"tenant={acme}")
    assert await communicator.connect()
    await _publish(_event(globex, tool="get_deal"))
    await _publish(_event(acme, tool="get_contact"))
    message = await communicator.receive_json()  # the filter drops every other tenant
    assert (message["tenant"], message["tool"]) == (acme, "get_contact")
    assert await communicator.receive_nothing(timeout=0.3)
    await communicator.disconnect()


async def test_operator_can_change_the_tenant_filter_without_reconnecting(transactional_db):
    acme, globex = _slug("acme"), _slug("globex")
    communicator = _communicator(await _user_cookie("superuser"))
    assert await communicator.connect()
    await communicator.send_json({"tenant": globex})
    assert await _next_call_of(communicator, set()) == {"type": "filter", "tenant": globex}
    await _publish(_event(acme))
    await _publish(_event(globex, tool="list_deals"))
    message = await communicator.receive_json()
    assert (message["tenant"], message["tool"]) == (globex, "list_deals")

    await communicator.send_json({"tenant": ""})
    assert (await _next_call_of(communicator, set()))["tenant"] == ""
    await _publish(_event(acme, tool="list_notes"))
    assert (await _next_call_of(communicator, {acme}))["tool"] == "list_notes"
    await communicator.disconnect()


def _socket_url(control_plane: Any, query: str = "") -> str:
    return control_plane.url.replace("http://", "ws://") + SOCKET_PATH + query


def test_real_tool_call_reaches_a_logged_in_operators_websocket(control_plane, make_tenant):
    """Through uvicorn: the MCP request, the audit row, the channel layer and the socket."""
    demo = make_tenant()
    admin = get_user_model().objects.create_superuser("watcher", "w@example.com", "pw-123456")
    cookie = _session_cookie(admin)

    async def call(client: McpClient) -> Any:
        return await client.call_tool("list_contacts", {"per_page": 1})

    async def watch() -> dict[str, Any]:
        async with websockets.connect(
            _socket_url(control_plane, f"?tenant={demo.tenant.slug}"),
            additional_headers={"Cookie": f"sessionid={cookie}", "Origin": control_plane.url},
        ) as socket:
            result = await asyncio.to_thread(
                with_mcp, control_plane.mcp_url, demo.key, "2026-07-28", call
            )
            assert not result.is_error, result.content
            return dict(json.loads(await asyncio.wait_for(socket.recv(), timeout=10)))

    event = asyncio.run(watch())
    assert event["tenant"] == demo.tenant.slug
    assert event["tool"] == "list_contacts"
    assert event["outcome"] == "ok"
    assert event["key_prefix"] == demo.key[: len(event["key_prefix"])]
    assert event["latency_ms"] > 0


def test_real_server_refuses_an_anonymous_websocket(control_plane, transactional_db):
    async def connect() -> int:
        try:
            async with websockets.connect(
                _socket_url(control_plane), additional_headers={"Origin": control_plane.url}
            ):
                return 101
        except websockets.InvalidStatus as exc:
            return exc.response.status_code

    assert asyncio.run(connect()) == 403


@pytest.mark.django_db(transaction=True)
def test_calls_are_published_only_while_a_feed_page_is_open():
    import asyncio

    from channels.layers import channel_layers, get_channel_layer
    from django.conf import settings
    from django.core.cache import cache

    from controlplane.operator import live
    from tests.calls import in_process_caller, run_tool_call_and_drain

    caller = in_process_caller("watch", "req-watch")
    tenant = caller.tenant
    # With Redis, a layer object of this test's own (the shared one may be bound to another
    # test's event loop); in memory, the very object the pipeline publishes to.
    layer = channel_layers.make_backend("default") if settings.REDIS_URL else get_channel_layer()

    async def next_event_for_tenant(channel: str, wait: float) -> dict | None:
        try:
            async with asyncio.timeout(wait):
                while True:
                    message = await layer.receive(channel)
                    if message.get("tenant") == tenant.slug:
                        return message
        except TimeoutError:
            return None

    async def scenario() -> tuple[dict | None, dict | None]:
        channel = await layer.new_channel()
        await layer.group_add(live.LIVE_GROUP, channel)
        await cache.adelete(live.WATCHED_KEY)
        await run_tool_call_and_drain(caller, "nothing_watched", {})
        unseen = await next_event_for_tenant(channel, 0.5)
        await live.mark_feed_watched()
        await run_tool_call_and_drain(caller, "while_watched", {})
        seen = await next_event_for_tenant(channel, 5)
        await layer.group_discard(live.LIVE_GROUP, channel)
        return unseen, seen

    unseen, seen = asyncio.run(scenario())
    assert unseen is None
    assert seen is not None and seen["tool"] == "while_watched"


async def test_a_held_call_and_its_decision_reach_the_feed(transactional_db):
    from asgiref.sync import sync_to_async

    from controlplane import approvals
    from controlplane.models import Tenant

    slug = _slug("held")
    communicator = _communicator(await _user_cookie("superuser"))
    assert await communicator.connect()

    def file_and_decide() -> None:
        tenant = Tenant.objects.create(slug=slug, name=slug)
        asker = approvals.Asker(
            tenant_id=tenant.pk,
            api_key_id=None,
            key_prefix="qmcp_abcdefgh",
            membership_id=None,
            person="",
            oauth_client="",
        )
        gate = approvals.gate(asker=asker, tool="delete_contact", arguments={"id": 1})
        approvals.decide(approval_id=gate.approval.pk, approve=False, decided_by="ops", reason="no")

    await sync_to_async(file_and_decide)()
    held = await _next_call_of(communicator, {slug})
    decided = await _next_call_of(communicator, {slug})
    assert (held["type"], held["tool"], held["status"]) == ("approval", "delete_contact", "pending")
    assert (decided["status"], decided["decided_by"], decided["reason"]) == (
        "rejected",
        "ops",
        "no",
    )
    await communicator.disconnect()
