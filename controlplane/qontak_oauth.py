"""Qontak's OAuth token endpoint: the refresh-token grant, and nothing else.

Qontak rotates the refresh token on every grant and rejects the old one, so the caller must
store the returned refresh token before using the access token (see controlplane.tokens).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
from django.conf import settings

from controlplane.errors import ReauthorizationRequired, UpstreamError


@dataclass(frozen=True)
class TokenGrant:
    access_token: str
    refresh_token: str
    issued_at: float
    expires_at: float

    def __repr__(self) -> str:
        return f"TokenGrant(issued_at={self.issued_at}, expires_at={self.expires_at})"


def request_refresh_grant(*, base_url: str, refresh_token: str) -> TokenGrant:
    """Exchange a refresh token for a new access + refresh token pair.

    Raises ReauthorizationRequired when Qontak says invalid_grant (the token was used, revoked
    or expired), and UpstreamError for anything else that is not a grant.
    """
    url = base_url.rstrip("/") + "/oauth/token"
    started = time.time()
    try:
        response = httpx.post(
            url,
            data={"grant_type": "refresh_token", "refresh_token": refresh_token},
            timeout=settings.QONTAK_TIMEOUT,
        )
    except httpx.HTTPError as exc:
        raise UpstreamError(f"cannot reach Qontak at {base_url}: {type(exc).__name__}") from exc
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code in (400, 401) and body.get("error") == "invalid_grant":
        raise ReauthorizationRequired(
            "Qontak rejected the stored refresh token (invalid_grant): re-authorize in Qontak "
            "and store the new token with `manage.py set_refresh_token`"
        )
    if response.status_code != 200 or "access_token" not in body:
        error = body.get("error") or f"HTTP {response.status_code}"
        raise UpstreamError(
            f"Qontak token endpoint refused the refresh: {error}", status=response.status_code
        )
    expires_in = float(body.get("expires_in") or 0)
    return TokenGrant(
        access_token=str(body["access_token"]),
        refresh_token=str(body.get("refresh_token") or refresh_token),
        issued_at=started,
        expires_at=started + expires_in,
    )


def verify_access_token(*, base_url: str, access_token: str) -> int:
    """Ask Qontak for a small read-only resource with the token; returns the HTTP status.

    Used by the admin's "Test connection": proves the token works against the API itself,
    not only against the token endpoint.
    """
    try:
        response = httpx.get(
            base_url.rstrip("/") + "/api/v3.1/contacts/info",
            headers={"Authorization": f"Bearer {access_token}"},
            timeout=settings.QONTAK_TIMEOUT,
        )
    except httpx.HTTPError as exc:
        raise UpstreamError(f"cannot reach Qontak at {base_url}: {type(exc).__name__}") from exc
    return response.status_code
