"""get_approval_status: the one tool that is ours rather than Qontak's, so an assistant whose
call is held can learn the decision without calling the held tool again."""

from __future__ import annotations

from typing import Any

from mcp_types import ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field

NAME = "get_approval_status"


class ApprovalStatusInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    approval_id: int = Field(gt=0, description="The id a held call's result gave.")


class ApprovalStatusTool:
    """Shaped like qontak.endpoints.Endpoint where tools/list and the pipeline read one."""

    name = NAME
    description = (
        "Whether a tool call that waits for a person's approval was approved, rejected (and "
        "why) or expired. After approval, call the held tool again with the same arguments to "
        "run it; it runs once."
    )
    input_model = ApprovalStatusInput
    output_schema: dict[str, Any] = {
        "type": "object",
        "properties": {"approval": {"type": "object"}},
        "required": ["approval"],
    }
    annotations = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True)


APPROVAL_STATUS_TOOL = ApprovalStatusTool()
