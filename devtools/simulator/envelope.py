"""Qontak's response envelope: ``{"meta": {...}, "response": ...}`` on success and failure.

Clients read ``meta.status`` and ``meta.developer_message``, so errors carry the same meta
shape as the collection's success examples, with a fresh timestamp and log id each time.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

INFO_URL = "https://developers.qontak.com/docs/api/response-codes#{status}"


def now_iso() -> str:
    """A timestamp in the collection's format, e.g. ``2021-07-20T00:00:00.000+00:00``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def meta(
    status: int = 200,
    *,
    error_code: str | None = None,
    developer_message: str = "Success",
    message: str = "Success",
) -> dict[str, Any]:
    return {
        "status": status,
        "type": HTTPStatus(status).phrase,
        "error_code": error_code,
        "info": INFO_URL.format(status=status),
        "developer_message": developer_message,
        "message": message,
        "timestamp": now_iso(),
        "log_id": str(uuid.uuid4()),
    }


def success(response: Any = None, *, with_response: bool = True, **extra: Any) -> dict[str, Any]:
    """A 200 body; ``with_response=False`` gives the meta-only body some writes return."""
    body: dict[str, Any] = {"meta": meta()}
    if with_response:
        body["response"] = response
    body.update(extra)
    return body


def failure(
    status: int,
    error_code: str,
    developer_message: str,
    *,
    message: str | None = None,
    errors: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "meta": meta(
            status,
            error_code=error_code,
            developer_message=developer_message,
            message=message if message is not None else HTTPStatus(status).phrase,
        )
    }
    if errors is not None:
        body["errors"] = errors
    return body


class ApiError(Exception):
    """Raised by handlers; the app turns it into a :func:`failure` body."""

    def __init__(
        self,
        status: int,
        error_code: str,
        developer_message: str,
        *,
        message: str | None = None,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(developer_message)
        self.status = status
        self.headers = headers or {}
        self.body = failure(status, error_code, developer_message, message=message, errors=errors)


def not_found(label: str, record_id: str) -> ApiError:
    return ApiError(404, "not_found", f"{label} with id {record_id} not found")


def validation_error(errors: list[dict[str, str]]) -> ApiError:
    """422 listing every problem, e.g. ``first_name can't be blank``."""
    sentence = ", ".join(f"{e['field']} {e['message']}" for e in errors)
    return ApiError(422, "validation_error", sentence, message=sentence, errors=errors)
