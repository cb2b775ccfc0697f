"""Qontak's OAuth token endpoint: the refresh-token grant, and nothing else.

Qontak rotates the refresh token on every grant and rejects the old one, so the caller must
store the returned refresh token before using the access token (controlplane.tokens does).
Failures are this package's own exceptions; the control plane turns them into domain errors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
from django.conf import settings

from qontak.endpoints import ENDPOINTS_BY_NAME


class GrantError(Exception):
    """The token endpoint did not hand out a grant; `status` is its HTTP status, if any."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class GrantRejected(GrantError):
    """Qontak said invalid_grant: the refresh token was used, revoked or expired."""


# A small read every account can make, used to prove an access token works on the API itself.
PROBE_PATH = ENDPOINTS_BY_NAME["get_contact_template"].path


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

    Raises GrantRejected when Qontak says invalid_grant, and GrantError for anything else that
    is not a grant.
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
        raise GrantError(f"cannot reach Qontak at {base_url}: {type(exc).__name__}") from exc
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code in (400, 401) and body.get("error") == "invalid_grant":
        raise GrantRejected(
            "Qontak rejected the refresh token (invalid_grant)", status=response.status_code
        )
    if response.status_code != 200 or "access_token" not in body:
        error = body.get("error") or f"HTTP {response.status_code}"
        raise GrantError(
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
            base_url.rstrip("/") + PROBE_PATH,
            headers={"Authorization": f"Bearer {access_token}"},
            timeout=settings.QONTAK_TIMEOUT,
        )
    except httpx.HTTPError as exc:
        raise GrantError(f"cannot reach Qontak at {base_url}: {type(exc).__name__}") from exc
    return response.status_code
