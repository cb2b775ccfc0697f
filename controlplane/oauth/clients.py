"""Which assistant clients may register, and where they may send a person back to.

Client ID Metadata Documents (an https URL as client_id: claude.ai, ChatGPT) are fetched by
the toolkit's SSRF-hardened fetcher and accepted only from hosts an operator lists
(TrustedClientHost, seeded with claude.ai and chatgpt.com). Dynamic Client Registration is open
and rate-limited (controlplane.oauth.views). Either way, a redirect URI is https, or http to a
loopback address (desktop and CLI clients, RFC 8252).
"""

from __future__ import annotations

import ipaddress
import json
import socket
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.http.request import validate_host
from oauth2_provider.cimd import CIMDError, SafeMetadataFetcher, _effective_max_age
from oauth2_provider.settings import oauth2_settings

from controlplane.models import TrustedClientHost

LOOPBACK_NAMES = ("localhost",)


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def redirect_uri_problem(uri: str) -> str | None:
    """Why a redirect URI is refused, or None: https anywhere, http only to loopback."""
    parts = urlsplit(uri)
    if parts.scheme == "https" and parts.hostname:
        return None
    if parts.scheme == "http" and is_loopback_host(parts.hostname):
        return None
    return "a redirect URI must use https, or http to a loopback address (127.0.0.1, [::1])"


class TrustedHostsOnly:
    """CIMD registration permission: the client_id URL's host is on the operator's list."""

    def has_permission(self, request: Any, client_id: str) -> bool:
        host = urlsplit(client_id).hostname
        if not host:
            return False
        hosts = list(TrustedClientHost.objects.values_list("host", flat=True))
        return validate_host(host, hosts)


def _resolves_to_loopback(host: str, port: int) -> bool:
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except socket.gaierror:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


class ClientMetadataFetcher(SafeMetadataFetcher):
    """The toolkit's fetcher (public addresses only, bounded size and time); with
    OAUTH_CIMD_ALLOW_LOOPBACK, which development and tests set, a document served on this
    machine is fetched too, still over verified https."""

    def fetch(self, client_id: str) -> tuple[dict[str, Any], int]:
        parts = urlsplit(client_id)
        port = parts.port or 443
        if (
            settings.OAUTH_CIMD_ALLOW_LOOPBACK
            and parts.scheme == "https"
            and parts.hostname
            and _resolves_to_loopback(parts.hostname, port)
        ):
            return self._fetch_from_this_machine(client_id)
        result: tuple[dict[str, Any], int] = super().fetch(client_id)
        return result

    def _fetch_from_this_machine(self, client_id: str) -> tuple[dict[str, Any], int]:
        limit = oauth2_settings.CIMD_MAX_DOCUMENT_SIZE
        try:
            response = httpx.get(
                client_id,
                timeout=oauth2_settings.CIMD_FETCH_TIMEOUT_SECONDS,
                follow_redirects=False,
                headers={"Accept": "application/json"},
            )
        except httpx.HTTPError as exc:
            raise CIMDError(f"could not fetch client_id document: {exc}") from exc
        if response.status_code != 200:
            raise CIMDError(f"client_id document returned HTTP {response.status_code}")
        media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/json" and not (
            media_type.startswith("application/") and media_type.endswith("+json")
        ):
            raise CIMDError(f"client_id document is not JSON (Content-Type: {media_type!r})")
        if len(response.content) > limit:
            raise CIMDError("client_id document exceeds the maximum allowed size")
        try:
            document = json.loads(response.content)
        except ValueError as exc:
            raise CIMDError("client_id document is not valid JSON") from exc
        if not isinstance(document, dict):
            raise CIMDError("client_id document must be a JSON object")
        return document, _effective_max_age(response.headers.get("cache-control"))
