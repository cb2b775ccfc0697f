"""The Qontak simulator behaves like the Postman collection says Qontak does.

Runs without Django or a database: ``pytest -p no:django tests/test_simulator.py``.
"""

from __future__ import annotations

import copy
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.testclient import TestClient

from devtools.simulator import SimulatorState, create_app
from devtools.simulator.catalog import Kind, Route, load_catalog
from devtools.simulator.collection import clean_query_value, load_requests, parse_lenient_json

REPO_ROOT = Path(__file__).resolve().parent.parent
CATALOG = load_catalog()
API_ROUTES = CATALOG.api_routes
INVALID_GRANT = "invalid_grant"


# Helpers (kept in this file: tests/conftest.py belongs to the control plane).


class FakeClock:
    """A monotonic clock the test moves by hand, so expiry needs no sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

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


# The collection and the route table


def test_the_route_table_has_exactly_the_collections_67_api_routes() -> None:
    documented = {r.route_key for r in load_requests() if r.template.startswith("/api/")}
    assert len(API_ROUTES) == 67
    assert {r.key for r in API_ROUTES} == documented
    assert {r.key for r in CATALOG.routes} - documented == {"POST /oauth/token"}


def test_route_templates_keep_the_collections_parameter_names() -> None:
    keys = {r.key for r in API_ROUTES}
    assert "GET /api/v3.1/contacts/:id" in keys
    assert "GET /api/v3.1/pipelines/:pipeline_id/stages" in keys


def test_lenient_json_reads_comments_and_trailing_commas_like_the_collection_has() -> None:
    text = '{"a": "http://x#y", // note\n "b": [1, 2,], # more\n "c": 3,}'
    assert parse_lenient_json(text) == {"a": "http://x#y", "b": [1, 2], "c": 3}
    assert parse_lenient_json("  ") is None


def test_documented_query_values_lose_their_type_annotation() -> None:
    assert clean_query_value("smith (string)") == "smith"
    assert clean_query_value("25 (numeric)") == "25"
    assert clean_query_value("15-07-2024") == "15-07-2024"


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


# Resources


@pytest.mark.parametrize("resource", crud_resources())
def test_a_record_survives_a_create_get_update_list_delete_round_trip(
    client: TestClient, state: SimulatorState, resource: str
) -> None:
    headers = login(state)
    body = route_for(resource, Kind.CREATE).example_body
    created = client.post(path_of(resource), json=body, headers=headers)
    assert created.status_code == 200, created.json()
    record = created.json()["response"]
    record_id = record["id"]
    assert str(record_id) not in {str(s["id"]) for s in CATALOG.models[resource].seeds}

    fetched = client.get(path_of(resource, record_id), headers=headers).json()["response"]
    assert fetched == record

    field = next(k for k, v in body.items() if isinstance(v, str) and v)
    updated = client.put(path_of(resource, record_id), json={field: "Round trip"}, headers=headers)
    assert updated.status_code == 200
    assert updated.json()["meta"]["developer_message"] == "Success"
    fetched = client.get(path_of(resource, record_id), headers=headers).json()["response"]
    assert fetched[field] == "Round trip"

    listed = client.get(path_of(resource), params={"per_page": 100}, headers=headers).json()
    assert record_id in [r["id"] for r in listed["response"]]

    assert client.delete(path_of(resource, record_id), headers=headers).status_code == 200
    gone = client.get(path_of(resource, record_id), headers=headers)
    assert gone.status_code == 404
    assert gone.json()["meta"]["error_code"] == "not_found"
    assert gone.json()["meta"]["developer_message"].endswith(f"with id {record_id} not found")


def test_crud_round_trips_cover_every_resource_with_all_five_operations() -> None:
    assert crud_resources() == [
        "companies",
        "contacts",
        "deals",
        "notes",
        "products",
        "products_association",
        "tasks",
        "tickets",
    ]


def test_task_ids_stay_strings_as_in_the_collection(
    client: TestClient, state: SimulatorState
) -> None:
    created = client.post("/api/v3.1/tasks", json={"name": "Call"}, headers=login(state))
    assert created.json()["response"]["id"] == "3"


def test_task_categories_can_be_listed_created_and_deleted(
    client: TestClient, state: SimulatorState
) -> None:
    headers = login(state)
    created = client.post("/api/v3.1/tasks/category", json={"name": "Visits"}, headers=headers)
    category = created.json()["response"]
    assert (category["id"], category["name"]) == (6, "Visits")
    listed = client.get("/api/v3.1/tasks/category", headers=headers).json()["response"]
    assert listed[-1]["name"] == "Visits"
    assert client.delete("/api/v3.1/tasks/category/6", headers=headers).status_code == 200
    assert client.delete("/api/v3.1/tasks/category/6", headers=headers).status_code == 404


def test_geolocations_can_be_created_read_updated_and_listed_but_not_deleted(
    client: TestClient, state: SimulatorState
) -> None:
    headers = login(state)
    body = route_for("geolocations", Kind.CREATE).example_body
    created = client.post("/api/v3.1/geolocations", json=body, headers=headers).json()["response"]
    assert created["id"] == 117
    assert created["journey_id"] == body["journey_id"]
    updated = client.put(
        "/api/v3.1/geolocations/117", json={"journey_id": "J-2"}, headers=headers
    ).json()
    assert updated["response"]["journey_id"] == "J-2"
    listed = client.get("/api/v3.1/geolocations", headers=headers).json()["response"]
    assert 117 in [g["id"] for g in listed]
    assert client.delete("/api/v3.1/geolocations/117", headers=headers).status_code == 405


@pytest.mark.parametrize(
    ("resource", "body", "field"),
    [
        ("contacts", {"last_name": "Smith"}, "first_name"),
        ("contacts", {"first_name": "  "}, "first_name"),
        ("companies", {"website": "zoo.com"}, "name"),
        ("deals", {"crm_pipeline_id": 1, "currency": "IDR"}, "name"),
        ("tickets", {"ticket_pipeline_id": 2, "ticket_stage_id": 5}, "name"),
        ("tasks/category", {}, "name"),
    ],
)
def test_creating_without_a_required_field_is_a_422_naming_it(
    client: TestClient, state: SimulatorState, resource: str, body: dict[str, Any], field: str
) -> None:
    response = client.post(path_of(resource), json=body, headers=login(state))
    assert response.status_code == 422
    payload = response.json()
    assert payload["meta"]["error_code"] == "validation_error"
    assert payload["meta"]["type"] == "Unprocessable Entity"
    assert payload["meta"]["developer_message"] == f"{field} can't be blank"
    assert payload["errors"] == [{"field": field, "message": "can't be blank"}]


def test_owner_is_not_required_because_the_collection_defaults_it_to_the_current_user(
    client: TestClient, state: SimulatorState
) -> None:
    response = client.post("/api/v3.1/contacts", json={"first_name": "Ann"}, headers=login(state))
    assert response.status_code == 200
    assert response.json()["response"]["creator_id"] == 1


def test_updates_may_leave_required_fields_out_but_not_blank_them(
    client: TestClient, state: SimulatorState
) -> None:
    headers = login(state)
    partial = client.put("/api/v3.1/contacts/1", json={"job_title": "CTO"}, headers=headers)
    blanked = client.put("/api/v3.1/contacts/1", json={"first_name": ""}, headers=headers)
    contact = client.get("/api/v3.1/contacts/1", headers=headers).json()["response"]
    assert (partial.status_code, blanked.status_code) == (200, 422)
    assert (contact["first_name"], contact["job_title"]) == ("John", "CTO")


def test_update_owner_sets_the_records_creator_and_refuses_a_null_owner(
    client: TestClient, state: SimulatorState
) -> None:
    headers = login(state)
    for resource in ("contacts", "deals"):
        owner_path = f"{path_of(resource, 2)}/update_owner"
        moved = client.put(owner_path, json={"creator_id": 300}, headers=headers)
        assert moved.status_code == 200
        assert "response" not in moved.json()
        record = client.get(path_of(resource, 2), headers=headers).json()["response"]
        assert record["creator_id"] == 300
        refused = client.put(owner_path, json={"creator_id": None}, headers=headers)
        assert refused.status_code == 422
    unknown = client.put("/api/v3.1/deals/99/update_owner", json={"creator_id": 1}, headers=headers)
    assert unknown.status_code == 404


def test_single_contact_is_one_object_not_the_list_the_collection_shows(
    client: TestClient, state: SimulatorState
) -> None:
    contact = client.get("/api/v3.1/contacts/2", headers=login(state)).json()["response"]
    assert contact["first_name"] == "Andrew"


def test_writes_answer_with_the_record_only_where_the_collection_does(
    client: TestClient, state: SimulatorState
) -> None:
    headers = login(state)
    assert "response" not in client.put("/api/v3.1/contacts/1", json={}, headers=headers).json()
    assert client.put("/api/v3.1/tickets/1", json={}, headers=headers).json()["response"]["id"] == 1
    assert "response" not in client.delete("/api/v3.1/tickets/1", headers=headers).json()


def test_record_scoped_examples_are_404_for_unknown_records(
    client: TestClient, state: SimulatorState
) -> None:
    headers = login(state)
    timeline = client.get("/api/v3.1/contacts/77/timeline", headers=headers)
    assert timeline.status_code == 404
    assert timeline.json()["meta"]["developer_message"] == "Contact with id 77 not found"
    stages = client.get("/api/v3.1/pipelines/9/stages", headers=headers)
    assert stages.json()["meta"]["developer_message"] == "Pipeline with id 9 not found"


# Lists


def test_lists_paginate_with_page_and_per_page(client: TestClient, state: SimulatorState) -> None:
    headers = login(state)
    for number in range(28):
        client.post("/api/v3.1/contacts", json={"first_name": f"Bulk {number}"}, headers=headers)

    def page(**params: int) -> dict[str, Any]:
        return client.get("/api/v3.1/contacts", params=params, headers=headers).json()

    first = page()
    counters = ("page", "total_page", "current_data", "total_data")
    assert [first[key] for key in counters] == [1, 2, 25, 30]
    second = page(page=2)
    assert [c["first_name"] for c in second["response"]] == [f"Bulk {n}" for n in range(23, 28)]
    small = page(per_page=7, page=5)
    assert (small["current_data"], small["total_page"]) == (2, 5)
    assert page(per_page=500)["current_data"] == 30
    assert page(page=9)["response"] == []


@pytest.mark.parametrize("params", [{"per_page": 0}, {"page": 0}, {"page": "two"}])
def test_invalid_pagination_is_a_422(
    client: TestClient, state: SimulatorState, params: dict[str, int | str]
) -> None:
    response = client.get("/api/v3.1/deals", params=params, headers=login(state))
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] in params


def test_product_lists_use_the_collections_own_counter_names(
    client: TestClient, state: SimulatorState
) -> None:
    listed = client.get("/api/v3.1/products", headers=login(state)).json()
    counters = ("current_page", "total_page", "total_current_data", "total_data")
    assert [listed[key] for key in counters] == [1, 1, 2, 2]
    assert "page" not in listed


@pytest.mark.parametrize(
    ("path", "params", "ids"),
    [
        ("/api/v3.1/contacts", {"name": "andrew smith"}, [2]),
        ("/api/v3.1/contacts", {"email": "USER1@"}, [1]),
        ("/api/v3.1/contacts", {"crm_status_id": "2"}, [2]),
        ("/api/v3.1/contacts", {"created_after": "15-07-2024"}, []),
        ("/api/v3.1/contacts", {"created_after": "18-07-2021"}, [1, 2]),
        ("/api/v3.1/companies", {"contact_ids": "1"}, [2]),
        ("/api/v3.1/companies", {"deal_ids": "1,9"}, [1]),
        ("/api/v3.1/deals", {"company_ids": "1"}, [1]),
        ("/api/v3.1/deals", {"contact_ids": "1", "name": "deal a"}, [1]),
        ("/api/v3.1/products", {"query": "marg"}, [2]),
        ("/api/v3.1/products_association", {"crm_deal_id": "1", "query": "soap"}, [1]),
        ("/api/v3.1/notes", {"crm_lead_id": "1", "crm_deal_id": "1"}, [1]),
        ("/api/v3.1/notes", {"crm_deal_id": "1"}, [2]),
        ("/api/v3.1/tasks", {"filter": "alltask"}, ["1", "2"]),
    ],
)
def test_documented_filters_select_records(
    client: TestClient, state: SimulatorState, path: str, params: dict[str, str], ids: list[object]
) -> None:
    response = client.get(path, params=params, headers=login(state))
    assert response.status_code == 200
    assert [r["id"] for r in response.json()["response"]] == ids


def test_a_created_after_date_in_the_wrong_format_is_a_422(
    client: TestClient, state: SimulatorState
) -> None:
    params = {"created_after": "2024-07-15"}
    response = client.get("/api/v3.1/contacts", params=params, headers=login(state))
    assert response.status_code == 422


# Every route of the collection


@pytest.mark.parametrize("route", API_ROUTES, ids=[r.key for r in API_ROUTES])
def test_every_collection_route_answers_200_and_is_recorded_under_its_template(
    client: TestClient, state: SimulatorState, route: Route
) -> None:
    path, query, body = example_request(route)
    response = client.request(route.method, path, params=query, json=body, headers=login(state))
    assert response.status_code == 200, response.json()
    payload = response.json()
    assert payload["meta"]["status"] == 200
    assert payload["meta"]["type"] == "OK"
    assert payload["meta"]["error_code"] is None
    recorded = state.requests[-1]
    assert (recorded.account, recorded.method, recorded.path) == ("acme", route.method, path)
    assert recorded.route == route.key
    assert recorded.query == query
    assert recorded.body == body
    assert recorded.status == 200


@pytest.mark.parametrize("route", routes_of(Kind.CREATE), ids=lambda r: r.key)
def test_the_collections_example_create_bodies_are_accepted(
    client: TestClient, state: SimulatorState, route: Route
) -> None:
    body = route.example_body
    response = client.post(route.template, json=body, headers=login(state))
    assert response.status_code == 200, response.json()
    record = response.json()["response"]
    sent = {k: v for k, v in body.items() if k != "id" and v is not None}
    assert {k: record[k] for k in sent} == sent


@pytest.mark.parametrize("route", routes_of(Kind.INFO), ids=lambda r: r.key)
def test_info_templates_are_served_exactly_as_the_collection_documents_them(
    client: TestClient, state: SimulatorState, route: Route
) -> None:
    response = client.get(route.template, headers=login(state)).json()
    assert response["response"] == route.example["response"]


def test_unknown_paths_are_404_and_wrong_methods_405_with_meta_bodies(
    client: TestClient, state: SimulatorState
) -> None:
    headers = login(state)
    unknown = client.get("/api/v3.1/invoices", headers=headers)
    assert (unknown.status_code, unknown.json()["meta"]["error_code"]) == (404, "not_found")
    wrong = client.post("/api/v3.1/contacts/1", json={}, headers=headers)
    assert wrong.status_code == 405
    assert wrong.json()["meta"]["status"] == 405
    assert wrong.headers["allow"] == "GET, PUT, DELETE"
    assert client.get("/elsewhere").status_code == 404
    assert [r.route for r in state.requests] == [None, None]


def test_a_trailing_slash_reaches_the_same_route(client: TestClient, state: SimulatorState) -> None:
    response = client.post("/api/v3.1/notes/", json={"note": "Hi"}, headers=login(state))
    assert response.status_code == 200
    assert state.requests[-1].route == "POST /api/v3.1/notes"


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
