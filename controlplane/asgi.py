"""The one ASGI application: lifespan, exactly /mcp, websockets, and Django for the rest.

Channels has no lifespan support, and the MCP SDK's session manager must run for the life of
the process, so lifespan is handled here before anything is routed.
"""

from __future__ import annotations

import gc
import os
from contextlib import AsyncExitStack

from starlette.types import Receive, Scope, Send

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")

from django.conf import settings
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application

django_http = get_asgi_application()
if settings.SERVE_STATIC:
    django_http = ASGIStaticFilesHandler(django_http)

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from controlplane import tracing, vault  # noqa: E402
from controlplane.oauth.resource import MCP_PATH  # noqa: E402
from controlplane.operator.routing import websocket_urlpatterns  # noqa: E402
from mcpserver.server import lifespan, mcp_endpoint  # noqa: E402

# The Origin check is the websocket's CSRF protection: the browser sends the admin's session
# cookie to any page's websocket, so only pages served from ALLOWED_HOSTS may open one.
websockets = AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))


async def _serve_lifespan(receive: Receive, send: Send) -> None:
    stack = AsyncExitStack()
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            # Requests whose tasks live until their audit batch is written reach the oldest
            # generation; without this every full collection also walks everything loaded at
            # startup, pausing the worker (README, Performance).
            gc.collect()
            gc.freeze()
            try:
                # First in, last out: the spans of the last audit writes are exported too.
                await stack.enter_async_context(tracing.exporting())
                await stack.enter_async_context(vault.keeping_token_alive())
                await stack.enter_async_context(lifespan())
            except Exception as exc:
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await stack.aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def application(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _serve_lifespan(receive, send)
    elif scope["type"] == "http" and scope["path"] == MCP_PATH:
        await mcp_endpoint(scope, receive, send)
    elif scope["type"] == "websocket":
        await websockets(scope, receive, send)
    else:
        await django_http(scope, receive, send)  # type: ignore[arg-type]
