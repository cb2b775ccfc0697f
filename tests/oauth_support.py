"""Connecting the official MCP client with OAuth, as claude.ai or ChatGPT would: the SDK's
OAuthClientProvider does discovery, registration, PKCE and token exchange; a `Person` (plain
HTTP, or Chromium in the browser tests) signs in and answers the consent page.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import httpx2
from mcp import Client
from mcp.client.auth import OAuthClientProvider, TokenStorage
from mcp.shared.auth import AuthorizationCodeResult
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import (
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)

from tests.calls import ERAS

REDIRECT_URI = "http://127.0.0.1:8765/callback"


class MemoryStorage(TokenStorage):
    """What a client keeps between connections: its registration and tokens."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


def _hidden_fields(html: str) -> dict[str, str]:
    fields = {}
    for tag in re.findall(r"<input[^>]*>", html):
        name = re.search(r'name="([^"]*)"', tag)
        value = re.search(r'value="([^"]*)"', tag)
        kind = re.search(r'type="([^"]*)"', tag)
        if name and kind and kind.group(1) == "hidden":
            fields[name.group(1)] = unescape(value.group(1)) if value else ""
    return fields


class _Browser(httpx.Client):
    """Like Chromium, treats http://127.0.0.1 as a secure context: the session and CSRF cookies
    are Secure, and httpx alone would not send them back over http."""

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        if self.cookies.jar:
            request.headers["Cookie"] = "; ".join(f"{c.name}={c.value}" for c in self.cookies.jar)
        return super().send(request, **kwargs)


@dataclass
class Person:
    """Someone who signs in and answers the consent page over plain HTTP (no script runs on
    those pages, so a browser adds nothing but the tests in test_oauth_browser)."""

    username: str
    password: str
    allow: bool = True
    tenant_name: str | None = None  # which account to pick when they have several
    write: bool = True
    delete: bool = True
    consent_pages: list[str] = field(default_factory=list)
    redirects: list[str] = field(default_factory=list)

    def authorize(self, authorization_url: str) -> str:
        """Sign in and answer; returns where the server sent the person back to."""
        with _Browser(follow_redirects=False, timeout=30) as browser:
            page = browser.get(authorization_url)
            if page.status_code == 302 and "/accounts/login/" in page.headers["location"]:
                login_url = httpx.URL(authorization_url).join(page.headers["location"])
                form = browser.get(login_url)
                fields = _hidden_fields(form.text)
                answer = browser.post(
                    login_url,
                    data={**fields, "username": self.username, "password": self.password},
                    headers={"Referer": str(login_url)},
                )
                assert answer.status_code == 302, answer.text[:500]
                page = browser.get(authorization_url)
            if page.status_code != 200:
                return page.headers.get("location", f"status:{page.status_code}")
            self.consent_pages.append(page.text)
            fields = _hidden_fields(page.text)
            if self.tenant_name is not None:
                options = dict(
                    (unescape(name), value)
                    for value, name in re.findall(r'<option value="(\d+)"[^>]*>([^<]*)<', page.text)
                )
                fields["membership"] = options[self.tenant_name]
            if self.write:
                fields["write"] = "on"
            if self.delete:
                fields["delete"] = "on"
            if self.allow:
                fields["allow"] = "Authorize"
            answer = browser.post(
                authorization_url, data=fields, headers={"Referer": authorization_url}
            )
            assert answer.status_code == 302, answer.text[:800]
            location = answer.headers["location"]
            self.redirects.append(location)
            return location


def code_result(location: str) -> AuthorizationCodeResult:
    query = parse_qs(urlsplit(location).query)
    return AuthorizationCodeResult(
        code=query.get("code", [""])[0],
        state=query.get("state", [None])[0],
        iss=query.get("iss", [None])[0],
    )


def oauth_provider(
    mcp_url: str,
    authorize: Callable[[str], Awaitable[str]],
    *,
    storage: MemoryStorage | None = None,
    scope: str = "crm.read crm.write",
    client_metadata_url: str | None = None,
    redirect_uri: str = REDIRECT_URI,
) -> OAuthClientProvider:
    """The SDK's provider; `authorize` plays the person's browser and returns the redirect."""
    locations: asyncio.Queue[str] = asyncio.Queue()

    async def redirect_handler(url: str) -> None:
        await locations.put(await authorize(url))

    async def callback_handler() -> AuthorizationCodeResult:
        return code_result(await locations.get())

    return OAuthClientProvider(
        server_url=mcp_url,
        client_metadata=OAuthClientMetadata(
            client_name="Test Assistant",
            redirect_uris=[redirect_uri],  # type: ignore[list-item]
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            scope=scope,
            token_endpoint_auth_method="none",
        ),
        storage=storage or MemoryStorage(),
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
        client_metadata_url=client_metadata_url,
    )


def person_browser(person: Person) -> Callable[[str], Awaitable[str]]:
    async def authorize(url: str) -> str:
        return await asyncio.to_thread(person.authorize, url)

    return authorize


async def with_oauth_client(
    mcp_url: str,
    provider: OAuthClientProvider,
    action: Callable[[Client], Awaitable[Any]],
    era: str = "2025-11-25",
) -> Any:
    async with (
        httpx2.AsyncClient(auth=provider, timeout=httpx2.Timeout(30, read=60)) as http,
        Client(streamable_http_client(mcp_url, http_client=http), mode=ERAS[era]) as client,
    ):
        return await action(client)
