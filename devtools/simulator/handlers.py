"""One handler per route kind: every route of the table is served by one of these.

Handlers run under the state lock and return the 200 body; failures are raised as ApiError.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devtools.simulator.catalog import Kind, ResourceModel, Route
from devtools.simulator.envelope import success, validation_error
from devtools.simulator.records import (
    RecordStore,
    merge,
    new_record,
    paginate,
    require_object,
    select,
    validate,
)


@dataclass(frozen=True)
class Call:
    route: Route
    model: ResourceModel
    store: RecordStore
    params: dict[str, str]
    query: dict[str, str]
    body: Any

    @property
    def resource(self) -> str:
        return self.model.spec.path

    @property
    def record_id(self) -> str:
        return self.params[self.route.id_param or "id"]


Handler = Callable[[Call], dict[str, Any]]


def serve_example(call: Call) -> dict[str, Any]:
    """The collection's example payload under a fresh meta (``/info`` templates, etc.)."""
    example = call.route.example if isinstance(call.route.example, dict) else {}
    return success(copy.deepcopy(example.get("response")), with_response="response" in example)


def serve_record_example(call: Call) -> dict[str, Any]:
    """Like serve_example, but only about a record that exists (else 404)."""
    call.store.get(call.resource, call.record_id)
    return serve_example(call)


def list_records(call: Call) -> dict[str, Any]:
    matching = select(call.model, call.store.records(call.resource), call.query)
    page, counters = paginate(call.model, matching, call.query)
    return success(copy.deepcopy(page), **counters)


def read_record(call: Call) -> dict[str, Any]:
    """The record, in the shape the collection documents for the route: an object, or (as for
    "Get Single Contact") an array holding the record. Clients must take both."""
    record = copy.deepcopy(call.store.get(call.resource, call.record_id))
    return success([record] if call.route.answers_with_a_list else record)


def create_record(call: Call) -> dict[str, Any]:
    body = require_object(call.body)
    validate(call.model, body)
    record = call.store.add(call.resource, new_record(call.model, body))
    return success(copy.deepcopy(record))


def update_record(call: Call) -> dict[str, Any]:
    """Merge the body; required fields may be left out but not blanked."""
    record = call.store.get(call.resource, call.record_id)
    body = require_object(call.body)
    validate(call.model, {**record, **body}, only=body.keys())
    merge(record, body)
    return success(copy.deepcopy(record), with_response=call.route.answers_with_record)


def update_owner(call: Call) -> dict[str, Any]:
    """The collection: "Will return error if creator_id is null or invalid"."""
    record = call.store.get(call.resource, call.record_id)
    owner = require_object(call.body).get("creator_id")
    if owner is None or owner == "":
        raise validation_error([{"field": "creator_id", "message": "can't be blank"}])
    merge(record, {"creator_id": owner})
    return success(copy.deepcopy(record), with_response=call.route.answers_with_record)


def delete_record(call: Call) -> dict[str, Any]:
    call.store.remove(call.resource, call.record_id)
    return success(with_response=False)


HANDLERS: dict[Kind, Handler] = {
    Kind.INFO: serve_example,
    Kind.EXAMPLE: serve_example,
    Kind.RECORD_EXAMPLE: serve_record_example,
    Kind.LIST: list_records,
    Kind.READ: read_record,
    Kind.CREATE: create_record,
    Kind.UPDATE: update_record,
    Kind.UPDATE_OWNER: update_owner,
    Kind.DELETE: delete_record,
}
