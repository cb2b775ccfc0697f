"""Pydantic input models for the Qontak tools: what an assistant may send, and the rules.

Path ids are positive integers, pagination is bounded, unknown fields are refused (a typo
should be an error the model can fix, not a silently dropped filter).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

PositiveId = Annotated[int, Field(ge=1, description="Qontak record id (a positive integer).")]
Page = Annotated[int, Field(ge=1, description="Page number, from 1.")]
PerPage = Annotated[int, Field(ge=1, le=100, description="Records per page, 1 to 100.")]
DayMonthYear = Annotated[
    str, Field(pattern=r"^\d{2}-\d{2}-\d{4}$", description="A date written dd-mm-yyyy.")
]


class ToolInput(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class AdditionalField(ToolInput):
    """A custom field value; ids and names come from the resource's template (`get_*_template`)."""

    id: PositiveId
    name: str | None = None
    value: str | int | float | bool | None = None
    value_name: str | None = None


class ById(ToolInput):
    id: PositiveId


class Paginated(ToolInput):
    page: Page = 1
    per_page: PerPage = 25


class ListContactsInput(Paginated):
    name: str | None = Field(None, description="Part of the contact's name.")
    job_title: str | None = None
    phone: str | None = None
    email: str | None = None
    crm_company_id: PositiveId | None = None
    crm_deal_id: PositiveId | None = None
    crm_status_id: PositiveId | None = None
    created_after: DayMonthYear | None = None


class ContactFields(ToolInput):
    last_name: str | None = None
    job_title: str | None = None
    creator_id: PositiveId | None = Field(
        None, description="Owner user id; see the creator_id dropdown of get_contact_template."
    )
    email: str | None = None
    telephone: str | None = None
    crm_status_id: PositiveId | None = None
    address: str | None = None
    country: str | None = None
    province: str | None = None
    city: str | None = None
    zipcode: str | None = None
    date_of_birth: str | None = Field(None, description="yyyy-mm-dd.")
    crm_source_id: PositiveId | None = None
    crm_gender_id: PositiveId | None = None
    customer_id: str | None = None
    crm_company_id: PositiveId | None = None
    crm_deal_ids: list[PositiveId] | None = None
    additional_fields: list[AdditionalField] | None = None


class CreateContactInput(ContactFields):
    first_name: str = Field(min_length=1, description="Required by Qontak.")


class UpdateContactInput(ContactFields):
    id: PositiveId
    first_name: str | None = Field(None, min_length=1)
