"""One account's CRM data and the list semantics (filters, pagination, validation) over it."""

from __future__ import annotations

import copy
import math
import re
import uuid
from collections.abc import Collection, Mapping
from datetime import date, datetime
from typing import Any

from devtools.simulator.catalog import (
    DEFAULT_OWNER_ID,
    SERVER_ASSIGNED,
    Record,
    ResourceModel,
)
from devtools.simulator.envelope import ApiError, not_found, now_iso, validation_error
from devtools.simulator.resources import (
    DEFAULT_PER_PAGE,
    MAX_PER_PAGE,
    PAGINATION_KEYS,
    Filter,
    Match,
)

_NOT_SLUG = re.compile(r"[^a-z0-9]+")


def _id_number(value: Any) -> int:
    text = str(value)
    return int(text) if text.isdigit() else 0


class RecordStore:
    """A private deep copy of the seeds per account, so one tenant never sees another's data.

    Ids keep growing after deletes (max id ever seen + 1), like a database sequence, so a
    deleted id is never handed out again.
    """

    def __init__(self, models: Mapping[str, ResourceModel]) -> None:
        self.models = models
        self._records: dict[str, list[Record]] = {
            name: copy.deepcopy(list(model.seeds)) for name, model in models.items()
        }
        self._last_ids: dict[str, int] = {
            name: max((_id_number(r.get("id")) for r in records), default=0)
            for name, records in self._records.items()
        }

    def records(self, resource: str) -> list[Record]:
        return self._records[resource]

    def find(self, resource: str, record_id: str) -> Record | None:
        return next((r for r in self._records[resource] if str(r.get("id")) == record_id), None)

    def get(self, resource: str, record_id: str) -> Record:
        record = self.find(resource, record_id)
        if record is None:
            raise not_found(self.models[resource].spec.label, record_id)
        return record

    def add(self, resource: str, record: Record) -> Record:
        self._last_ids[resource] += 1
        next_id = self._last_ids[resource]
        record["id"] = str(next_id) if self.models[resource].text_ids else next_id
        self._records[resource].append(record)
        return record

    def remove(self, resource: str, record_id: str) -> None:
        record = self.get(resource, record_id)
        self._records[resource].remove(record)


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def missing_fields(
    model: ResourceModel, values: Record, *, only: Collection[str] | None = None
) -> list[str]:
    """Required fields that are blank; ``only`` limits the check to the fields being changed."""
    required = list(model.required)
    pipeline_field = model.spec.pipeline_field
    pipeline = values.get(pipeline_field) if pipeline_field else None
    if pipeline is not None:
        required += [name for name, ids in model.pipeline_required if str(pipeline) in ids]
    return [
        name
        for name in dict.fromkeys(required)
        if (only is None or name in only) and _is_blank(values.get(name))
    ]


def validate(model: ResourceModel, values: Record, *, only: Collection[str] | None = None) -> None:
    missing = missing_fields(model, values, only=only)
    if missing:
        raise validation_error([{"field": name, "message": "can't be blank"} for name in missing])


def _slug(record: Record) -> str:
    title = record.get("name") or " ".join(
        str(record.get(k) or "") for k in ("first_name", "last_name")
    )
    base = _NOT_SLUG.sub("-", str(title).lower()).strip("-") or "record"
    return f"{base}-{uuid.uuid4().hex[:8]}"


def new_record(model: ResourceModel, body: Record) -> Record:
    """A record shaped like the collection's examples, with the body merged on top."""
    record = copy.deepcopy(model.blank)
    record.update({k: v for k, v in body.items() if k not in SERVER_ASSIGNED})
    stamp = now_iso()
    for key in ("created_at", "updated_at"):
        if key in model.blank:
            record[key] = stamp
    if "slug" in model.blank:
        record["slug"] = _slug(record)
    if "creator_id" in model.blank and record.get("creator_id") is None:
        record["creator_id"] = DEFAULT_OWNER_ID  # "the current user", per the collection
    return record


def merge(record: Record, changes: Record) -> Record:
    record.update({k: v for k, v in changes.items() if k not in SERVER_ASSIGNED})
    if "updated_at" in record:
        record["updated_at"] = now_iso()
    return record


def _parse_day(text: str, fmt: str) -> date | None:
    try:
        return datetime.strptime(text, fmt).date()
    except ValueError:
        return None


def _matches(record: Record, flt: Filter, value: str) -> bool:
    if flt.match is Match.IGNORED:
        return True
    if flt.match is Match.TEXT:
        haystack = " ".join(str(record.get(f) or "") for f in flt.fields).lower()
        return value.lower() in haystack
    if flt.match is Match.ANY_OF:
        wanted = {part.strip() for part in value.split(",") if part.strip()}
        for field in flt.fields:
            current = record.get(field)
            items = current if isinstance(current, list) else [current]
            if wanted & {str(item) for item in items if item is not None}:
                return True
        return False
    since = _parse_day(value, "%d-%m-%Y")
    if since is None:
        raise validation_error([{"field": flt.param, "message": "must be a dd-mm-yyyy date"}])
    day = _parse_day(str(record.get(flt.fields[0]) or "")[:10], "%Y-%m-%d")
    return day is not None and day >= since


def select(model: ResourceModel, records: list[Record], query: Mapping[str, str]) -> list[Record]:
    """Apply the documented filters present in the query (empty values are ignored)."""
    active = [f for f in model.spec.filters if query.get(f.param, "").strip()]
    if model.spec.first_filter_only:
        active = active[:1]
    return [r for r in records if all(_matches(r, f, query[f.param].strip()) for f in active)]


def _positive_int(query: Mapping[str, str], name: str, default: int) -> int:
    raw = query.get(name, "").strip()
    if not raw:
        return default
    try:
        number = int(raw)
    except ValueError:
        number = 0
    if number < 1:
        raise validation_error([{"field": name, "message": "must be an integer >= 1"}])
    return number


def paginate(
    model: ResourceModel, records: list[Record], query: Mapping[str, str]
) -> tuple[list[Record], dict[str, Any]]:
    """One page plus the counters the collection's list example shows, under its own names.

    Lists whose example has no counters (notes, pipelines, task categories) are returned
    whole, as the collection documents them.
    """
    if not model.pagination_keys:
        return records, {}
    page = _positive_int(query, "page", 1)
    per_page = min(_positive_int(query, "per_page", DEFAULT_PER_PAGE), MAX_PER_PAGE)
    chunk = records[(page - 1) * per_page : page * per_page]
    values = {
        "page": page,
        "total_pages": max(1, math.ceil(len(records) / per_page)),
        "count": len(chunk),
        "total": len(records),
    }
    return chunk, {key: values[PAGINATION_KEYS[key]] for key in model.pagination_keys}


def require_object(body: Any) -> Record:
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "The request body must be a JSON object")
    return body
