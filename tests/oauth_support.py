"""Connecting the official MCP client with OAuth, as claude.ai or ChatGPT would: the SDK's
OAuthClientProvider does discovery, registration, PKCE and token exchange; a `Person` (plain
HTTP, or Chromium in the browser tests) signs in and answers the consent page. For the paths
the SDK never takes, `RegisteredClient` makes the same requests by hand, and `list_tools` and
`call_tool` send one JSON-RPC request with a token, so a test sees the status and challenge.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import httpx2
from django.utils import timezone
from mcp import Client
from mcp.client.auth import OAuthClientProvider, TokenStorage
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)
from oauth2_provider.models import AccessToken, Application, RefreshToken

from controlplane import people
from controlplane.models import OAuthConnection
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
    membership: int | None = None  # sent whatever the page offers: a tampered form
    write: bool = True
    delete: bool = True
    consent_pages: list[str] = field(default_factory=list)
    redirects: list[str] = field(default_factory=list)

    def authorize(self, authorization_url: str) -> str:
        """Sign in and answer; returns where the server sent the person back to, or
        "status:N" when it answered with a page instead (an error, or the form again)."""
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
            if self.membership is not None:
                fields["membership"] = str(self.membership)
            if self.write:
                fields["write"] = "on"
            if self.delete:
                fields["delete"] = "on"
            if self.allow:
                fields["allow"] = "Authorize"
            answer = browser.post(
                authorization_url, data=fields, headers={"Referer": authorization_url}
            )
            if answer.status_code != 302:  # the form again, with what was wrong
                self.consent_pages.append(answer.text)
                return f"status:{answer.status_code}"
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


# The same flow without the SDK, for the paths the SDK never takes (a wrong verifier, a redirect
# URI nobody registered, a reused refresh token): plain requests to the endpoints.


def pkce_pair() -> tuple[str, str]:
    """A PKCE code verifier and its S256 challenge (RFC 7636)."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass
class RegisteredClient:
    """A public client of the control plane at `origin`: registered by DCR, or named by the URL
    of its metadata document (CIMD)."""

    origin: str
    client_id: str
    redirect_uri: str = REDIRECT_URI

    @property
    def resource(self) -> str:
        return self.origin + "/mcp"

    def authorization_url(
        self, *, challenge: str, scope: str, state: str = "s-1", **extra: str | None
    ) -> str:
        """The URL an assistant sends a person to; `extra` adds or replaces parameters, and
        drops those given as None."""
        params: dict[str, str | None] = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": scope,
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "resource": self.resource,
            **extra,
        }
        query = urlencode({name: value for name, value in params.items() if value is not None})
        return f"{self.origin}/oauth/authorize/?{query}"

    def token_request(self, **data: str) -> httpx.Response:
        return httpx.post(
            f"{self.origin}/oauth/token/",
            data={"client_id": self.client_id, "resource": self.resource, **data},
            timeout=30,
        )

    def exchange(self, code: str, verifier: str) -> httpx.Response:
        return self.token_request(
            grant_type="authorization_code",
            code=code,
            code_verifier=verifier,
            redirect_uri=self.redirect_uri,
        )

    def refresh(self, refresh_token: str) -> httpx.Response:
        return self.token_request(grant_type="refresh_token", refresh_token=refresh_token)

    def connect(self, person: Person, scope: str = "crm.read crm.write") -> Tokens:
        """A person consents and the code is exchanged; fails the test otherwise."""
        verifier, challenge = pkce_pair()
        location = person.authorize(self.authorization_url(challenge=challenge, scope=scope))
        assert location.startswith(self.redirect_uri), location
        answer = self.exchange(code_result(location).code, verifier)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        return Tokens(
            access=body["access_token"], refresh=body["refresh_token"], scope=body["scope"]
        )


@dataclass(frozen=True)
class Tokens:
    access: str
    refresh: str
    scope: str


def register_client(
    origin: str, *, redirect_uri: str = REDIRECT_URI, name: str = "Direct Client"
) -> httpx.Response:
    """RFC 7591 registration of a public client."""
    return httpx.post(
        f"{origin}/oauth/register/",
        json={
            "client_name": name,
            "redirect_uris": [redirect_uri],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        },
        timeout=30,
    )


def registered_client(origin: str, *, name: str = "Direct Client") -> RegisteredClient:
    answer = register_client(origin, name=name)
    assert answer.status_code == 201, answer.text
    return RegisteredClient(origin=origin, client_id=answer.json()["client_id"])


def mcp_post(mcp_url: str, token: str, body: dict[str, Any]) -> httpx.Response:
    """One JSON-RPC request to /mcp with a bearer token, on a connection of its own."""
    return httpx.post(
        mcp_url,
        content=json.dumps(body),
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": "2025-11-25",
        },
        timeout=30,
    )


def list_tools(mcp_url: str, token: str) -> httpx.Response:
    return mcp_post(mcp_url, token, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})


def tool_names(response: httpx.Response) -> set[str]:
    assert response.status_code == 200, response.text
    return {tool["name"] for tool in response.json()["result"]["tools"]}


def call_tool(mcp_url: str, token: str, tool: str, arguments: dict[str, Any]) -> httpx.Response:
    body = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": tool, "arguments": arguments},
    }
    return mcp_post(mcp_url, token, body)


def challenge_params(response: httpx.Response) -> dict[str, str]:
    """The auth-params of a Bearer WWW-Authenticate header (RFC 9110 quoted strings)."""
    header = response.headers["www-authenticate"]
    assert header.startswith("Bearer "), header
    return dict(re.findall(r'(\w+)="([^"]*)"', header))


def person_token(demo: Any, mcp_url: str, scope: str, qontak_user: str = "") -> str:
    """A member of `demo` and an access token of theirs, as a consent leaves them (without
    the browser round trip, for tests about what calls do rather than how they connect)."""
    membership, _ = people.member_add(
        tenant=demo.tenant,
        username=f"p-{uuid.uuid4().hex[:6]}",
        password="a-long-pass-phrase",
        qontak_user=qontak_user,
    )
    application = Application.objects.create(
        name="Approving Assistant",
        client_type=Application.CLIENT_PUBLIC,
        authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        redirect_uris="http://127.0.0.1/callback",
    )
    token = f"qmcpat_{uuid.uuid4().hex}"
    access = AccessToken.objects.create(
        user=membership.user,
        application=application,
        token=token,
        scope=scope,
        resource=[mcp_url],
        expires=timezone.now() + timedelta(hours=1),
    )
    family = uuid.uuid4()
    RefreshToken.objects.create(
        user=membership.user,
        application=application,
        token=f"qmcprt_{uuid.uuid4().hex}",
        access_token=access,
        token_family=family,
    )
    OAuthConnection.objects.create(
        membership=membership, application=application, token_family=family, scope=scope
    )
    return token
