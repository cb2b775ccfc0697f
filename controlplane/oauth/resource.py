"""The public URLs of the MCP resource and its authorization server, one rule for both: PUBLIC_URL
when it pins them, else the origin the client used (Host, and the scheme a trusted proxy
reports), so a client that reached http://127.0.0.1:PORT/mcp sees exactly that resource."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest

MCP_PATH = "/mcp"
RESOURCE_METADATA_PATH = "/.well-known/oauth-protected-resource" + MCP_PATH


def origin_of_request(request: HttpRequest) -> str:
    """Django applies SECURE_PROXY_SSL_HEADER (TRUST_X_FORWARDED_PROTO) to request.scheme."""
    return settings.PUBLIC_URL or f"{request.scheme}://{request.get_host()}"


def origin_of(*, scheme: str, host: str, forwarded_proto: str | None) -> str:
    """The same rule for a raw ASGI request (the /mcp endpoint is not a Django view)."""
    if settings.PUBLIC_URL:
        return str(settings.PUBLIC_URL)
    proxy_header = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy_header and forwarded_proto is not None:
        scheme = "https" if forwarded_proto.strip().lower() == proxy_header[1] else "http"
    return f"{scheme}://{host}"


def mcp_resource(origin: str) -> str:
    """The canonical resource identifier (RFC 8707) every token must name."""
    return origin + MCP_PATH


def resource_metadata_url(origin: str) -> str:
    return origin + RESOURCE_METADATA_PATH
