"""What the collection cannot say by itself: how each resource's documented filters behave.

Everything else about a resource (routes, seeds, record shape, required fields, templates)
is read from the collection; the catalog checks that every filter documented there has a row
here and that no row here is undocumented, so this table cannot drift from the collection.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Match(StrEnum):
    """How a query parameter selects records."""

    TEXT = "text"  # case-insensitive substring of the fields joined by spaces
    ANY_OF = "any_of"  # one of the comma-separated values equals the field (or a list item)
    DATE_FROM = "date_from"  # dd-mm-yyyy; the field's date is on or after it
    IGNORED = "ignored"  # documented, but the collection does not say what it selects


@dataclass(frozen=True)
class Filter:
    param: str
    fields: tuple[str, ...]
    match: Match


@dataclass(frozen=True)
class ResourceSpec:
    """A resource mounted at ``/api/v3.1/<path>``.

    ``first_filter_only`` reproduces the notes rule "if several are submitted, only one
    applies, in this priority order" (the order of ``filters``). ``pipeline_field`` names
    the body field that decides which ``required_pipeline_ids`` template rules apply.
    """

    path: str
    label: str
    filters: tuple[Filter, ...] = ()
    first_filter_only: bool = False
    pipeline_field: str | None = None


RESOURCES: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        "contacts",
        "Contact",
        filters=(
            Filter("name", ("first_name", "last_name"), Match.TEXT),
            Filter("job_title", ("job_title",), Match.TEXT),
            Filter("phone", ("telephone",), Match.TEXT),
            Filter("email", ("email",), Match.TEXT),
            Filter("crm_company_id", ("crm_company_id",), Match.ANY_OF),
            Filter("crm_deal_id", ("crm_deal_ids",), Match.ANY_OF),
            Filter("crm_status_id", ("crm_status_id",), Match.ANY_OF),
            Filter("created_after", ("created_at",), Match.DATE_FROM),
        ),
    ),
    ResourceSpec(
        "companies",
        "Company",
        filters=(
            Filter("contact_ids", ("crm_person_ids",), Match.ANY_OF),
            Filter("deal_ids", ("crm_deal_ids",), Match.ANY_OF),
            Filter("name", ("name",), Match.TEXT),
            Filter("website", ("website",), Match.TEXT),
        ),
    ),
    ResourceSpec(
        "deals",
        "Deal",
        filters=(
            Filter("name", ("name",), Match.TEXT),
            Filter("contact_ids", ("crm_lead_ids",), Match.ANY_OF),
            Filter("company_ids", ("crm_company_id",), Match.ANY_OF),
            # Deal records only expose their product associations, not product ids.
            Filter("product_ids", ("product_association_ids",), Match.ANY_OF),
        ),
        pipeline_field="crm_pipeline_id",
    ),
    ResourceSpec("tasks/category", "Task category"),
    ResourceSpec("tasks", "Task", filters=(Filter("filter", (), Match.IGNORED),)),
    ResourceSpec("tickets", "Ticket", pipeline_field="ticket_pipeline_id"),
    ResourceSpec("products", "Product", filters=(Filter("query", ("name",), Match.TEXT),)),
    ResourceSpec(
        "products_association",
        "Product association",
        filters=(
            Filter("crm_deal_id", ("crm_deal_id",), Match.ANY_OF),
            Filter("query", ("name",), Match.TEXT),
        ),
    ),
    ResourceSpec(
        "notes",
        "Note",
        filters=(
            Filter("crm_lead_id", ("crm_person_id",), Match.ANY_OF),
            Filter("crm_company_id", ("crm_company_id",), Match.ANY_OF),
            Filter("crm_deal_id", ("crm_deal_id",), Match.ANY_OF),
        ),
        first_filter_only=True,
    ),
    ResourceSpec("pipelines", "Pipeline"),
    ResourceSpec("geolocations", "Geolocation"),
)

# List examples name their pagination counters differently per resource; each key means:
PAGINATION_KEYS: dict[str, str] = {
    "page": "page",
    "current_page": "page",
    "total_page": "total_pages",
    "current_data": "count",
    "total_current_data": "count",
    "total_data": "total",
}
PAGE_PARAMS = ("page", "per_page")
DEFAULT_PER_PAGE = 25
MAX_PER_PAGE = 100
