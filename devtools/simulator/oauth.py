"""``POST /oauth/token``: the grants the collection documents, with Doorkeeper's errors.

Qontak rotates refresh tokens: a successful refresh returns a new one and the presented
token is rejected with invalid_grant from then on. That is the behaviour clients get wrong,
so it is the one modelled most carefully (see SimulatorState.refresh).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from devtools.simulator.state import GrantRejected, SimulatorState

INVALID_REQUEST = (
    "The request is missing a required parameter, includes an unsupported parameter value, "
    "or is otherwise malformed."
)
UNSUPPORTED_GRANT_TYPE = (
    "The authorization grant type is not supported by the authorization server."
)


def _param(params: Mapping[str, Any], name: str) -> str:
    value = params.get(name)
    if value is None or value == "":
        raise GrantRejected("invalid_request", INVALID_REQUEST)
    return str(value)


def token_response(state: SimulatorState, params: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
    """Status and body for a token request (form fields or JSON keys)."""
    try:
        grant_type = _param(params, "grant_type")
        if grant_type == "refresh_token":
            grant = state.refresh(_param(params, "refresh_token"))
        elif grant_type == "password":
            grant = state.password_grant(_param(params, "username"), _param(params, "password"))
        else:
            # authorization_code needs a browser redirect this simulator does not model.
            raise GrantRejected("unsupported_grant_type", UNSUPPORTED_GRANT_TYPE)
    except GrantRejected as rejected:
        return rejected.status, rejected.as_json()
    return 200, grant.as_json()


def token_account(state: SimulatorState, params: Mapping[str, Any]) -> str | None:
    """Which account a token request is about, for the request log."""
    refresh_token = params.get("refresh_token")
    if refresh_token:
        return state.account_for_refresh_token(str(refresh_token))
    username = params.get("username")
    return state.account_for_username(str(username)) if username else None
