"""The simulator serves the Postman collection's routes the way the collection says Qontak does.

The route table, the resources' create/read/update/list/delete behaviour and validation,
list pagination and filters, and every documented route answered with its example request.
"""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from devtools.simulator import SimulatorState
from devtools.simulator.catalog import Kind, Route
from devtools.simulator.collection import clean_query_value, load_requests, parse_lenient_json
from tests.simulator.conftest import (
    API_ROUTES,
    CATALOG,
    crud_resources,
    example_request,
    login,
    one_record,
    path_of,
    route_for,
    routes_of,
)

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

    fetched = one_record(client.get(path_of(resource, record_id), headers=headers).json())
    assert fetched == record

    field = next(k for k, v in body.items() if isinstance(v, str) and v)
    updated = client.put(path_of(resource, record_id), json={field: "Round trip"}, headers=headers)
    assert updated.status_code == 200
    assert updated.json()["meta"]["developer_message"] == "Success"
    fetched = one_record(client.get(path_of(resource, record_id), headers=headers).json())
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
    contact = one_record(client.get("/api/v3.1/contacts/1", headers=headers).json())
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
        record = one_record(client.get(path_of(resource, 2), headers=headers).json())
        assert record["creator_id"] == 300
        refused = client.put(owner_path, json={"creator_id": None}, headers=headers)
        assert refused.status_code == 422
    unknown = client.put("/api/v3.1/deals/99/update_owner", json={"creator_id": 1}, headers=headers)
    assert unknown.status_code == 404


def test_single_contact_is_an_array_holding_the_record_as_the_collection_shows(
    client: TestClient, state: SimulatorState
) -> None:
    """Qontak documents "Get Single Contact" answering `response` with an array; every other
    single read answers one object."""
    contacts = client.get("/api/v3.1/contacts/2", headers=login(state)).json()["response"]
    assert [contact["first_name"] for contact in contacts] == ["Andrew"]
    deal = client.get("/api/v3.1/deals/1", headers=login(state)).json()["response"]
    assert isinstance(deal, dict)


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
