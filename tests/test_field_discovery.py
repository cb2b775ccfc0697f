"""Field discovery against the collection's example `/info` templates, then end to end: an
assistant builds valid create calls from `get_required_fields_for_*` alone."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import pytest
from mcp import Client

from devtools.simulator.collection import load_requests
from qontak.endpoints import ENDPOINTS_BY_NAME
from tests.calls import with_mcp
from tests.servers import simulator_requests

DISCOVERY_TOOLS = {
    "get_required_fields_for_contact": ("contacts", {}),
    "get_required_fields_for_company": ("companies", {}),
    "get_required_fields_for_deal": ("deals", {"pipeline_id": 2, "stage_id": 1}),
    "get_required_fields_for_ticket": ("tickets", {"pipeline_id": 2}),
    "get_required_fields_for_task": ("tasks", {}),
}


def example_template(resource: str) -> list[dict[str, Any]]:
    """The documented example answer of `GET /api/v3.1/<resource>/info`."""
    request = next(
        r
        for r in load_requests()
        if r.method == "GET" and r.template == f"/api/v3.1/{resource}/info"
    )
    return copy.deepcopy(request.example["response"])


def discover(tool: str, template: Any, **arguments: Any) -> dict[str, Any]:
    endpoint = ENDPOINTS_BY_NAME[tool]
    result: dict[str, Any] = endpoint.present(
        template, endpoint.input_model.model_validate(arguments)
    )
    return result


def names(fields: list[dict[str, Any]]) -> list[str]:
    return [field["name"] for field in fields]


def field(result: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in result["required"] + result["optional"] if f["name"] == name)


def test_contact_fields_the_template_marks_required_are_required():
    result = discover("get_required_fields_for_contact", example_template("contacts"))
    assert names(result["required"]) == ["first_name", "creator_id"]
    assert field(result, "creator_id")["options"] == [
        {"id": 1, "name": "User 1"},
        {"id": 2, "name": "User 2"},
        {"id": 3, "name": "User 3"},
    ]
    assert "last_name" in names(result["optional"])


def test_custom_fields_go_in_additional_fields_with_their_id_and_options():
    result = discover("get_required_fields_for_contact", example_template("contacts"))
    payment = field(result, "payment_options")
    assert payment["custom"] is True
    assert payment["id"] == 2
    assert payment["argument"] == "additional_fields"
    assert payment["options"] == [{"id": 1, "name": "Cash"}, {"id": 2, "name": "Credit"}]


def test_template_names_are_mapped_to_the_create_tools_arguments():
    contact = discover("get_required_fields_for_contact", example_template("contacts"))
    assert field(contact, "crm_phones")["argument"] == "telephone"
    assert field(contact, "crm_occupation_id")["argument"] is None  # create_contact has none
    deal = discover(
        "get_required_fields_for_deal", example_template("deals"), pipeline_id=2, stage_id=1
    )
    assert field(deal, "crm_contact")["argument"] == "crm_lead_ids"
    assert field(deal, "crm_company")["argument"] == "crm_company_id"
    task = discover("get_required_fields_for_task", example_template("tasks"))
    assert field(task, "crm_person")["argument"] == "crm_person_id"


def test_company_field_with_null_required_is_optional():
    result = discover("get_required_fields_for_company", example_template("companies"))
    assert names(result["required"]) == ["name", "creator_id"]
    assert "single_line_additional_field" in names(result["optional"])


@pytest.mark.parametrize(
    ("pipeline_id", "stage_id", "required"),
    [(2, 1, ["name"]), (1, 2, ["name"]), (2, 3, []), (3, 1, [])],
    ids=["pipeline-2-stage-1", "pipeline-1-stage-2", "other-stage", "other-pipeline"],
)
def test_deal_field_is_required_in_its_pipelines_at_its_stages(pipeline_id, stage_id, required):
    result = discover(
        "get_required_fields_for_deal",
        example_template("deals"),
        pipeline_id=pipeline_id,
        stage_id=stage_id,
    )
    assert names(result["required"]) == required
    assert len(result["required"]) + len(result["optional"]) == len(example_template("deals"))


def test_deal_field_required_in_a_pipeline_without_stages_is_required_at_every_stage():
    template = example_template("deals")
    size = next(f for f in template if f["name"] == "size")
    size["required_pipeline_ids"] = [5]
    for stage_id in (1, 9):
        result = discover(
            "get_required_fields_for_deal", template, pipeline_id=5, stage_id=stage_id
        )
        assert names(result["required"]) == ["size"]


def test_deal_discovery_names_the_create_arguments_for_its_pipeline_and_stage():
    result = discover(
        "get_required_fields_for_deal", example_template("deals"), pipeline_id=2, stage_id=1
    )
    assert result["create_tool"] == "create_deal"
    assert result["context_arguments"] == {"crm_pipeline_id": 2, "crm_stage_id": 1}
    assert field(result, "crm_priority_id")["options"][0] == {"id": 1, "name": "Low"}


def test_ticket_fields_required_in_the_pipeline_are_required():
    result = discover("get_required_fields_for_ticket", example_template("tickets"), pipeline_id=2)
    assert names(result["required"]) == [
        "name",
        "ticket_pipeline_id",
        "ticket_stage_id",
        "creator_id",
    ]
    assert {"description", "due_date", "dropdown_test_45"} <= set(names(result["optional"]))
    assert result["context_arguments"] == {"ticket_pipeline_id": 2}


def test_ticket_fields_shown_only_in_another_pipeline_are_not_offered():
    template = example_template("tickets")
    result = discover("get_required_fields_for_ticket", template, pipeline_id=1)
    assert result["required"] == []
    assert result["optional"] == []
    assert result["not_shown"] == names(template)


def test_ticket_stage_options_are_the_stages_of_the_requested_pipeline():
    template = example_template("tickets")
    # The example's stages all belong to pipeline 1, while the field is shown in pipeline 2.
    in_pipeline_2 = discover("get_required_fields_for_ticket", template, pipeline_id=2)
    assert field(in_pipeline_2, "ticket_stage_id")["options"] == []
    next(f for f in template if f["name"] == "ticket_stage_id")["show_pipeline_ids"] = [1, 2]
    in_pipeline_1 = discover("get_required_fields_for_ticket", template, pipeline_id=1)
    stages = field(in_pipeline_1, "ticket_stage_id")["options"]
    assert [s["name"] for s in stages] == ["New", "Assigned", "In Progress", "Done"]


def test_task_template_without_requiredness_says_so():
    result = discover("get_required_fields_for_task", example_template("tasks"))
    assert result["required"] == []
    assert "marks no field as required" in result["notes"][0]
    checklist = field(result, "my_checklist")
    assert checklist["options"] == [
        {"id": 91767, "name": "Tiga"},
        {"id": 91766, "name": "Dua"},
        {"id": 91765, "name": "Satu"},
    ]


def test_empty_template_gives_empty_lists_and_a_note():
    result = discover("get_required_fields_for_company", None)
    assert (result["required"], result["optional"]) == ([], [])
    assert result["notes"] == ["Qontak returned an empty company template."]


@pytest.mark.parametrize("tool", list(DISCOVERY_TOOLS))
def test_discovery_result_matches_the_declared_output_schema(tool):
    resource, arguments = DISCOVERY_TOOLS[tool]
    result = discover(tool, example_template(resource), **arguments)
    jsonschema.validate({"response": result}, ENDPOINTS_BY_NAME[tool].output_schema)


def fill(required: list[dict[str, Any]]) -> dict[str, Any]:
    """What an assistant would send: an option id where there are options, else some text."""
    return {
        f["argument"]: f["options"][0]["id"] if f["options"] else f"{f['label']} value"
        for f in required
        if f["argument"] and not f["custom"]
    }


def test_assistant_creates_a_deal_from_the_discovered_required_fields(
    control_plane, make_tenant, simulator
):
    demo = make_tenant()

    async def discover_then_create(client: Client) -> dict[str, Any]:
        found = await client.call_tool(
            "get_required_fields_for_deal", {"pipeline_id": 2, "stage_id": 1}
        )
        response = found.structured_content["response"]
        context = response["context_arguments"]
        guessed = await client.call_tool("create_deal", context)
        created = await client.call_tool("create_deal", {**fill(response["required"]), **context})
        return {"found": response, "guessed": guessed, "created": created}

    result = with_mcp(control_plane.mcp_url, demo.key, "2026-07-28", discover_then_create)
    assert names(result["found"]["required"]) == ["name"]
    assert result["guessed"].is_error
    guessed_text = result["guessed"].content[0].text
    assert "HTTP 422: name can't be blank" in guessed_text
    assert "get_required_fields_for_deal" in guessed_text
    assert not result["created"].is_error, result["created"].content
    deal = result["created"].structured_content["response"]
    assert (deal["name"], deal["crm_pipeline_id"], deal["crm_stage_id"]) == (
        "Deal Name value",
        2,
        1,
    )
    template_reads = [
        r for r in simulator_requests(simulator, demo.account) if r["route"].endswith("/info")
    ]
    assert [r["query"] for r in template_reads] == [{}]  # pipeline and stage stay local


def test_assistant_creates_a_ticket_with_a_stage_from_the_ticket_pipelines(
    control_plane, make_tenant
):
    demo = make_tenant()

    async def discover_then_create(client: Client) -> Any:
        found = await client.call_tool("get_required_fields_for_ticket", {"pipeline_id": 2})
        response = found.structured_content["response"]
        pipelines = await client.call_tool("get_ticket_pipelines", {})
        pipeline = next(p for p in pipelines.structured_content["response"] if p["id"] == 2)
        arguments = {
            **fill(response["required"]),
            "ticket_stage_id": pipeline["ticket_stages"][0]["id"],
            **response["context_arguments"],
        }
        return await client.call_tool("create_ticket", arguments)

    created = with_mcp(control_plane.mcp_url, demo.key, "2025-11-25", discover_then_create)
    assert not created.is_error, created.content
    ticket = created.structured_content["response"]
    assert (ticket["name"], ticket["ticket_pipeline_id"]) == ("Ticket Name value", 2)
