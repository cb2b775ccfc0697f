"""Read Qontak's Postman collection, the only source of the simulator's routes and data.

The collection is shipped next to this module (``collection.json``, a verbatim copy of the
published one) so seeds, ``/info`` templates and example payloads never drift into Python.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

COLLECTION_FILE = "collection.json"
API_PREFIX = "/api/v3.1"

# Postman example bodies are hand-written: they carry // and # comments and trailing commas.
# Each pattern matches a whole JSON string first, so comment markers inside strings survive.
_STRING = r'"(?:\\.|[^"\\])*"'
_COMMENTS = re.compile(_STRING + r"|//[^\n]*|#[^\n]*")
_TRAILING_COMMAS = re.compile(_STRING + r"|,(?=\s*[}\]])")
# Query values are documented as "smith (string)"; the real value is before " (".
_TYPE_HINT = re.compile(r"\s+\((?:string|numeric|number|integer)\)\s*$", re.IGNORECASE)
# "- `name` (string, required): ..." in free-form descriptions.
_REQUIRED_BULLET = re.compile(r"`(\w+)`\s*\([^)]*\brequired\b[^)]*\)", re.IGNORECASE)


def parse_lenient_json(text: str) -> Any:
    """Parse JSON the way a reader of the collection would, ignoring comments and trailing commas.

    Returns None for an empty body.
    """

    def keep_strings(match: re.Match[str]) -> str:
        token = match.group(0)
        return token if token.startswith('"') else ""

    cleaned = _TRAILING_COMMAS.sub(keep_strings, _COMMENTS.sub(keep_strings, text))
    if not cleaned.strip():
        return None
    return json.loads(cleaned)


def clean_query_value(value: str) -> str:
    """Drop the collection's "(string)"/"(numeric)" annotation from a documented query value."""
    return _TYPE_HINT.sub("", value)


@dataclass(frozen=True)
class CollectionRequest:
    """One request of the collection, reduced to what the simulator needs."""

    folder: str
    name: str
    method: str
    template: str
    query: tuple[tuple[str, str], ...]
    body: Any
    description: str
    example: Any

    @property
    def route_key(self) -> str:
        return f"{self.method} {self.template}"

    def mandatory_body_fields(self) -> tuple[str, ...]:
        """Fields the description marks mandatory: "Yes" rows of a Body table, or bullets.

        Only tables under a heading mentioning "Body" count: the "Variable" tables list the
        path id, which the client never sends in the body.
        """
        fields: list[str] = []
        in_body_section = False
        for line in self.description.splitlines():
            stripped = line.strip()
            if stripped.startswith("#"):
                in_body_section = "body" in stripped.lower()
                continue
            cells = [cell.strip() for cell in stripped.strip("|").split("|")]
            is_row = in_body_section and stripped.startswith("|") and len(cells) >= 3
            if is_row and cells[2].lower() == "yes":
                fields.append(cells[0])
        fields.extend(_REQUIRED_BULLET.findall(self.description))
        return tuple(dict.fromkeys(fields))


def _template_of(url: Any) -> str:
    """The path template of a Postman URL, e.g. ``/api/v3.1/contacts/:id`` (no trailing slash)."""
    if isinstance(url, dict) and "path" in url:
        path = "/" + "/".join(str(segment) for segment in url["path"])
    else:
        raw = url["raw"] if isinstance(url, dict) else str(url)
        path = urlsplit(raw).path
    return path.rstrip("/") or "/"


def _body_of(request: dict[str, Any]) -> Any:
    body = request.get("body") or {}
    if body.get("mode") == "raw":
        return parse_lenient_json(body.get("raw", ""))
    if body.get("mode") == "urlencoded":
        return {
            item["key"]: item.get("value", "")
            for item in body.get("urlencoded", [])
            if not item.get("disabled")
        }
    return None


def _walk(items: list[dict[str, Any]], folder: str) -> list[CollectionRequest]:
    found: list[CollectionRequest] = []
    for item in items:
        if "item" in item:
            found.extend(_walk(item["item"], item["name"]))
            continue
        request = item["request"]
        url = request["url"]
        query = tuple(
            (str(param["key"]), clean_query_value(str(param.get("value") or "")))
            for param in (url.get("query", []) if isinstance(url, dict) else [])
            if param.get("key") and not param.get("disabled")
        )
        examples = item.get("response") or []
        found.append(
            CollectionRequest(
                folder=folder,
                name=item["name"],
                method=request["method"].upper(),
                template=_template_of(url),
                query=query,
                body=_body_of(request),
                description=request.get("description") or "",
                example=parse_lenient_json(examples[0].get("body") or "") if examples else None,
            )
        )
    return found


def collection_text() -> str:
    """The shipped collection, read as package data so it works from a wheel too."""
    return resources.files(__package__).joinpath(COLLECTION_FILE).read_text(encoding="utf-8")


@cache
def load_requests() -> tuple[CollectionRequest, ...]:
    """Every request of the collection, in document order (parsed once per process)."""
    return tuple(_walk(json.loads(collection_text())["item"], folder=""))
