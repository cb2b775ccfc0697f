"""Dynamic Client Registration is open to any client, but only OAUTH_REGISTRATION_RATE per
client address, and only for redirect URIs an assistant may use."""

from __future__ import annotations

import uuid

from django.test import Client

REGISTRATION = {
    "client_name": "Flooding Assistant",
    "redirect_uris": ["http://127.0.0.1:7777/callback"],
    "grant_types": ["authorization_code", "refresh_token"],
    "token_endpoint_auth_method": "none",
}


def _address() -> str:
    """An address of this test's own: the counters live in the shared cache."""
    parts = uuid.uuid4().bytes
    return f"10.{parts[0]}.{parts[1]}.{parts[2]}"


def test_registrations_past_the_rate_from_one_address_get_429(db, settings) -> None:
    settings.OAUTH_REGISTRATION_RATE = "2/h"
    client = Client(REMOTE_ADDR=_address())
    answers = [
        client.post("/oauth/register/", REGISTRATION, content_type="application/json")
        for _ in range(3)
    ]
    assert [answer.status_code for answer in answers] == [201, 201, 429]
    assert answers[2]["Retry-After"] == "3600"
    assert "too many client registrations" in answers[2].json()["error_description"]
    other = Client(REMOTE_ADDR=_address())
    answer = other.post("/oauth/register/", REGISTRATION, content_type="application/json")
    assert answer.status_code == 201  # another address is counted apart
