"""Qontak's error answers, turned into messages a model can act on."""

from __future__ import annotations

from mcpserver.qontak.client import QontakResponse
from mcpserver.qontak.endpoints import Endpoint


def upstream_error_message(endpoint: Endpoint, response: QontakResponse, path: str) -> str:
    meta = response.payload.get("meta", {}) if isinstance(response.payload, dict) else {}
    detail = meta.get("developer_message") or meta.get("message") or ""
    errors = response.payload.get("errors") if isinstance(response.payload, dict) else None
    if errors:
        detail = (
            "; ".join(
                f"{e.get('field', '?')}: {e.get('message', '')}"
                for e in errors
                if isinstance(e, dict)
            )
            or detail
        )
    advice = {
        404: f"the {endpoint.noun} does not exist; list or search to find a valid id",
        422: "fix the fields named and call again",
        429: "Qontak is rate limiting this account; wait and retry",
        403: "the Qontak user behind this tenant lacks permission for this action",
    }.get(response.status, "")
    if response.status >= 500:
        advice = "Qontak failed; retry later"
    parts = [f"Qontak answered HTTP {response.status} for {endpoint.method} {path}"]
    if detail:
        parts.append(detail)
    if advice:
        parts.append(advice)
    return ": ".join(parts[:2]) + (f" ({parts[2]})" if len(parts) > 2 else "")
