"""Websocket routes (the live activity feed arrives with the operator dashboard)."""

from typing import Any

websocket_urlpatterns: list[Any] = []
