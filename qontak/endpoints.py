"""The Qontak API as data: one row per tool, consumed by one generic handler (pipeline).

A row names the tool, the HTTP method and path (with `{field}` placeholders filled from the
input), the input model, what kind of operation it is (which sets the MCP annotations), the
resource it is about (which names it in error messages) and a description an assistant can
act on. Input fields that are not in the path go to the query string for GET and DELETE and
to the JSON body for POST and PUT, except `local_fields`, which only the presenter reads.

Every request of Qontak's Postman collection except `POST /oauth/token` (the control plane's
own business) is one row here; `get_required_fields_for_*` are rows too, reading the same
`/info` templates as `get_*_template` through a presenter.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from mcp_types import ToolAnnotations
from pydantic import BaseModel

from qontak import inputs
from qontak.field_discovery import OUTPUT_SHAPE as FIELDS_SHAPE
from qontak.field_discovery import FieldDiscovery

API = "/api/v3.1"


def gateway_path(path: str) -> str:
    """The same resource on the Mekari API Gateway, where resources sit directly under the
    CRM root (`/qontak/crm/contacts/1`), without `/api/v3.1`."""
    return path.removeprefix(API)


class Kind(Enum):
    READ = "read"
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    REPLACE = "replace"  # overwrites a setting: whatever is left out is switched off


ANNOTATIONS: dict[Kind, ToolAnnotations] = {
    Kind.READ: ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True),
    Kind.CREATE: ToolAnnotations(
        read_only_hint=False, destructive_hint=False, idempotent_hint=False
    ),
    Kind.UPDATE: ToolAnnotations(
        read_only_hint=False, destructive_hint=False, idempotent_hint=True
    ),
    Kind.DELETE: ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True),
    Kind.REPLACE: ToolAnnotations(
        read_only_hint=False, destructive_hint=True, idempotent_hint=True
    ),
}

RECORD = {"type": "object"}
RECORDS = {"type": "array", "items": {"type": "object"}}


def _response_schema(shape: dict[str, Any] | None) -> dict[str, Any]:
    """structuredContent is `{"response": <Qontak's response payload>}`.

    Without a known shape (writes Qontak answers with a bare `meta`), `response` may be null.
    """
    properties = {"response": shape} if shape else {"response": {}}
    return {"type": "object", "properties": properties, "required": ["response"]}


@dataclass(frozen=True)
class Resource:
    """A kind of Qontak record, as error messages name it and where to find valid ids."""

    noun: str
    plural: str
    list_tool: str


CONTACT = Resource("contact", "contacts", "list_contacts")
COMPANY = Resource("company", "companies", "list_companies")
DEAL = Resource("deal", "deals", "list_deals")
TASK = Resource("task", "tasks", "list_tasks")
TASK_CATEGORY = Resource("task category", "task categories", "list_task_categories")
TICKET = Resource("ticket", "tickets", "list_tickets")
TICKET_PIPELINE = Resource("ticket pipeline", "ticket pipelines", "get_ticket_pipelines")
PRODUCT = Resource("product", "products", "list_products")
PRODUCTS_ASSOCIATION = Resource(
    "product association", "product associations", "list_products_associations"
)
NOTE = Resource("note", "notes", "list_notes")
PIPELINE = Resource("pipeline", "pipelines", "list_pipelines")
GEOLOCATION = Resource("geolocation", "geolocations", "list_geolocations")


@dataclass(frozen=True)
class Endpoint:
    name: str
    method: str
    path: str
    input_model: type[BaseModel]
    kind: Kind
    resource: Resource
    description: str
    response_shape: dict[str, Any] | None = None
    # Turns Qontak's `response` payload into the tool's (e.g. field discovery from templates).
    presenter: Callable[[Any, BaseModel], Any] | None = None
    # Input fields only the presenter reads; never sent to Qontak.
    local_fields: tuple[str, ...] = ()

    def present(self, response: Any, data: BaseModel) -> Any:
        response = self.as_documented(response, data)
        return response if self.presenter is None else self.presenter(response, data)

    def as_documented(self, response: Any, data: BaseModel) -> Any:
        """One record as the tool declares it, however Qontak shaped it: its documented
        examples answer some single-record reads with an array (Get Single Contact), so an
        array is narrowed to the record with the requested id, or to its only element."""
        if (self.response_shape or {}).get("type") != "object" or not isinstance(response, list):
            return response
        wanted = getattr(data, "id", None)
        records = [item for item in response if isinstance(item, dict)]
        matching = [item for item in records if wanted is not None and item.get("id") == wanted]
        if matching:
            return matching[0]
        return records[0] if len(records) == 1 == len(response) else response

    @property
    def noun(self) -> str:
        return self.resource.noun

    @property
    def annotations(self) -> ToolAnnotations:
        return ANNOTATIONS[self.kind]

    @property
    def path_fields(self) -> tuple[str, ...]:
        return tuple(
            field for _, field, _, _ in string.Formatter().parse(self.path) if field is not None
        )

    @property
    def output_schema(self) -> dict[str, Any]:
        return _response_schema(self.response_shape)

    def request_parts(
        self, data: BaseModel
    ) -> tuple[str, dict[str, Any] | None, dict[str, Any] | None]:
        """Path, query and JSON body for validated input; unset optional fields are omitted."""
        values = data.model_dump(mode="json", exclude_none=True, exclude=set(self.local_fields))
        path = self.path.format(**{field: values.pop(field) for field in self.path_fields})
        if self.method in ("GET", "DELETE"):
            return path, values or None, None
        return path, None, values


def _update_note(resource: Resource) -> str:
    return f"Qontak answers without the {resource.noun}: call get_{resource.noun} to see it."


ENDPOINTS: tuple[Endpoint, ...] = (
    # Contacts
    Endpoint(
        name="get_contact_template",
        method="GET",
        path=API + "/contacts/info",
        input_model=inputs.NoArguments,
        kind=Kind.READ,
        resource=CONTACT,
        response_shape=RECORDS,
        description=(
            "Get the contact template: every contact field of this account, standard and "
            "custom, with its type, whether it is required and its dropdown options (owners "
            "for creator_id, statuses, sources). For what create_contact needs, prefer "
            "get_required_fields_for_contact."
        ),
    ),
    Endpoint(
        name="get_required_fields_for_contact",
        method="GET",
        path=API + "/contacts/info",
        input_model=inputs.NoArguments,
        kind=Kind.READ,
        resource=CONTACT,
        response_shape=FIELDS_SHAPE,
        presenter=FieldDiscovery(
            "contact",
            "create_contact",
            inputs.CreateContactInput,
            aliases={"crm_phones": "telephone"},
        ),
        description=(
            "List the fields create_contact requires and accepts on this account, computed "
            "from the live contact template: for each, the argument to use, its type, the "
            "custom field id and the allowed options. Call it before create_contact."
        ),
    ),
    Endpoint(
        name="list_contacts",
        method="GET",
        path=API + "/contacts",
        input_model=inputs.ListContactsInput,
        kind=Kind.READ,
        resource=CONTACT,
        response_shape=RECORDS,
        description=(
            "List contacts (people) in Qontak CRM, newest first, with optional filters by name, "
            "job title, phone, email, company, deal or status, and `created_after` (dd-mm-yyyy). "
            "Paginate with page and per_page (max 100)."
        ),
    ),
    Endpoint(
        name="get_contact",
        method="GET",
        path=API + "/contacts/{id}",
        input_model=inputs.ById,
        kind=Kind.READ,
        resource=CONTACT,
        response_shape=RECORD,
        description="Get one contact by its id, with its custom (additional) fields.",
    ),
    Endpoint(
        name="get_contact_timeline",
        method="GET",
        path=API + "/contacts/{id}/timeline",
        input_model=inputs.ById,
        kind=Kind.READ,
        resource=CONTACT,
        response_shape=RECORDS,
        description=(
            "Get the activity timeline of a contact by id: who did what and when (fields "
            "added or changed, emails, tasks, deals)."
        ),
    ),
    Endpoint(
        name="get_contact_chat_history",
        method="GET",
        path=API + "/contacts/{id}/chat-history",
        input_model=inputs.ById,
        kind=Kind.READ,
        resource=CONTACT,
        response_shape=RECORD,
        description=(
            "Get the chat conversation with a contact by id (room id and messages from the "
            "customer and agents). Only accounts connected to Qontak's chat panel have any."
        ),
    ),
    Endpoint(
        name="create_contact",
        method="POST",
        path=API + "/contacts",
        input_model=inputs.CreateContactInput,
        kind=Kind.CREATE,
        resource=CONTACT,
        response_shape=RECORD,
        description=(
            "Create a contact. first_name is required; call get_required_fields_for_contact "
            "first to learn the owner (creator_id), status and custom field ids this account "
            "accepts. Returns the new contact with its id."
        ),
    ),
    Endpoint(
        name="update_contact",
        method="PUT",
        path=API + "/contacts/{id}",
        input_model=inputs.UpdateContactInput,
        kind=Kind.UPDATE,
        resource=CONTACT,
        description=(
            "Update fields of an existing contact by id; fields left out are unchanged. "
            + _update_note(CONTACT)
        ),
    ),
    Endpoint(
        name="update_contact_owner",
        method="PUT",
        path=API + "/contacts/{id}/update_owner",
        input_model=inputs.OwnerChange,
        kind=Kind.UPDATE,
        resource=CONTACT,
        description=(
            "Give a contact to another owner: creator_id is a user id from the creator_id "
            "options of get_contact_template, in the same team or organization. "
            + _update_note(CONTACT)
        ),
    ),
    Endpoint(
        name="delete_contact",
        method="DELETE",
        path=API + "/contacts/{id}",
        input_model=inputs.ById,
        kind=Kind.DELETE,
        resource=CONTACT,
        description="Delete a contact by id. This cannot be undone.",
    ),
    # Companies
    Endpoint(
        name="get_company_template",
        method="GET",
        path=API + "/companies/info",
        input_model=inputs.NoArguments,
        kind=Kind.READ,
        resource=COMPANY,
        response_shape=RECORDS,
        description=(
            "Get the company template: every company field of this account, standard and "
            "custom, with its type, whether it is required and its dropdown options (owners, "
            "industries, types, sources). For what create_company needs, prefer "
            "get_required_fields_for_company."
        ),
    ),
    Endpoint(
        name="get_required_fields_for_company",
        method="GET",
        path=API + "/companies/info",
        input_model=inputs.NoArguments,
        kind=Kind.READ,
        resource=COMPANY,
        response_shape=FIELDS_SHAPE,
        presenter=FieldDiscovery(
            "company",
            "create_company",
            inputs.CreateCompanyInput,
            aliases={"crm_phones": "telephone"},
        ),
        description=(
            "List the fields create_company requires and accepts on this account, computed "
            "from the live company template: for each, the argument to use, its type, the "
            "custom field id and the allowed options. Call it before create_company."
        ),
    ),
    Endpoint(
        name="list_companies",
        method="GET",
        path=API + "/companies",
        input_model=inputs.ListCompaniesInput,
        kind=Kind.READ,
        resource=COMPANY,
        response_shape=RECORDS,
        description=(
            "List companies, optionally only those of a contact (contact_ids) or deal "
            "(deal_ids), or matching part of a name or website. Paginate with page and "
            "per_page (max 100)."
        ),
    ),
    Endpoint(
        name="get_company",
        method="GET",
        path=API + "/companies/{id}",
        input_model=inputs.ById,
        kind=Kind.READ,
        resource=COMPANY,
        response_shape=RECORD,
        description="Get one company by its id, with its contacts, deals and custom fields.",
    ),
    Endpoint(
        name="get_company_timeline",
        method="GET",
        path=API + "/companies/{id}/timeline",
        input_model=inputs.ById,
        kind=Kind.READ,
        resource=COMPANY,
        response_shape=RECORDS,
        description="Get the activity timeline of a company by id: who did what and when.",
    ),
    Endpoint(
        name="create_company",
        method="POST",
        path=API + "/companies",
        input_model=inputs.CreateCompanyInput,
        kind=Kind.CREATE,
        resource=COMPANY,
        response_shape=RECORD,
        description=(
            "Create a company. name is required; call get_required_fields_for_company first "
            "for the owner, industry, type and custom field ids. Link contacts with "
            "crm_person_ids. Returns the new company with its id."
        ),
    ),
    Endpoint(
        name="update_company",
        method="PUT",
        path=API + "/companies/{id}",
        input_model=inputs.UpdateCompanyInput,
        kind=Kind.UPDATE,
        resource=COMPANY,
        description=(
            "Update fields of an existing company by id; fields left out are unchanged. "
            + _update_note(COMPANY)
        ),
    ),
    Endpoint(
        name="delete_company",
        method="DELETE",
        path=API + "/companies/{id}",
        input_model=inputs.ById,
        kind=Kind.DELETE,
        resource=COMPANY,
        description="Delete a company by id. This cannot be undone.",
    ),
    # Deals
    Endpoint(
        name="get_deal_template",
        method="GET",
        path=API + "/deals/info",
        input_model=inputs.NoArguments,
        kind=Kind.READ,
        resource=DEAL,
        response_shape=RECORDS,
        description=(
            "Get the deal template: every deal field of this account, standard and custom, "
            "with its type, dropdown options and the pipelines and stages where it is required "
            "(required_pipeline_ids, required_stage_ids). For one pipeline and stage, prefer "
            "get_required_fields_for_deal."
        ),
    ),
    Endpoint(
        name="get_required_fields_for_deal",
        method="GET",
        path=API + "/deals/info",
        input_model=inputs.DealFieldsContext,
        kind=Kind.READ,
        resource=DEAL,
        response_shape=FIELDS_SHAPE,
        local_fields=("pipeline_id", "stage_id"),
        presenter=FieldDiscovery(
            "deal",
            "create_deal",
            inputs.DealFields,
            aliases={"crm_contact": "crm_lead_ids", "crm_company": "crm_company_id"},
            context_arguments={"pipeline_id": "crm_pipeline_id", "stage_id": "crm_stage_id"},
        ),
        description=(
            "List the fields a deal needs in a given pipeline and stage (which fields are "
            "required depends on both), computed from the live deal template: for each, the "
            "create_deal argument, its type, the custom field id and the allowed options. "
            "Get pipeline_id from list_pipelines and stage_id from list_pipeline_stages."
        ),
    ),
    Endpoint(
        name="list_deals",
        method="GET",
        path=API + "/deals",
        input_model=inputs.ListDealsInput,
        kind=Kind.READ,
        resource=DEAL,
        response_shape=RECORDS,
        description=(
            "List deals, optionally matching part of a name or only those of a contact "
            "(contact_ids), company (company_ids) or product (product_ids). Paginate with page "
            "and per_page (max 100)."
        ),
    ),
    Endpoint(
        name="get_deal",
        method="GET",
        path=API + "/deals/{id}",
        input_model=inputs.ById,
        kind=Kind.READ,
        resource=DEAL,
        response_shape=RECORD,
        description=(
            "Get one deal by id: pipeline and stage, size, contacts, company, products and "
            "custom fields."
        ),
    ),
    Endpoint(
        name="get_deal_timeline",
        method="GET",
        path=API + "/deals/{id}/timeline",
        input_model=inputs.ById,
        kind=Kind.READ,
        resource=DEAL,
        response_shape=RECORDS,
        description="Get the activity timeline of a deal by id: who did what and when.",
    ),
    Endpoint(
        name="get_deal_stage_history",
        method="GET",
        path=API + "/deals/{id}/stage_history",
        input_model=inputs.ById,
        kind=Kind.READ,
        resource=DEAL,
        response_shape=RECORDS,
        description=(
            "Get how a deal moved through its pipeline by id: each move's previous and new "
            "stage, date, who moved it and the owner at the time."
        ),
    ),
    Endpoint(
        name="get_deal_chat_history",
        method="GET",
        path=API + "/deals/{id}/chat-history",
        input_model=inputs.ById,
        kind=Kind.READ,
        resource=DEAL,
        response_shape=RECORD,
        description=(
            "Get the chat conversation linked to a deal by id (room id and messages). Only "
            "accounts connected to Qontak's chat panel have any."
        ),
    ),
    Endpoint(
        name="create_deal",
        method="POST",
        path=API + "/deals",
        input_model=inputs.DealFields,
        kind=Kind.CREATE,
        resource=DEAL,
        response_shape=RECORD,
        description=(
            "Create a deal in a pipeline stage (crm_pipeline_id, crm_stage_id). Which fields "
            "are required depends on the pipeline and stage: call "
            "get_required_fields_for_deal first. Link contacts with crm_lead_ids. Returns the "
            "new deal with its id."
        ),
    ),
    Endpoint(
        name="update_deal",
        method="PUT",
        path=API + "/deals/{id}",
        input_model=inputs.UpdateDealInput,
        kind=Kind.UPDATE,
        resource=DEAL,
        description=(
            "Update fields of an existing deal by id, e.g. move it to another stage with "
            "crm_stage_id; fields left out are unchanged. A new stage may require more fields "
            "(get_required_fields_for_deal). " + _update_note(DEAL)
        ),
    ),
    Endpoint(
        name="delete_deal",
        method="DELETE",
        path=API + "/deals/{id}",
        input_model=inputs.ById,
        kind=Kind.DELETE,
        resource=DEAL,
        description="Delete a deal by id. This cannot be undone.",
    ),
    Endpoint(
        name="get_deal_real_creator",
        method="GET",
        path=API + "/deals/{id}/real_creator",
        input_model=inputs.ById,
        kind=Kind.READ,
        resource=DEAL,
        response_shape=RECORD,
        description=(
            "Get the user who really created a deal (name, email, role, team), which may "
            "differ from its current owner."
        ),
    ),
    Endpoint(
        name="get_deal_full_field",
        method="GET",
        path=API + "/deals/{id}/full-field",
        input_model=inputs.ById,
        kind=Kind.READ,
        resource=DEAL,
        response_shape=RECORD,
        description=(
            "Get a deal by id with every field resolved to readable values, as in an export: "
            "owner, pipeline and stage names, contacts, products, notes and check-ins."
        ),
    ),
    Endpoint(
        name="get_deal_permissions",
        method="POST",
        path=API + "/deals/deal_permission",
        input_model=inputs.DealPermissionsInput,
        kind=Kind.REPLACE,
        resource=DEAL,
        response_shape=RECORD,
        description=(
            "Set who may access a deal: for each user email, the access types granted "
            "(view, edit, search_association); types left out are revoked for that user. "
            "Despite its name this changes permissions; Qontak has no call that only reads "
            "them. Returns the permissions applied."
        ),
    ),
    Endpoint(
        name="update_deal_owner",
        method="PUT",
        path=API + "/deals/{id}/update_owner",
        input_model=inputs.OwnerChange,
        kind=Kind.UPDATE,
        resource=DEAL,
        description=(
            "Give a deal to another owner: creator_id is a user id from the creator_id "
            "options of get_deal_template. " + _update_note(DEAL)
        ),
    ),
    # Tasks
    Endpoint(
        name="get_task_template",
        method="GET",
        path=API + "/tasks/info",
        input_model=inputs.NoArguments,
        kind=Kind.READ,
        resource=TASK,
        response_shape=RECORDS,
        description=(
            "Get the task template: every task field of this account, standard and custom, "
            "with its type and options (statuses, priorities, categories, assignees, checklist "
            "items). For what create_task accepts, prefer get_required_fields_for_task."
        ),
    ),
    Endpoint(
        name="get_required_fields_for_task",
        method="GET",
        path=API + "/tasks/info",
        input_model=inputs.NoArguments,
        kind=Kind.READ,
        resource=TASK,
        response_shape=FIELDS_SHAPE,
        presenter=FieldDiscovery(
            "task",
            "create_task",
            inputs.TaskFields,
            aliases={
                "crm_person": "crm_person_id",
                "crm_company": "crm_company_id",
                "crm_deal": "crm_deal_id",
                "crm_task_attachment": "attachment",
            },
        ),
        description=(
            "List the fields create_task requires and accepts on this account, computed from "
            "the live task template: for each, the argument to use, its type, the custom field "
            "id and the allowed options (statuses, priorities, categories, assignees)."
        ),
    ),
    Endpoint(
        name="list_tasks",
        method="GET",
        path=API + "/tasks",
        input_model=inputs.ListTasksInput,
        kind=Kind.READ,
        resource=TASK,
        response_shape=RECORDS,
        description=(
            'List tasks; filter takes Qontak\'s task filter (the collection documents "alltask"). '
            "Paginate with page and per_page (max 100)."
        ),
    ),
    Endpoint(
        name="get_task",
        method="GET",
        path=API + "/tasks/{id}",
        input_model=inputs.ById,
        kind=Kind.READ,
        resource=TASK,
        response_shape=RECORD,
        description=(
            "Get one task by id: status, priority, category, assignee, due date and the "
            "contact, company or deal it belongs to."
        ),
    ),
    Endpoint(
        name="create_task",
        method="POST",
        path=API + "/tasks",
        input_model=inputs.TaskFields,
        kind=Kind.CREATE,
        resource=TASK,
        response_shape=RECORD,
        description=(
            "Create a task, optionally for a contact (crm_person_id), company or deal. Status, "
            "priority, category and assignee ids come from get_required_fields_for_task. "
            "Returns the new task with its id."
        ),
    ),
    Endpoint(
        name="update_task",
        method="PUT",
        path=API + "/tasks/{id}",
        input_model=inputs.UpdateTaskInput,
        kind=Kind.UPDATE,
        resource=TASK,
        response_shape=RECORD,
        description=(
            "Update fields of an existing task by id, e.g. mark it done with "
            "crm_task_status_id; fields left out are unchanged. Returns the task."
        ),
    ),
    Endpoint(
        name="delete_task",
        method="DELETE",
        path=API + "/tasks/{id}",
        input_model=inputs.ById,
        kind=Kind.DELETE,
        resource=TASK,
        description="Delete a task by id. This cannot be undone.",
    ),
    Endpoint(
        name="list_task_categories",
        method="GET",
        path=API + "/tasks/category",
        input_model=inputs.NoArguments,
        kind=Kind.READ,
        resource=TASK_CATEGORY,
        response_shape=RECORDS,
        description="List the task categories of this account (ids for crm_task_category_id).",
    ),
    Endpoint(
        name="create_task_category",
        method="POST",
        path=API + "/tasks/category",
        input_model=inputs.CreateTaskCategoryInput,
        kind=Kind.CREATE,
        resource=TASK_CATEGORY,
        response_shape=RECORD,
        description="Create a task category by name. Returns the new category with its id.",
    ),
    Endpoint(
        name="delete_task_category",
        method="DELETE",
        path=API + "/tasks/category/{id}",
        input_model=inputs.ById,
        kind=Kind.DELETE,
        resource=TASK_CATEGORY,
        description="Delete a task category by id. This cannot be undone.",
    ),
    # Tickets
    Endpoint(
        name="get_ticket_template",
        method="GET",
        path=API + "/tickets/info",
        input_model=inputs.NoArguments,
        kind=Kind.READ,
        resource=TICKET,
        response_shape=RECORDS,
        description=(
            "Get the ticket template: every ticket field of this account, standard and "
            "custom, with its type, options and the pipelines where it is required or shown. "
            "For one pipeline, prefer get_required_fields_for_ticket."
        ),
    ),
    Endpoint(
        name="get_required_fields_for_ticket",
        method="GET",
        path=API + "/tickets/info",
        input_model=inputs.TicketFieldsContext,
        kind=Kind.READ,
        resource=TICKET,
        response_shape=FIELDS_SHAPE,
        local_fields=("pipeline_id",),
        presenter=FieldDiscovery(
            "ticket",
            "create_ticket",
            inputs.TicketFields,
            context_arguments={"pipeline_id": "ticket_pipeline_id"},
        ),
        description=(
            "List the fields a ticket needs in a given ticket pipeline (requiredness and "
            "visibility depend on it), computed from the live ticket template: for each, the "
            "create_ticket argument, its type, the custom field id and the allowed options, "
            "stages included. Get pipeline_id from get_ticket_pipelines."
        ),
    ),
    Endpoint(
        name="list_tickets",
        method="GET",
        path=API + "/tickets",
        input_model=inputs.Paginated,
        kind=Kind.READ,
        resource=TICKET,
        response_shape=RECORDS,
        description="List tickets. Paginate with page and per_page (max 100).",
    ),
    Endpoint(
        name="get_ticket",
        method="GET",
        path=API + "/tickets/{id}",
        input_model=inputs.ById,
        kind=Kind.READ,
        resource=TICKET,
        response_shape=RECORD,
        description=(
            "Get one ticket by id: pipeline and stage, priority, category, assignee, due date, "
            "linked contacts, company, products and tasks."
        ),
    ),
    Endpoint(
        name="get_ticket_pipelines",
        method="GET",
        path=API + "/tickets/ticket_pipelines",
        input_model=inputs.NoArguments,
        kind=Kind.READ,
        resource=TICKET_PIPELINE,
        response_shape=RECORDS,
        description=(
            "List the ticket pipelines with their stages (ids for ticket_pipeline_id and "
            "ticket_stage_id)."
        ),
    ),
    Endpoint(
        name="create_ticket",
        method="POST",
        path=API + "/tickets",
        input_model=inputs.TicketFields,
        kind=Kind.CREATE,
        resource=TICKET,
        response_shape=RECORD,
        description=(
            "Create a ticket in a pipeline stage (ticket_pipeline_id, ticket_stage_id). Which "
            "fields are required depends on the pipeline: call get_required_fields_for_ticket "
            "first. Returns the new ticket with its id."
        ),
    ),
    Endpoint(
        name="update_ticket",
        method="PUT",
        path=API + "/tickets/{id}",
        input_model=inputs.UpdateTicketInput,
        kind=Kind.UPDATE,
        resource=TICKET,
        response_shape=RECORD,
        description=(
            "Update fields of an existing ticket by id, e.g. move it with ticket_stage_id; "
            "fields left out are unchanged. Returns the ticket."
        ),
    ),
    Endpoint(
        name="delete_ticket",
        method="DELETE",
        path=API + "/tickets/{id}",
        input_model=inputs.ById,
        kind=Kind.DELETE,
        resource=TICKET,
        description="Delete a ticket by id. This cannot be undone.",
    ),
    # Products
    Endpoint(
        name="list_products",
        method="GET",
        path=API + "/products",
        input_model=inputs.SearchPaginated,
        kind=Kind.READ,
        resource=PRODUCT,
        response_shape=RECORDS,
        description=(
            "List the product catalogue, optionally matching part of a name (query). Paginate "
            "with page and per_page (max 100)."
        ),
    ),
    Endpoint(
        name="get_product",
        method="GET",
        path=API + "/products/{id}",
        input_model=inputs.ById,
        kind=Kind.READ,
        resource=PRODUCT,
        response_shape=RECORD,
        description="Get one catalogue product by id: price, currency, quantity, custom fields.",
    ),
    Endpoint(
        name="create_product",
        method="POST",
        path=API + "/products",
        input_model=inputs.ProductFields,
        kind=Kind.CREATE,
        resource=PRODUCT,
        response_shape=RECORD,
        description=(
            "Add a product to the catalogue (name, currency, price, quantity, discount, "
            "total_price). To put a product on a deal, use create_products_association. "
            "Returns the new product with its id."
        ),
    ),
    Endpoint(
        name="update_product",
        method="PUT",
        path=API + "/products/{id}",
        input_model=inputs.UpdateProductInput,
        kind=Kind.UPDATE,
        resource=PRODUCT,
        description=(
            "Update fields of a catalogue product by id; fields left out are unchanged. "
            + _update_note(PRODUCT)
        ),
    ),
    Endpoint(
        name="delete_product",
        method="DELETE",
        path=API + "/products/{id}",
        input_model=inputs.ById,
        kind=Kind.DELETE,
        resource=PRODUCT,
        description="Delete a catalogue product by id. This cannot be undone.",
    ),
    # Products on deals
    Endpoint(
        name="list_products_associations",
        method="GET",
        path=API + "/products_association",
        input_model=inputs.ListProductsAssociationsInput,
        kind=Kind.READ,
        resource=PRODUCTS_ASSOCIATION,
        response_shape=RECORDS,
        description=(
            "List products placed on deals (line items), optionally those of one deal "
            "(crm_deal_id) or matching part of a name (query). Paginate with page and per_page "
            "(max 100)."
        ),
    ),
    Endpoint(
        name="get_products_association",
        method="GET",
        path=API + "/products_association/{id}",
        input_model=inputs.ById,
        kind=Kind.READ,
        resource=PRODUCTS_ASSOCIATION,
        response_shape=RECORD,
        description="Get one product line of a deal by id: product, deal, price and quantity.",
    ),
    Endpoint(
        name="create_products_association",
        method="POST",
        path=API + "/products_association",
        input_model=inputs.ProductsAssociationFields,
        kind=Kind.CREATE,
        resource=PRODUCTS_ASSOCIATION,
        response_shape=RECORD,
        description=(
            "Put a catalogue product (crm_product_id, from list_products) on a deal "
            "(crm_deal_id) with its price, quantity and discount. Returns the new line with "
            "its id."
        ),
    ),
    Endpoint(
        name="update_products_association",
        method="PUT",
        path=API + "/products_association/{id}",
        input_model=inputs.UpdateProductsAssociationInput,
        kind=Kind.UPDATE,
        resource=PRODUCTS_ASSOCIATION,
        description=(
            "Update a product line of a deal by id (price, quantity, discount); fields left "
            "out are unchanged. Qontak answers without the line: call get_products_association "
            "to see it."
        ),
    ),
    Endpoint(
        name="delete_products_association",
        method="DELETE",
        path=API + "/products_association/{id}",
        input_model=inputs.ById,
        kind=Kind.DELETE,
        resource=PRODUCTS_ASSOCIATION,
        description=(
            "Remove a product line from its deal by id (the catalogue product stays). This "
            "cannot be undone."
        ),
    ),
    # Notes
    Endpoint(
        name="list_notes",
        method="GET",
        path=API + "/notes",
        input_model=inputs.ListNotesInput,
        kind=Kind.READ,
        resource=NOTE,
        response_shape=RECORDS,
        description=(
            "List the notes of a contact (crm_lead_id), company (crm_company_id) or deal "
            "(crm_deal_id). Give one of them: if several are given Qontak applies only the "
            "first, in that order."
        ),
    ),
    Endpoint(
        name="get_note",
        method="GET",
        path=API + "/notes/{id}",
        input_model=inputs.ById,
        kind=Kind.READ,
        resource=NOTE,
        response_shape=RECORD,
        description="Get one note by id, with the contact, company or deal it is about.",
    ),
    Endpoint(
        name="create_note",
        method="POST",
        path=API + "/notes/",
        input_model=inputs.NoteFields,
        kind=Kind.CREATE,
        resource=NOTE,
        response_shape=RECORD,
        description=(
            "Write a note on a contact (crm_person_id), company (crm_company_id) or deal "
            '(crm_deal_id); type names which, e.g. "Crm::PersonNote". Returns the new note '
            "with its id."
        ),
    ),
    Endpoint(
        name="update_note",
        method="PUT",
        path=API + "/notes/{id}",
        input_model=inputs.UpdateNoteInput,
        kind=Kind.UPDATE,
        resource=NOTE,
        description=("Update a note by id; fields left out are unchanged. " + _update_note(NOTE)),
    ),
    Endpoint(
        name="delete_note",
        method="DELETE",
        path=API + "/notes/{id}",
        input_model=inputs.ById,
        kind=Kind.DELETE,
        resource=NOTE,
        description="Delete a note by id. This cannot be undone.",
    ),
    # Deal pipelines
    Endpoint(
        name="list_pipelines",
        method="GET",
        path=API + "/pipelines",
        input_model=inputs.NoArguments,
        kind=Kind.READ,
        resource=PIPELINE,
        response_shape=RECORDS,
        description="List the deal pipelines of this account (ids for crm_pipeline_id).",
    ),
    Endpoint(
        name="get_pipeline",
        method="GET",
        path=API + "/pipelines/{id}",
        input_model=inputs.ById,
        kind=Kind.READ,
        resource=PIPELINE,
        response_shape=RECORD,
        description=(
            "Get one deal pipeline by id: its name and whether it is active. Its stages come "
            "from list_pipeline_stages."
        ),
    ),
    Endpoint(
        name="list_pipeline_stages",
        method="GET",
        path=API + "/pipelines/{pipeline_id}/stages",
        input_model=inputs.PipelineStagesInput,
        kind=Kind.READ,
        resource=PIPELINE,
        response_shape=RECORDS,
        description=(
            "List the stages of a deal pipeline in order, with their win probability (ids for "
            "crm_stage_id)."
        ),
    ),
    # Geolocations (field check-ins)
    Endpoint(
        name="list_geolocations",
        method="GET",
        path=API + "/geolocations",
        input_model=inputs.Paginated,
        kind=Kind.READ,
        resource=GEOLOCATION,
        response_shape=RECORDS,
        description=(
            "List recorded geolocations (field check-ins and check-outs by device and "
            "journey). Paginate with page and per_page (max 100)."
        ),
    ),
    Endpoint(
        name="get_geolocation",
        method="GET",
        path=API + "/geolocations/{id}",
        input_model=inputs.ById,
        kind=Kind.READ,
        resource=GEOLOCATION,
        response_shape=RECORD,
        description=(
            "Get one recorded geolocation by id: device, journey, date and its check-in and "
            "check-out."
        ),
    ),
    Endpoint(
        name="create_geolocation",
        method="POST",
        path=API + "/geolocations",
        input_model=inputs.GeolocationFields,
        kind=Kind.CREATE,
        resource=GEOLOCATION,
        response_shape=RECORD,
        description=(
            "Record a geolocation: latitude, longitude, device_id, checkin_timestamps (Unix "
            "seconds), journey_id, battery_percentage. Returns it with its id."
        ),
    ),
    Endpoint(
        name="update_geolocation",
        method="PUT",
        path=API + "/geolocations/{id}",
        input_model=inputs.UpdateGeolocationInput,
        kind=Kind.UPDATE,
        resource=GEOLOCATION,
        response_shape=RECORD,
        description=(
            "Update a recorded geolocation by id; fields left out are unchanged. Returns it."
        ),
    ),
)

ENDPOINTS_BY_NAME: dict[str, Endpoint] = {endpoint.name: endpoint for endpoint in ENDPOINTS}
