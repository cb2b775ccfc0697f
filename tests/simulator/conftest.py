"""Fixtures and request builders shared by the Qontak simulator's tests.

The simulator is a development tool, not part of the control plane, so its fixtures live here
rather than in tests/conftest.py. `state` is a fresh `SimulatorState` per test with two
accounts, `acme` and `globex`, whose access tokens expire on a `FakeClock`.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from starlette.testclient import TestClient

from devtools.simulator import SimulatorState, create_app
from devtools.simulator.catalog import Kind, Route, load_catalog

CATALOG = load_catalog()
API_ROUTES = CATALOG.api_routes
INVALID_GRANT = "invalid_grant"


class FakeClock:
    """A clock (Unix seconds) the test moves by hand, so expiry needs no sleeping and the
    gateway's Date check compares with a known time."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def state(clock: FakeClock) -> SimulatorState:
    simulator = SimulatorState(access_token_ttl=60, clock=clock)
    simulator.add_account("acme", "rt-acme")
    simulator.add_account("globex", "rt-globex")
    return simulator


@pytest.fixture
def client(state: SimulatorState) -> TestClient:
    return TestClient(create_app(state))


@pytest.fixture
def threaded_server(state: SimulatorState) -> Iterator[str]:
    """The app served by uvicorn in a thread, as integration tests of the control plane do."""
    server = uvicorn.Server(
        uvicorn.Config(create_app(state), host="127.0.0.1", port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def login(state: SimulatorState, account: str = "acme") -> dict[str, str]:
    return bearer(state.issue_access_token(account))


def refresh(client: TestClient, refresh_token: str) -> Any:
    """POST the refresh grant; returns the TestClient's response (an httpx2 Response)."""
    return client.post(
        "/oauth/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token}
    )


def seeded_id(resource: str) -> str:
    return str(CATALOG.models[resource].seeds[0]["id"])


def example_request(route: Route) -> tuple[str, dict[str, str], Any]:
    """The collection's own request for a route, aimed at a seeded record."""
    path = route.template
    if route.id_param:
        resource = "pipelines" if route.id_param == "pipeline_id" else route.resource or ""
        path = path.replace(f":{route.id_param}", seeded_id(resource))
    return path, route.documented_query, copy.deepcopy(route.example_body)


def routes_of(kind: Kind) -> list[Route]:
    return [r for r in API_ROUTES if r.kind is kind]


def crud_resources() -> list[str]:
    kinds = {Kind.CREATE, Kind.READ, Kind.UPDATE, Kind.LIST, Kind.DELETE}
    return sorted(
        name
        for name in CATALOG.models
        if kinds <= {r.kind for r in API_ROUTES if r.resource == name}
    )


def route_for(resource: str, kind: Kind) -> Route:
    return next(r for r in API_ROUTES if r.resource == resource and r.kind is kind)


def path_of(resource: str, record_id: object = None) -> str:
    base = f"/api/v3.1/{resource}"
    return base if record_id is None else f"{base}/{record_id}"


def one_record(answer: dict[str, Any]) -> Any:
    """The record of a single-record read, in either shape the collection documents: an
    object, or an array holding it (Get Single Contact)."""
    response = answer["response"]
    if isinstance(response, list):
        assert len(response) == 1, response
        return response[0]
    return response
