"""An OAuth access token for the bench, obtained the way an assistant gets one: registration
(DCR), a person signing in and consenting, and the PKCE code exchange, over HTTP."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

REDIRECT_URI = "http://127.0.0.1:9/callback"  # never followed: the code is read off the redirect


class _Browser(httpx.Client):
    """Sends the Secure session and CSRF cookies back over http://127.0.0.1, as browsers do."""

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        if self.cookies.jar:
            request.headers["Cookie"] = "; ".join(f"{c.name}={c.value}" for c in self.cookies.jar)
        return super().send(request, **kwargs)


def _hidden(html: str) -> dict[str, str]:
    fields = {}
    for tag in re.findall(r'<input type="hidden"[^>]*>', html):
        name, value = re.search(r'name="([^"]*)"', tag), re.search(r'value="([^"]*)"', tag)
        if name:
            fields[name.group(1)] = unescape(value.group(1)) if value else ""
    return fields


def mint_access_token(base_url: str, username: str, password: str) -> str:
    """An access token for `username`'s membership, scoped crm.read crm.write, for /mcp."""
    registered = httpx.post(
        f"{base_url}/oauth/register/",
        json={
            "client_name": "bench",
            "redirect_uris": [REDIRECT_URI],
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": "none",
        },
        timeout=30,
    )
    registered.raise_for_status()
    client_id = registered.json()["client_id"]
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT_URI,
        "scope": "crm.read crm.write",
        "state": secrets.token_urlsafe(8),
        "code_challenge": challenge.decode().rstrip("="),
        "code_challenge_method": "S256",
        "resource": f"{base_url}/mcp",
    }
    with _Browser(base_url=base_url, timeout=30) as browser:
        login = browser.get("/accounts/login/")
        signed_in = browser.post(
            "/accounts/login/",
            data={**_hidden(login.text), "username": username, "password": password},
        )
        if signed_in.status_code != 302:
            raise RuntimeError(f"bench person could not sign in: HTTP {signed_in.status_code}")
        consent = browser.get("/oauth/authorize/", params=params)
        consent.raise_for_status()
        answer = browser.post(
            str(consent.url), data={**_hidden(consent.text), "write": "on", "allow": "Authorize"}
        )
        code = parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]
        token = browser.post(
            "/oauth/token/",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT_URI,
                "client_id": client_id,
                "code_verifier": verifier,
                "resource": f"{base_url}/mcp",
            },
        )
        token.raise_for_status()
    return str(token.json()["access_token"])
