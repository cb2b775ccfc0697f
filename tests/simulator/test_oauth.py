"""The simulator's OAuth token endpoint and per-account data behave like Qontak's.

Refresh tokens rotate on every grant and a used one is refused with invalid_grant; access
tokens expire after the configured TTL; each account sees only its own records.
"""

from __future__ import annotations

import time

import pytest
from starlette.testclient import TestClient

from devtools.simulator import SimulatorState, create_app
from tests.simulator.conftest import INVALID_GRANT, FakeClock, bearer, login, refresh

# OAuth


def test_a_refresh_returns_the_collections_token_shape_with_a_new_refresh_token(
    client: TestClient, state: SimulatorState
) -> None:
    before = int(time.time())
    response = refresh(client, "rt-acme")
    assert response.status_code == 200
    grant = response.json()
    assert set(grant) == {"access_token", "token_type", "expires_in", "refresh_token", "created_at"}
    assert grant["token_type"] == "bearer"
    assert grant["expires_in"] == 60
    assert grant["refresh_token"] not in ("rt-acme", "")
    assert grant["created_at"] >= before
    assert state.accounts["acme"].refresh_token == grant["refresh_token"]
    usable = client.get("/api/v3.1/contacts", headers=bearer(grant["access_token"]))
    assert usable.status_code == 200


def test_a_used_refresh_token_is_rejected_with_invalid_grant_and_counted_as_stale(
    client: TestClient, state: SimulatorState
) -> None:
    new_token = refresh(client, "rt-acme").json()["refresh_token"]
    stale = refresh(client, "rt-acme")
    assert stale.status_code == 400
    assert stale.json()["error"] == INVALID_GRANT
    assert stale.json()["error_description"].startswith("The provided authorization grant")
    account = client.get("/_simulator/accounts/acme").json()
    assert account == {
        "name": "acme",
        "refresh_token": new_token,
        "hmac_client_id": state.accounts["acme"].hmac_client_id,
        "hmac_client_secret": state.accounts["acme"].hmac_client_secret,
        "refresh_count": 1,
        "stale_refresh_attempts": 1,
        "access_tokens_issued": 1,
    }
    assert refresh(client, new_token).status_code == 200


def test_an_unknown_refresh_token_is_invalid_grant_and_counts_against_no_account(
    client: TestClient, state: SimulatorState
) -> None:
    response = refresh(client, "never-issued")
    assert (response.status_code, response.json()["error"]) == (400, INVALID_GRANT)
    assert all(a.stale_refresh_attempts == 0 for a in state.accounts.values())
    assert state.requests[-1].account is None


def test_the_token_endpoint_also_accepts_json(client: TestClient) -> None:
    response = client.post(
        "/oauth/token", json={"grant_type": "refresh_token", "refresh_token": "rt-acme"}
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"refresh_token": "rt-acme"}, "invalid_request"),
        ({"grant_type": "refresh_token"}, "invalid_request"),
        ({"grant_type": "authorization_code", "code": "abc"}, "unsupported_grant_type"),
        ({"grant_type": "password", "username": "ops@acme", "password": "wrong"}, INVALID_GRANT),
    ],
)
def test_malformed_or_unsupported_token_requests_get_oauth_errors(
    client: TestClient, state: SimulatorState, form: dict[str, str], error: str
) -> None:
    state.add_account("acme", username="ops@acme", password="secret")
    response = client.post("/oauth/token", data=form)
    assert response.status_code == 400
    assert response.json()["error"] == error


def test_the_password_grant_works_for_an_account_with_credentials(
    client: TestClient, state: SimulatorState
) -> None:
    state.add_account("initech", username="ops@initech", password="secret")
    response = client.post(
        "/oauth/token",
        data={"grant_type": "password", "username": "ops@initech", "password": "secret"},
    )
    assert response.status_code == 200
    assert state.requests[-1].account == "initech"


def test_access_tokens_expire_after_the_ttl_while_earlier_ones_keep_their_own_expiry(
    client: TestClient, state: SimulatorState, clock: FakeClock
) -> None:
    first = refresh(client, "rt-acme").json()
    clock.advance(40)
    second = refresh(client, first["refresh_token"]).json()
    assert client.get("/api/v3.1/deals", headers=bearer(first["access_token"])).status_code == 200
    clock.advance(20)
    expired = client.get("/api/v3.1/deals", headers=bearer(first["access_token"]))
    assert expired.status_code == 401
    assert client.get("/api/v3.1/deals", headers=bearer(second["access_token"])).status_code == 200
    assert state.requests[-2].account == "acme"


def test_a_fractional_ttl_expires_in_real_time() -> None:
    simulator = SimulatorState(access_token_ttl=0.2)
    simulator.add_account("acme", "rt")
    client = TestClient(create_app(simulator))
    grant = refresh(client, "rt").json()
    assert grant["expires_in"] == 0
    assert client.get("/api/v3.1/notes", headers=bearer(grant["access_token"])).status_code == 200
    time.sleep(0.25)
    assert client.get("/api/v3.1/notes", headers=bearer(grant["access_token"])).status_code == 401


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}],
    ids=["missing", "unknown", "not-bearer"],
)
def test_the_api_answers_bad_tokens_with_a_qontak_style_401(
    client: TestClient, headers: dict[str, str]
) -> None:
    response = client.get("/api/v3.1/contacts", headers=headers)
    assert response.status_code == 401
    meta = response.json()["meta"]
    assert meta["status"] == 401
    assert meta["type"] == "Unauthorized"
    assert meta["error_code"] == "invalid_token"
    assert meta["developer_message"] == "The access token is invalid or has expired"
    assert {"info", "message", "timestamp", "log_id"} <= set(meta)


# Tenancy


def test_each_account_has_its_own_data(client: TestClient, state: SimulatorState) -> None:
    acme, globex = login(state, "acme"), login(state, "globex")
    created = client.post("/api/v3.1/contacts", json={"first_name": "Only Acme"}, headers=acme)
    contact_id = created.json()["response"]["id"]
    client.delete("/api/v3.1/contacts/1", headers=acme)
    assert client.get(f"/api/v3.1/contacts/{contact_id}", headers=globex).status_code == 404
    assert client.get("/api/v3.1/contacts/1", headers=globex).status_code == 200
    listed = client.get("/api/v3.1/contacts", headers=globex).json()["response"]
    assert "Only Acme" not in [c["first_name"] for c in listed]
    assert [r.account for r in state.requests] == ["acme", "acme", "globex", "globex", "globex"]
