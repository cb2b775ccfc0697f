"""Mekari API Gateway authentication: every request signed with the company's HMAC credentials.

The gateway (`https://api.mekari.com/qontak/crm/...`) checks an `Authorization: hmac ...`
header whose signature covers the `Date` header and the request line (method, full path with
its query string, HTTP/1.1), a `Date` within 300 s of its clock, and a `Digest` of the body on
requests that have one. `X-Crm-User-Sso-Id` names the CRM user the call acts as, so records
get the right owner and Qontak applies that user's permissions. The clock is a parameter so
tests can pin it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate

import httpx

from qontak.endpoints import ENDPOINTS_BY_NAME, gateway_path

SSO_USER_HEADER = "X-Crm-User-Sso-Id"
# The clock signatures are dated with, unless a caller gives one (tests pin it).
CLOCK: Callable[[], float] = time.time


@dataclass(frozen=True)
class HmacCredential:
    client_id: str
    client_secret: str

    def __repr__(self) -> str:  # the secret never reaches a log through repr()
        return f"HmacCredential(client_id={self.client_id!r})"


def http_date(moment: float) -> str:
    """RFC 7231's IMF-fixdate, e.g. 'Tue, 01 Dec 2026 02:18:19 GMT'."""
    return formatdate(moment, usegmt=True)


def body_digest(body: bytes) -> str:
    return "SHA-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode()


def signature(secret: str, *, date: str, method: str, path_with_query: str) -> str:
    signed = f"date: {date}\n{method.upper()} {path_with_query} HTTP/1.1"
    digest = hmac.new(secret.encode(), signed.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def signed_headers(
    credential: HmacCredential,
    *,
    method: str,
    path_with_query: str,
    body: bytes | None,
    sso_user: str = "",
    clock: Callable[[], float] | None = None,
) -> dict[str, str]:
    """The headers that authenticate one request; `path_with_query` is the full gateway path
    (`/qontak/crm/...`) with the query string exactly as it will be sent."""
    date = http_date((clock or CLOCK)())
    sig = signature(
        credential.client_secret, date=date, method=method, path_with_query=path_with_query
    )
    headers = {
        "Date": date,
        "Authorization": (
            f'hmac username="{credential.client_id}", algorithm="hmac-sha256", '
            f'headers="date request-line", signature="{sig}"'
        ),
    }
    if body is not None:
        headers["Digest"] = body_digest(body)
    if sso_user:
        headers[SSO_USER_HEADER] = sso_user
    return headers


class GatewayUnreachable(Exception):
    """The gateway could not be reached at all."""


def probe(
    *, base_url: str, credential: HmacCredential, sso_user: str = "", timeout: float = 30.0
) -> tuple[int, str]:
    """One signed read of a small resource every account has (the contact template): the
    gateway's status and, when it refused, what it said. Raises GatewayUnreachable."""
    url = httpx.URL(
        base_url.rstrip("/") + gateway_path(ENDPOINTS_BY_NAME["get_contact_template"].path)
    )
    headers = signed_headers(
        credential,
        method="GET",
        path_with_query=url.raw_path.decode(),
        body=None,
        sso_user=sso_user,
    )
    try:
        response = httpx.get(url, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise GatewayUnreachable(f"cannot reach {url.host}: {type(exc).__name__}") from exc
    said = ""
    if response.status_code != 200:
        try:
            body = response.json()
        except ValueError:
            body = {}
        if isinstance(body, dict):
            said = str(body.get("message") or body.get("error") or "")
    return response.status_code, said
