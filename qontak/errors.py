"""Qontak's error answers, turned into messages a model can act on.

A message says what Qontak answered (status and `meta.developer_message`), what it means for
this call ("deal 42 not found", each field problem of a 422) and what to do next, naming the
tool that helps (`list_deals` for a valid id, `get_required_fields_for_deal` for fields).
"""

from __future__ import annotations

import re
import string
from http import HTTPStatus
from typing import Any

from qontak.client import QontakResponse
from qontak.endpoints import ENDPOINTS_BY_NAME, Endpoint, Kind


def _path_values(endpoint: Endpoint, path: str) -> dict[str, str]:
    """The path fields of a sent path, e.g. {"id": "42"} for /deals/42."""
    pattern = "".join(
        re.escape(literal) + (f"(?P<{field}>[^/]+)" if field else "")
        for literal, field, _, _ in string.Formatter().parse(endpoint.path)
    )
    match = re.fullmatch(pattern, path)
    return match.groupdict() if match else {}


def _words(text: str) -> set[str]:
    return set(re.findall(r"[\w']+", text.lower()))


def _field_problems(payload: dict[str, Any]) -> list[str]:
    errors = payload.get("errors")
    if not isinstance(errors, list):
        return []
    return [
        f"{error.get('field', '?')} {error.get('message', 'is invalid')}".strip()
        for error in errors
        if isinstance(error, dict)
    ]


def _summary(endpoint: Endpoint, status: int, path: str, problems: list[str], said: str) -> str:
    ids = _path_values(endpoint, path)
    if status == 404 and ids:
        return f"{endpoint.noun} {' '.join(ids.values())} not found"
    if status == 422 and problems:
        return "; ".join(problems)
    if said:
        return said
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _advice(endpoint: Endpoint, status: int, path: str) -> str:
    resource = endpoint.resource
    if status == 404:
        if _path_values(endpoint, path):
            return f"Call {resource.list_tool} to find a valid id."
        return "Check the ids in the arguments."
    if status == 422:
        discovery = f"get_required_fields_for_{resource.noun}"
        hint = (
            f" {discovery} lists the fields this account requires and their options."
            if discovery in ENDPOINTS_BY_NAME
            else ""
        )
        return f"Correct what Qontak reports and call {endpoint.name} again.{hint}"
    if status == 429:
        return "Qontak is rate limiting this account: wait a few seconds and retry."
    if status >= 500:
        if endpoint.kind is Kind.CREATE:
            return (
                f"Qontak failed; the {resource.noun} may have been created anyway: check with "
                f"{resource.list_tool} before retrying."
            )
        return "Qontak failed: retry in a little while."
    return {
        400: f"Check the arguments against {endpoint.name}'s input schema and call again.",
        401: (
            "Qontak refused the access token even after a refresh: an operator must "
            "re-authorize this tenant's Qontak account."
        ),
        403: "The Qontak user behind this account lacks permission for this; ask an admin.",
        409: "The record changed or already exists: read it again before retrying.",
    }.get(status, "")


def upstream_error_message(endpoint: Endpoint, response: QontakResponse, path: str) -> str:
    payload = response.payload if isinstance(response.payload, dict) else {}
    meta = payload.get("meta")
    meta = meta if isinstance(meta, dict) else {}
    said = str(meta.get("developer_message") or meta.get("message") or "").strip()
    summary = _summary(endpoint, response.status, path, _field_problems(payload), said).rstrip(".")
    message = f"Qontak answered HTTP {response.status}"
    if summary:
        message += f": {summary}"
    if said and not _words(said) <= _words(summary):
        message += f' (Qontak says "{said}")'
    advice = _advice(endpoint, response.status, path)
    return f"{message}. {advice}" if advice else f"{message}."
