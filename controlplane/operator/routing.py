"""Websocket routes, served by controlplane.asgi behind session auth and an Origin check."""

from typing import Any

from django.urls import path

from controlplane.operator.consumers import LiveFeedConsumer

LIVE_FEED_PATH = "ws/tool-calls/"

websocket_urlpatterns: list[Any] = [
    path(LIVE_FEED_PATH, LiveFeedConsumer.as_asgi(), name="live-feed-socket"),
]
