"""Pydantic input models for the Qontak tools: what an assistant may send, and the rules.

Path ids are positive 64-bit integers, pagination, lists and strings are bounded (what is sent
to Qontak and kept in the audit stays sane), unknown fields are refused (a typo should be an
error the model can fix, not a silently dropped filter). Bodies follow the
collection's example bodies minus the display-only `*_name` fields, which Qontak derives from
the ids. A field is required only where the collection says every record needs it; anything
that depends on the account (pipelines, custom fields) is left to Qontak's 422 and to the
`get_required_fields_for_*` tools.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# Qontak's ids are database integers: nothing above a signed 64-bit one can name a record.
MAX_ID = 2**63 - 1
MAX_STRING = 10_000
MAX_LIST = 500
PositiveId = Annotated[
    int, Field(ge=1, le=MAX_ID, description="Qontak record id (a positive integer).")
]
Page = Annotated[int, Field(ge=1, le=100_000, description="Page number, from 1.")]
PerPage = Annotated[int, Field(ge=1, le=100, description="Records per page, 1 to 100.")]
DayMonthYear = Annotated[
    str, Field(pattern=r"^\d{2}-\d{2}-\d{4}$", description="A date written dd-mm-yyyy.")
]
Amount = Annotated[float, Field(ge=0, le=1e15)]
Ids = Annotated[list[PositiveId], Field(max_length=MAX_LIST)]
Name = Annotated[str, Field(min_length=1)]


class ToolInput(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, str_max_length=MAX_STRING)


class NoArguments(ToolInput):
    """For tools that take nothing: any argument is a mistake worth reporting."""


class ById(ToolInput):
    id: PositiveId


class Paginated(ToolInput):
    page: Page = 1
    per_page: PerPage = 25


class AdditionalField(ToolInput):
    """A custom field value; ids and names come from the resource's template (`get_*_template`)."""

    id: PositiveId
    name: str | None = None
    value: (
        str | int | float | bool | Annotated[list[str | int], Field(max_length=MAX_LIST)] | None
    ) = Field(
        None,
        description=(
            "The value; for a dropdown the option id, for a multiple select the option ids "
            'joined by commas ("435,436").'
        ),
    )
    value_name: str | None = None


class WithAdditionalFields(ToolInput):
    additional_fields: list[AdditionalField] | None = Field(
        None,
        max_length=MAX_LIST,
        description=(
            "Custom fields as {id, value}; get_required_fields_for_* lists their ids and options."
        ),
    )


class OwnerChange(ById):
    creator_id: PositiveId = Field(
        description="The new owner's user id (the creator_id options of the resource's template)."
    )


# Pipelines and field discovery


class PipelineStagesInput(ToolInput):
    pipeline_id: PositiveId = Field(description="Deal pipeline id, from list_pipelines.")


class DealFieldsContext(ToolInput):
    """Deal requiredness depends on where the deal will sit; nothing here is sent to Qontak."""

    pipeline_id: PositiveId = Field(description="Deal pipeline id, from list_pipelines.")
    stage_id: PositiveId = Field(description="Stage id, from list_pipeline_stages.")


class TicketFieldsContext(ToolInput):
    """Ticket requiredness depends on the pipeline; nothing here is sent to Qontak."""

    pipeline_id: PositiveId = Field(description="Ticket pipeline id, from get_ticket_pipelines.")


# Contacts


class ListContactsInput(Paginated):
    name: str | None = Field(None, description="Part of the contact's name.")
    job_title: str | None = None
    phone: str | None = None
    email: str | None = None
    crm_company_id: PositiveId | None = None
    crm_deal_id: PositiveId | None = None
    crm_status_id: PositiveId | None = None
    created_after: DayMonthYear | None = None


class ContactFields(WithAdditionalFields):
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
    income: str | None = None
    upload_id: PositiveId | None = None
    customer_id: str | None = None
    crm_company_id: PositiveId | None = None
    crm_deal_ids: Ids | None = None


class CreateContactInput(ContactFields):
    first_name: str = Field(min_length=1, description="Required by Qontak.")


class UpdateContactInput(ContactFields):
    id: PositiveId
    first_name: str | None = Field(None, min_length=1)


# Companies


class ListCompaniesInput(Paginated):
    contact_ids: PositiveId | None = Field(None, description="Companies of this contact.")
    deal_ids: PositiveId | None = Field(None, description="Companies of this deal.")
    name: str | None = Field(None, description="Part of the company's name.")
    website: str | None = None


class CompanyFields(WithAdditionalFields):
    website: str | None = None
    creator_id: PositiveId | None = Field(
        None, description="Owner user id; see the creator_id dropdown of get_company_template."
    )
    telephone: str | None = None
    address: str | None = None
    country: str | None = None
    province: str | None = None
    city: str | None = None
    zipcode: str | None = None
    industry_id: PositiveId | None = None
    crm_type_id: PositiveId | None = None
    number_of_employees: Annotated[int, Field(ge=0)] | None = None
    crm_source_id: PositiveId | None = None
    annual_revenue: Amount | None = None
    business_reg_number: str | None = None
    crm_deal_ids: Ids | None = None
    crm_person_ids: Ids | None = Field(None, description="Contact ids.")
    ancestry: PositiveId | None = Field(None, description="Parent company id.")


class CreateCompanyInput(CompanyFields):
    name: Name = Field(description="Required by Qontak.")


class UpdateCompanyInput(CompanyFields):
    id: PositiveId
    name: Name | None = None


# Deals


class ListDealsInput(Paginated):
    name: str | None = Field(None, description="Part of the deal's name.")
    contact_ids: PositiveId | None = Field(None, description="Deals of this contact.")
    company_ids: PositiveId | None = Field(None, description="Deals of this company.")
    product_ids: PositiveId | None = Field(None, description="Deals with this product.")


class DealFields(WithAdditionalFields):
    name: Name | None = None
    currency: str | None = Field(None, description='e.g. "IDR".')
    size: Amount | None = Field(None, description="Deal value.")
    closed_date: str | None = None
    creator_id: PositiveId | None = Field(
        None, description="Owner user id; left out, Qontak uses the API user."
    )
    crm_source_id: PositiveId | None = None
    crm_lost_reason_id: PositiveId | None = None
    crm_pipeline_id: PositiveId | None = Field(None, description="From list_pipelines.")
    crm_stage_id: PositiveId | None = Field(None, description="From list_pipeline_stages.")
    start_date: str | None = None
    expired_date: str | None = None
    crm_priority_id: PositiveId | None = None
    crm_company_id: PositiveId | None = None
    crm_lead_ids: Ids | None = Field(None, description="Contact ids.")
    product_association_ids: Ids | None = None
    product_association_quantity: list[Amount] | None = None
    product_association_price: list[Amount] | None = None
    product_association_total_price: list[Amount] | None = None


class UpdateDealInput(DealFields):
    id: PositiveId


class DealUserPermission(ToolInput):
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$", description="The Qontak user's email.")
    access_types: list[Literal["view", "edit", "search_association"]] = Field(
        description="Access to grant; each type left out is revoked for this user."
    )


class DealPermissionsInput(ToolInput):
    id: PositiveId = Field(description="The deal id.")
    permissions: list[DealUserPermission] = Field(min_length=1)


# Tasks


class ListTasksInput(Paginated):
    filter: str | None = Field(None, description='Qontak\'s task filter, e.g. "alltask".')


class TaskFields(WithAdditionalFields):
    name: Name | None = None
    crm_person_id: PositiveId | None = Field(None, description="Contact id.")
    crm_deal_id: PositiveId | None = None
    crm_company_id: PositiveId | None = None
    crm_task_status_id: PositiveId | None = None
    user_id: PositiveId | None = Field(None, description="Assignee user id.")
    crm_task_priority_id: PositiveId | None = None
    crm_task_category_id: PositiveId | None = Field(None, description="From list_task_categories.")
    crm_team_ids: Ids | None = None
    due_date: str | None = None
    reminder_date: str | None = None
    detail: str | None = None
    crm_checkin_attributes: dict[str, Any] | None = None
    next_step: str | None = None
    attachment: str | None = None


class UpdateTaskInput(TaskFields):
    id: PositiveId


class CreateTaskCategoryInput(ToolInput):
    name: Name
    id: PositiveId | None = Field(None, description="Optional; the collection's example sends one.")


# Tickets


class TicketFields(WithAdditionalFields):
    name: Name | None = None
    user_id: PositiveId | None = Field(None, description="Assignee user id.")
    creator_id: PositiveId | None = Field(None, description="Owner user id.")
    ticket_pipeline_id: PositiveId | None = Field(None, description="From get_ticket_pipelines.")
    ticket_stage_id: PositiveId | None = Field(None, description="From get_ticket_pipelines.")
    ticket_priority_id: PositiveId | None = None
    ticket_category_id: PositiveId | None = None
    description: str | None = None
    due_date: str | None = None
    crm_company_id: PositiveId | None = None
    crm_lead_ids: Ids | None = Field(None, description="Contact ids.")
    crm_product_ids: Ids | None = None
    crm_task_ids: Ids | None = None


class UpdateTicketInput(TicketFields):
    id: PositiveId


# Products and their association with deals


class SearchPaginated(Paginated):
    query: str | None = Field(None, description="Part of the name.")


class ListProductsAssociationsInput(SearchPaginated):
    crm_deal_id: PositiveId | None = Field(None, description="Products of this deal.")


class ProductFields(WithAdditionalFields):
    name: Name | None = None
    currency: str | None = None
    price: Amount | None = None
    quantity: Amount | None = None
    discount: Amount | None = None
    total_price: Amount | None = None
    crm_tag_ids: Ids | None = None
    description: str | None = None
    product_image: str | None = None


class UpdateProductInput(ProductFields):
    id: PositiveId


class ProductsAssociationFields(ProductFields):
    crm_product_id: PositiveId | None = None
    crm_deal_id: PositiveId | None = None
    unit_quantity: Amount | None = None
    manufacturer: str | None = None


class UpdateProductsAssociationInput(ProductsAssociationFields):
    id: PositiveId


# Notes


class ListNotesInput(ToolInput):
    crm_lead_id: PositiveId | None = Field(None, description="Notes of this contact.")
    crm_company_id: PositiveId | None = Field(None, description="Notes of this company.")
    crm_deal_id: PositiveId | None = Field(None, description="Notes of this deal.")


class NoteFields(ToolInput):
    note: str | None = None
    type: str | None = Field(None, description='What the note is about, e.g. "Crm::PersonNote".')
    crm_person_id: PositiveId | None = Field(None, description="Contact id.")
    crm_deal_id: PositiveId | None = None
    crm_company_id: PositiveId | None = None
    creator_id: PositiveId | None = None
    last_modifier_id: PositiveId | None = None
    team_id: PositiveId | None = None
    organization_id: PositiveId | None = None


class UpdateNoteInput(NoteFields):
    id: PositiveId


# Geolocations (check-ins)


class GeolocationFields(ToolInput):
    latitude: Annotated[float, Field(ge=-90, le=90)] | None = None
    longitude: Annotated[float, Field(ge=-180, le=180)] | None = None
    device_id: str | None = None
    checkin_timestamps: Annotated[int, Field(ge=0)] | None = Field(
        None, description="Unix time in seconds."
    )
    orientation: str | None = None
    is_online: bool | None = None
    input_type: int | None = None
    local_id: int | None = None
    journey_id: str | None = None
    battery_percentage: Annotated[float, Field(ge=0, le=100)] | None = None


class UpdateGeolocationInput(GeolocationFields):
    id: PositiveId
