"""The Qontak API as data: one row per tool, consumed by one generic handler (pipeline).

A row names the tool, the HTTP method and path (with `{field}` placeholders filled from the
input), the input model, what kind of operation it is (which sets the MCP annotations) and a
description an assistant can act on. Input fields that are not in the path go to the query
string for GET and DELETE and to the JSON body for POST and PUT.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from mcp_types import ToolAnnotations
from pydantic import BaseModel

from mcpserver.qontak import inputs

API = "/api/v3.1"


class Kind(Enum):
    READ = "read"
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


ANNOTATIONS: dict[Kind, ToolAnnotations] = {
    Kind.READ: ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True),
    Kind.CREATE: ToolAnnotations(
        read_only_hint=False, destructive_hint=False, idempotent_hint=False
    ),
    Kind.UPDATE: ToolAnnotations(
        read_only_hint=False, destructive_hint=False, idempotent_hint=True
    ),
    Kind.DELETE: ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True),
}

RECORD = {"type": "object"}
RECORD_LIST = {"type": "array", "items": {"type": "object"}}


def _response_schema(shape: dict[str, Any] | None) -> dict[str, Any]:
    """structuredContent is `{"response": <Qontak's response payload>}`."""
    properties = {"response": shape} if shape else {"response": {}}
    return {"type": "object", "properties": properties, "required": ["response"]}


@dataclass(frozen=True)
class Endpoint:
    name: str
    method: str
    path: str
    input_model: type[BaseModel]
    kind: Kind
    noun: str
    description: str
    response_shape: dict[str, Any] | None = None
    # Turns Qontak's `response` payload into the tool's (e.g. field discovery from templates).
    presenter: Callable[[Any, BaseModel], Any] | None = None

    def present(self, response: Any, data: BaseModel) -> Any:
        return response if self.presenter is None else self.presenter(response, data)

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
        values = data.model_dump(mode="json", exclude_none=True)
        path = self.path.format(**{field: values.pop(field) for field in self.path_fields})
        if self.method in ("GET", "DELETE"):
            return path, values or None, None
        return path, None, values


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        name="list_contacts",
        method="GET",
        path=f"{API}/contacts",
        input_model=inputs.ListContactsInput,
        kind=Kind.READ,
        noun="contacts",
        response_shape=RECORD_LIST,
        description=(
            "List contacts (people) in Qontak CRM, newest first, with optional filters by name, "
            "job title, phone, email, company, deal or status, and `created_after` (dd-mm-yyyy). "
            "Paginate with page and per_page (max 100)."
        ),
    ),
    Endpoint(
        name="get_contact",
        method="GET",
        path=f"{API}/contacts/{{id}}",
        input_model=inputs.ById,
        kind=Kind.READ,
        noun="contact",
        response_shape=RECORD,
        description="Get one contact by its id, with its custom (additional) fields.",
    ),
    Endpoint(
        name="create_contact",
        method="POST",
        path=f"{API}/contacts",
        input_model=inputs.CreateContactInput,
        kind=Kind.CREATE,
        noun="contact",
        response_shape=RECORD,
        description=(
            "Create a contact. first_name is required; call get_contact_template first to learn "
            "the owner (creator_id), status and custom field ids accepted by this account."
        ),
    ),
    Endpoint(
        name="update_contact",
        method="PUT",
        path=f"{API}/contacts/{{id}}",
        input_model=inputs.UpdateContactInput,
        kind=Kind.UPDATE,
        noun="contact",
        description="Update fields of an existing contact by id; fields left out are unchanged.",
    ),
    Endpoint(
        name="delete_contact",
        method="DELETE",
        path=f"{API}/contacts/{{id}}",
        input_model=inputs.ById,
        kind=Kind.DELETE,
        noun="contact",
        description="Delete a contact by id. This cannot be undone.",
    ),
)

ENDPOINTS_BY_NAME: dict[str, Endpoint] = {endpoint.name: endpoint for endpoint in ENDPOINTS}
