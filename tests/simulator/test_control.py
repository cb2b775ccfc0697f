"""The simulator's control endpoints (faults, accounts, request log) and how it is served.

Faults let the control plane's tests provoke Qontak's failures on demand; the request log lets
them assert what reached Qontak. The last tests serve the app over ASGI, from a uvicorn thread
and as `python -m devtools.simulator`, as the control plane's tests and `make run` do.
"""

from __future__ import annotations

import select
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from devtools.simulator import SimulatorState, create_app
from tests.simulator.conftest import INVALID_GRANT, bearer, login, refresh

REPO_ROOT = Path(__file__).resolve().parents[2]


# Faults


def test_latency_delays_each_api_response(client: TestClient, state: SimulatorState) -> None:
    headers = login(state)
    assert client.post("/_simulator/faults", json={"latency_ms": 150}).status_code == 200
    started = time.monotonic()
    client.get("/api/v3.1/pipelines", headers=headers)
    assert time.monotonic() - started >= 0.15


def test_fail_next_returns_429_with_retry_after_count_times_then_recovers(
    client: TestClient, state: SimulatorState
) -> None:
    headers = login(state)
    client.post("/_simulator/faults", json={"fail_next": {"status": 429, "count": 2}})
    statuses = []
    for _ in range(3):
        response = client.get("/api/v3.1/deals", headers=headers)
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert response.headers["retry-after"] == "1"
            assert response.json()["meta"]["status"] == 429
    assert statuses == [429, 429, 200]
    assert [r.status for r in state.requests] == [429, 429, 200]


def test_fail_next_only_hits_paths_under_its_prefix(
    client: TestClient, state: SimulatorState
) -> None:
    headers = login(state)
    state.fail_next(503, count=1, path_prefix="/api/v3.1/tickets")
    assert client.get("/api/v3.1/deals", headers=headers).status_code == 200
    failed = client.get("/api/v3.1/tickets", headers=headers)
    assert (failed.status_code, failed.json()["meta"]["type"]) == (503, "Service Unavailable")
    assert client.get("/api/v3.1/tickets", headers=headers).status_code == 200


def test_an_injected_401_looks_like_an_expired_token(
    client: TestClient, state: SimulatorState
) -> None:
    client.post("/_simulator/faults", json={"fail_next": {"status": 401, "count": 1}})
    response = client.get("/api/v3.1/deals", headers=login(state))
    assert response.json()["meta"]["error_code"] == "invalid_token"


def test_expire_access_tokens_kills_every_issued_token(
    client: TestClient, state: SimulatorState
) -> None:
    acme, globex = login(state, "acme"), login(state, "globex")
    client.post("/_simulator/faults", json={"expire_access_tokens": True})
    assert client.get("/api/v3.1/deals", headers=acme).status_code == 401
    assert client.get("/api/v3.1/deals", headers=globex).status_code == 401
    assert client.get("/api/v3.1/deals", headers=login(state)).status_code == 200


def test_a_revoked_refresh_token_gets_invalid_grant_without_counting_as_stale(
    client: TestClient, state: SimulatorState
) -> None:
    client.post("/_simulator/faults", json={"revoke_refresh_token": "acme"})
    response = refresh(client, "rt-acme")
    assert response.json()["error"] == INVALID_GRANT
    account = client.get("/_simulator/accounts/acme").json()
    assert (account["refresh_token"], account["stale_refresh_attempts"]) == (None, 0)
    again = {"name": "acme", "refresh_token": "rt-2"}
    reauthorized = client.post("/_simulator/accounts", json=again)
    assert reauthorized.status_code == 201
    assert refresh(client, "rt-2").status_code == 200


def test_the_access_token_ttl_can_be_changed_for_later_grants(
    client: TestClient, state: SimulatorState
) -> None:
    faults = client.post("/_simulator/faults", json={"access_token_ttl": 1.5}).json()
    assert faults["access_token_ttl"] == 1.5
    assert refresh(client, "rt-acme").json()["expires_in"] == 1


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        ({"latency_ms": -1}, 400),
        ({"fail_next": {"status": 42}}, 400),
        ({"access_token_ttl": "soon"}, 400),
        ({"revoke_refresh_token": "nobody"}, 404),
    ],
)
def test_invalid_fault_requests_are_refused_and_change_nothing(
    client: TestClient, state: SimulatorState, payload: dict[str, object], status: int
) -> None:
    before = client.get("/_simulator/faults").json()
    assert client.post("/_simulator/faults", json=payload).status_code == status
    assert client.get("/_simulator/faults").json() == before


def test_faults_can_be_cleared(client: TestClient, state: SimulatorState) -> None:
    faults = {"latency_ms": 5, "fail_next": {"status": 500, "count": 3}}
    client.post("/_simulator/faults", json=faults)
    assert client.delete("/_simulator/faults").status_code == 204
    assert client.get("/_simulator/faults").json()["fail_next"] == []


# Control endpoints


def test_control_endpoints_manage_accounts_and_the_request_log(
    client: TestClient, state: SimulatorState
) -> None:
    assert client.get("/_simulator/healthz").json() == {"status": "ok"}
    created = client.post("/_simulator/accounts", json={"name": "initech"})
    assert created.status_code == 201
    token = created.json()["refresh_token"]
    assert token and state.accounts["initech"].refresh_token == token
    hmac_credentials = (created.json()["hmac_client_id"], created.json()["hmac_client_secret"])
    initech = state.accounts["initech"]
    assert all(hmac_credentials)
    assert hmac_credentials == (initech.hmac_client_id, initech.hmac_client_secret)
    assert client.get("/_simulator/accounts/nobody").status_code == 404
    assert client.post("/_simulator/accounts", json={"refresh_token": "x"}).status_code == 400

    refresh(client, token)
    client.get("/api/v3.1/deals", headers=login(state, "acme"))
    everything = client.get("/_simulator/requests").json()
    assert [r["route"] for r in everything] == ["POST /oauth/token", "GET /api/v3.1/deals"]
    only_initech = client.get("/_simulator/requests", params={"account": "initech"}).json()
    assert only_initech == [
        {
            "account": "initech",
            "method": "POST",
            "path": "/oauth/token",
            "route": "POST /oauth/token",
            "query": {},
            "body": {"grant_type": "refresh_token", "refresh_token": token},
            "status": 200,
            "sso_user": None,
        }
    ]
    assert client.delete("/_simulator/requests").status_code == 204
    assert client.get("/_simulator/requests").json() == []


def test_add_account_generates_a_refresh_token_when_none_is_given() -> None:
    simulator = SimulatorState()
    first, second = simulator.add_account("a"), simulator.add_account("b")
    assert first.refresh_token and second.refresh_token
    assert first.refresh_token != second.refresh_token


# Running it for real


async def test_the_app_also_serves_httpx_async_clients_over_asgi(state: SimulatorState) -> None:
    transport = httpx.ASGITransport(app=create_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://qontak.test") as client:
        grant = await client.post(
            "/oauth/token", data={"grant_type": "refresh_token", "refresh_token": "rt-acme"}
        )
        token = grant.json()["access_token"]
        response = await client.get("/api/v3.1/pipelines/1/stages", headers=bearer(token))
    assert response.status_code == 200
    assert state.requests[-1].route == "GET /api/v3.1/pipelines/:pipeline_id/stages"


def test_state_can_be_read_from_another_thread_while_uvicorn_serves(
    threaded_server: str, state: SimulatorState
) -> None:
    grant = httpx.post(
        f"{threaded_server}/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": "rt-acme"},
    ).json()
    response = httpx.get(
        f"{threaded_server}/api/v3.1/contacts/1", headers=bearer(grant["access_token"])
    )
    assert response.status_code == 200
    assert [r.route for r in state.requests] == ["POST /oauth/token", "GET /api/v3.1/contacts/:id"]
    assert state.accounts["acme"].refresh_count == 1


def test_the_module_runs_under_uvicorn_and_announces_where_it_listens() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "devtools.simulator", "--port", "0", "--account", "acme=rt-cli"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 20)
        assert ready, "the simulator did not announce itself"
        line = process.stdout.readline().strip()
        assert line.startswith("qontak simulator listening on http://127.0.0.1:")
        base_url = line.rsplit(" ", 1)[-1]
        grant = httpx.post(
            f"{base_url}/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": "rt-cli"},
        )
        assert grant.status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=10)
