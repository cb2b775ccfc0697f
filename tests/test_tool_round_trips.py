"""Round trips per resource over MCP: create -> get -> update -> list -> delete -> get is 404,
each request reaching the tenant's own Qontak account."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from mcp import Client

from tests.calls import audited_calls, with_mcp
from tests.servers import simulator_requests


@dataclass(frozen=True)
class RoundTrip:
    noun: str  # as in the tool names: get_<noun>
    plural: str  # list_<plural>
    label: str  # as error messages name it
    create: dict[str, Any]
    update: dict[str, Any]
    list_arguments: dict[str, Any] = field(default_factory=lambda: {"per_page": 100})


ROUND_TRIPS = [
    RoundTrip(
        "contact",
        "contacts",
        "contact",
        {"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com"},
        {"job_title": "Analyst"},
    ),
    RoundTrip(
        "company",
        "companies",
        "company",
        {"name": "Analytical Engines Ltd", "website": "engines.example"},
        {"website": "engines.example.org"},
    ),
    RoundTrip(
        "deal",
        "deals",
        "deal",
        {"name": "Difference engine", "crm_pipeline_id": 2, "crm_stage_id": 1, "size": 5000.0},
        {"crm_stage_id": 2},
    ),
    RoundTrip(
        "ticket",
        "tickets",
        "ticket",
        {"name": "Printer jammed", "ticket_pipeline_id": 2, "ticket_stage_id": 26},
        {"description": "Cleared the paper path"},
    ),
    RoundTrip(
        "task",
        "tasks",
        "task",
        {"name": "Call Ada", "crm_task_status_id": 1, "detail": "About the engine"},
        {"crm_task_status_id": 4},
    ),
    RoundTrip(
        "note",
        "notes",
        "note",
        {"note": "Met at the fair", "type": "Crm::PersonNote", "crm_person_id": 1},
        {"note": "Met at the Great Exhibition"},
        list_arguments={},
    ),
    RoundTrip(
        "product",
        "products",
        "product",
        {"name": "Brass gear", "currency": "IDR", "price": 1000.0, "quantity": 1.0},
        {"price": 1200.0},
    ),
    RoundTrip(
        "products_association",
        "products_associations",
        "product association",
        {"name": "Gears on deal", "crm_product_id": 1, "crm_deal_id": 1, "quantity": 2.0},
        {"quantity": 3.0},
    ),
]


def response(result: Any) -> Any:
    assert not result.is_error, result.content
    return result.structured_content["response"]


@pytest.mark.parametrize("trip", ROUND_TRIPS, ids=[trip.noun for trip in ROUND_TRIPS])
def test_record_round_trip_ends_in_a_404_naming_the_record(
    control_plane, make_tenant, simulator, era, trip
):
    demo = make_tenant()

    async def round_trip(client: Client) -> dict[str, Any]:
        created = response(await client.call_tool(f"create_{trip.noun}", trip.create))
        record_id = int(created["id"])
        fetched = response(await client.call_tool(f"get_{trip.noun}", {"id": record_id}))
        await client.call_tool(f"update_{trip.noun}", {"id": record_id, **trip.update})
        updated = response(await client.call_tool(f"get_{trip.noun}", {"id": record_id}))
        listed = response(await client.call_tool(f"list_{trip.plural}", trip.list_arguments))
        deleted = await client.call_tool(f"delete_{trip.noun}", {"id": record_id})
        gone = await client.call_tool(f"get_{trip.noun}", {"id": record_id})
        return {
            "id": record_id,
            "fetched": fetched,
            "updated": updated,
            "listed": listed,
            "deleted": deleted,
            "gone": gone,
        }

    result = with_mcp(control_plane.mcp_url, demo.key, era, round_trip)
    assert trip.create.items() <= result["fetched"].items()
    assert {**trip.create, **trip.update}.items() <= result["updated"].items()
    assert result["id"] in [int(record["id"]) for record in result["listed"]]
    assert not result["deleted"].is_error, result["deleted"].content
    assert result["gone"].is_error
    assert (
        result["gone"]
        .content[0]
        .text.startswith(f"Qontak answered HTTP 404: {trip.label} {result['id']} not found")
    )
    outcomes = [row.outcome for row in audited_calls(demo.tenant, 7)]
    assert outcomes == ["ok"] * 6 + ["upstream_error"]
    requests = simulator_requests(simulator, demo.account)
    methods = [r["method"] for r in requests if r["path"].startswith("/api/")]
    assert methods == ["POST", "GET", "PUT", "GET", "GET", "DELETE", "GET"]


def test_geolocation_round_trip_without_a_delete(control_plane, make_tenant, era):
    """Qontak's API has no call to delete a geolocation: create, get, update, list."""
    demo = make_tenant()
    checkin = {"latitude": -6.2, "longitude": 106.8, "device_id": "phone-1", "journey_id": "j-1"}

    async def round_trip(client: Client) -> dict[str, Any]:
        created = response(await client.call_tool("create_geolocation", checkin))
        record_id = int(created["id"])
        updated = response(
            await client.call_tool(
                "update_geolocation", {"id": record_id, "battery_percentage": 42.5}
            )
        )
        fetched = response(await client.call_tool("get_geolocation", {"id": record_id}))
        listed = response(await client.call_tool("list_geolocations", {"per_page": 100}))
        return {"id": record_id, "updated": updated, "fetched": fetched, "listed": listed}

    result = with_mcp(control_plane.mcp_url, demo.key, era, round_trip)
    assert result["updated"]["battery_percentage"] == 42.5
    assert {**checkin, "battery_percentage": 42.5}.items() <= result["fetched"].items()
    assert result["id"] in [record["id"] for record in result["listed"]]


def test_task_category_round_trip_through_the_category_list(control_plane, make_tenant, era):
    """Task categories have no single-record read: the list shows them come and go."""
    demo = make_tenant()

    async def round_trip(client: Client) -> dict[str, Any]:
        created = response(await client.call_tool("create_task_category", {"name": "Follow-up"}))
        record_id = int(created["id"])
        listed = response(await client.call_tool("list_task_categories", {}))
        deleted = await client.call_tool("delete_task_category", {"id": record_id})
        after = response(await client.call_tool("list_task_categories", {}))
        again = await client.call_tool("delete_task_category", {"id": record_id})
        return {
            "id": record_id,
            "listed": listed,
            "deleted": deleted,
            "after": after,
            "again": again,
        }

    result = with_mcp(control_plane.mcp_url, demo.key, era, round_trip)
    assert {"id": result["id"], "name": "Follow-up"}.items() <= next(
        c for c in result["listed"] if c["id"] == result["id"]
    ).items()
    assert not result["deleted"].is_error
    assert result["id"] not in [category["id"] for category in result["after"]]
    assert result["again"].is_error
    assert (
        result["again"]
        .content[0]
        .text.startswith(f"Qontak answered HTTP 404: task category {result['id']} not found")
    )
    assert "list_task_categories" in result["again"].content[0].text
