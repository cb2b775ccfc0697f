"""Required and optional fields for a create call, computed from Qontak's live `/info` template.

Templates say a field is required in the ways below, and each is read exactly as written:

- `required: true`: always (contacts, companies, custom fields); false or null: not required;
- `required_pipeline_ids` / `required_stage_ids` (deals): required in those pipelines and at
  those stages; an empty list sets no condition, both empty means never;
- `required_pipeline_ids` with `show_pipeline_ids` (tickets): required in, and shown in,
  those pipelines. A field that is neither required nor shown in the pipeline is reported
  under `not_shown` rather than offered as optional.

Dropdown options that belong to one pipeline (ticket stages carry `ticket_pipeline_id`) are
kept only for the requested pipeline; checklist items are offered as options too. Each field
is mapped to the create tool's argument that carries it, so the assistant never has to guess
how Qontak spells it in a request body.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

REQUIREDNESS_KEYS = ("required", "required_pipeline_ids", "required_stage_ids")
PIPELINE_OPTION_KEYS = ("ticket_pipeline_id", "crm_pipeline_id")

FIELD_SHAPE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"description": "Qontak's field name."},
        "label": {"description": "The name shown in Qontak's UI."},
        "type": {"description": 'Qontak\'s field type, e.g. "Dropdown select".'},
        "custom": {"type": "boolean", "description": "A custom field: send in additional_fields."},
        "id": {"description": "The custom field id for additional_fields."},
        "argument": {
            "type": ["string", "null"],
            "description": "The create tool's argument carrying it; null if it has none.",
        },
        "options": {
            "type": ["array", "null"],
            "items": {"type": "object"},
            "description": "Allowed values as {id, name}; pass the id.",
        },
    },
    "required": ["name", "label", "type", "custom", "id", "argument", "options"],
}

OUTPUT_SHAPE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "resource": {"type": "string"},
        "create_tool": {"type": "string"},
        "context_arguments": {
            "type": "object",
            "description": "Arguments the create call needs to match this pipeline and stage.",
        },
        "required": {"type": "array", "items": FIELD_SHAPE},
        "optional": {"type": "array", "items": FIELD_SHAPE},
        "not_shown": {"type": "array", "items": {"type": "string"}},
        "how_to_fill": {"type": "string"},
        "notes": {"type": "array", "items": {"type": "string"}},
    },
    "required": [
        "resource",
        "create_tool",
        "context_arguments",
        "required",
        "optional",
        "not_shown",
        "how_to_fill",
        "notes",
    ],
}


def _ids(values: Any) -> set[str]:
    return {str(value) for value in values} if isinstance(values, list) else set()


def field_is_required(template_field: Mapping[str, Any], pipeline_id: Any, stage_id: Any) -> bool:
    if template_field.get("required") is True:
        return True
    pipelines = _ids(template_field.get("required_pipeline_ids"))
    stages = _ids(template_field.get("required_stage_ids"))
    if not pipelines and not stages:
        return False
    in_pipeline = not pipelines or str(pipeline_id) in pipelines
    at_stage = not stages or str(stage_id) in stages
    return in_pipeline and at_stage


def field_is_shown(template_field: Mapping[str, Any], pipeline_id: Any) -> bool:
    shown_in = template_field.get("show_pipeline_ids")
    if pipeline_id is None or not isinstance(shown_in, list):
        return True
    return str(pipeline_id) in _ids(shown_in)


def field_options(
    template_field: Mapping[str, Any], pipeline_id: Any
) -> list[dict[str, Any]] | None:
    """The choices of a dropdown or checklist; None when the field has no fixed choices."""
    raw = template_field.get("dropdown") or [
        {"id": item.get("crm_additional_option_id"), "name": item.get("name")}
        for item in template_field.get("checklist_details_attributes") or []
        if isinstance(item, dict)
    ]
    if not isinstance(raw, list) or not raw:
        return None
    options = []
    for option in raw:
        if not isinstance(option, dict):
            continue
        owner = next((option[k] for k in PIPELINE_OPTION_KEYS if option.get(k) is not None), None)
        if pipeline_id is not None and owner is not None and str(owner) != str(pipeline_id):
            continue
        options.append({"id": option.get("id"), "name": option.get("name")})
    return options


@dataclass(frozen=True)
class FieldDiscovery:
    """The presenter of one `get_required_fields_for_*` tool.

    `aliases` maps template names that differ from the create tool's arguments (the contact
    template says `crm_phones`, the body says `telephone`); `context_arguments` maps the
    discovery input (pipeline_id, stage_id) to the create tool's arguments.
    """

    resource: str
    create_tool: str
    create_input: type[BaseModel]
    aliases: Mapping[str, str] = field(default_factory=dict)
    context_arguments: Mapping[str, str] = field(default_factory=dict)

    def __call__(self, template: Any, data: BaseModel) -> dict[str, Any]:
        pipeline_id = getattr(data, "pipeline_id", None)
        stage_id = getattr(data, "stage_id", None)
        fields = [f for f in template if isinstance(f, dict)] if isinstance(template, list) else []
        required: list[dict[str, Any]] = []
        optional: list[dict[str, Any]] = []
        not_shown: list[str] = []
        for template_field in fields:
            needed = field_is_required(template_field, pipeline_id, stage_id)
            if not needed and not field_is_shown(template_field, pipeline_id):
                not_shown.append(str(template_field.get("name")))
                continue
            (required if needed else optional).append(self._describe(template_field, pipeline_id))
        return {
            "resource": self.resource,
            "create_tool": self.create_tool,
            "context_arguments": {
                argument: getattr(data, name) for name, argument in self.context_arguments.items()
            },
            "required": required,
            "optional": optional,
            "not_shown": not_shown,
            "how_to_fill": (
                f"Call {self.create_tool} with each field under its `argument` (plus "
                "context_arguments); custom fields go in additional_fields as "
                '{"id": <id>, "value": ...}; a dropdown takes an option id, a multiple select '
                "option ids joined by commas. A field whose argument is null cannot be set "
                f"through {self.create_tool}."
            ),
            "notes": self._notes(fields),
        }

    def _describe(self, template_field: Mapping[str, Any], pipeline_id: Any) -> dict[str, Any]:
        name = template_field.get("name")
        custom = bool(template_field.get("additional_field"))
        return {
            "name": name,
            "label": template_field.get("name_alias"),
            "type": template_field.get("type"),
            "custom": custom,
            "id": template_field.get("id"),
            "argument": "additional_fields" if custom else self._argument(name),
            "options": field_options(template_field, pipeline_id),
        }

    def _argument(self, name: Any) -> str | None:
        if not isinstance(name, str):
            return None
        if name in self.create_input.model_fields:
            return name
        return self.aliases.get(name)

    def _notes(self, fields: list[dict[str, Any]]) -> list[str]:
        if not fields:
            return [f"Qontak returned an empty {self.resource} template."]
        if not any(key in f for f in fields for key in REQUIREDNESS_KEYS):
            return [
                f"The {self.resource} template marks no field as required; Qontak's answer to "
                f"{self.create_tool} is the authority."
            ]
        return []
