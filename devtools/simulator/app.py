"""The ASGI app: Qontak's ``/oauth/token`` and ``/api/v3.1/...``, the Mekari API Gateway's
``/qontak/crm/...``, plus ``/_simulator`` controls.

API requests are not routed by Starlette but by the catalog's route table, so that every
route of the collection is served by the handler of its kind and recorded under its
template. A gateway request is the legacy request without ``/api/v3.1``, authenticated with
HMAC instead of a bearer token (see gateway.py). Starlette only routes the small control
surface tests use.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from devtools.simulator.catalog import OAUTH_PATH, Resolution
from devtools.simulator.collection import API_PREFIX
from devtools.simulator.envelope import ApiError
from devtools.simulator.gateway import (
    BAD_SIGNATURE,
    UNKNOWN_CLIENT,
    GatewayRejected,
    client_id_of,
    legacy_path,
    parse_credentials,
    verify,
)
from devtools.simulator.handlers import HANDLERS, Call
from devtools.simulator.oauth import token_account, token_response
from devtools.simulator.state import Account, FailRule, RecordedRequest, SimulatorState

UNAUTHORIZED_MESSAGE = "The access token is invalid or has expired"
INJECTED_MESSAGE = "Failure injected by the simulator (POST /_simulator/faults)"
API_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
SSO_HEADER = "x-crm-user-sso-id"


def _state(request: Request) -> SimulatorState:
    state: SimulatorState = request.app.state.simulator
    return state


def _unauthorized() -> ApiError:
    return ApiError(
        401,
        "invalid_token",
        UNAUTHORIZED_MESSAGE,
        message="Unauthorized",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


def _injected(rule: FailRule, via_gateway: bool) -> ApiError:
    """The error a real outage or rate limit would produce, in Qontak's envelope (a 401 in
    the shape of the form's own authentication failure)."""
    if rule.status == 401:
        return GatewayRejected(BAD_SIGNATURE) if via_gateway else _unauthorized()
    headers = {"Retry-After": str(rule.retry_after)} if rule.status == 429 else {}
    code = "too_many_requests" if rule.status == 429 else "simulated_failure"
    return ApiError(rule.status, code, INJECTED_MESSAGE, headers=headers)


class _DroppedConnection(Response):
    """Starts an answer and fails mid-way: the server closes the connection, as a reset or a
    crashing proxy would, and the client sees the response cut off."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise ConnectionResetError("simulated connection reset")


def _bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _path_with_query(request: Request) -> str:
    """The request target as the client sent (and signed) it: raw path and raw query."""
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    query = request.scope.get("query_string", b"")
    target = raw_path + b"?" + query if query else raw_path
    return target.decode("latin-1")


def _claimed_account(state: SimulatorState, request: Request, via_gateway: bool) -> str | None:
    """Whose credentials an API request carries, even if they fail (for the request log)."""
    if not via_gateway:
        return state.account_for_access_token(_bearer(request))
    client_id = client_id_of(request.headers.get("authorization", ""))
    account = state.account_for_hmac_client(client_id or "")
    return account.name if account else None


async def _authenticate(state: SimulatorState, request: Request, via_gateway: bool) -> Account:
    """The account an API request acts for; raises the form's 401 if it does not prove one."""
    if not via_gateway:
        account = state.authenticate(_bearer(request))
        if account is None:
            raise _unauthorized()
        return account
    credentials = parse_credentials(request.headers.get("authorization", ""))
    account = state.account_for_hmac_client(credentials.client_id)
    if account is None:
        raise GatewayRejected(UNKNOWN_CLIENT)
    verify(
        credentials,
        secret=account.hmac_client_secret,
        method=request.method,
        path_with_query=_path_with_query(request),
        headers=request.headers,
        body=await request.body(),
        now=state.clock(),
    )
    return account


async def _read_body(request: Request) -> Any:
    """JSON, or form fields (the token endpoint is form-encoded); None when empty."""
    raw = await request.body()
    if not raw.strip():
        return None
    text = raw.decode("utf-8", errors="replace")
    if "application/x-www-form-urlencoded" in request.headers.get("content-type", ""):
        return dict(parse_qsl(text, keep_blank_values=True))
    try:
        return json.loads(text)
    except ValueError:
        try:
            return dict(parse_qsl(text, keep_blank_values=True, strict_parsing=True))
        except ValueError:
            raise ApiError(400, "bad_request", "The request body is not valid JSON") from None


def _answer_api(
    state: SimulatorState, account: Account, request: Request, resolution: Resolution, body: Any
) -> dict[str, Any]:
    route = resolution.route
    method, path = request.method, request.url.path
    if route is None:
        if resolution.allowed:
            raise ApiError(
                405,
                "method_not_allowed",
                f"{method} is not allowed on {path}",
                headers={"Allow": ", ".join(resolution.allowed)},
            )
        raise ApiError(404, "not_found", f"No route matches {method} {path}")
    call = Call(
        route=route,
        model=state.catalog.models[route.resource or ""],
        store=account.store,
        params=resolution.params,
        query=dict(request.query_params),
        body=body,
    )
    with state.lock:
        return HANDLERS[route.kind](call)


async def serve(request: Request) -> Response:
    """Answer and record one Qontak request (anything outside Qontak's paths is a bare 404)."""
    state = _state(request)
    method, path = request.method, request.url.path
    gateway_path = legacy_path(path)
    api_path = gateway_path or path
    if path.rstrip("/") != OAUTH_PATH and not api_path.startswith(API_PREFIX + "/"):
        error = ApiError(404, "not_found", f"No route matches {method} {path}")
        return JSONResponse(error.body, status_code=404)

    resolution = state.catalog.resolve(method, api_path)
    is_token = path.rstrip("/") == OAUTH_PATH
    via_gateway = gateway_path is not None
    body: Any = None
    account = None if is_token else _claimed_account(state, request, via_gateway)
    headers: dict[str, str] = {}
    try:
        body = await _read_body(request)
        params = body if isinstance(body, dict) else {}
        if is_token:
            account = token_account(state, params)
        if state.latency_ms:
            await anyio.sleep(state.latency_ms / 1000)
        injected = state.take_failure(path, api_path)
        if injected is not None and injected.reset:
            status, payload = 0, None
        elif injected is not None:
            raise _injected(injected, via_gateway)
        elif is_token and resolution.route is not None:
            status, payload = token_response(state, params)
        elif is_token:
            raise ApiError(
                405,
                "method_not_allowed",
                f"{method} is not allowed on {path}",
                headers={"Allow": ", ".join(resolution.allowed)},
            )
        else:
            authenticated = await _authenticate(state, request, via_gateway)
            status, payload = 200, _answer_api(state, authenticated, request, resolution, body)
    except ApiError as error:
        status, payload, headers = error.status, error.body, error.headers
    state.record(
        RecordedRequest(
            account=account,
            method=method,
            path=path,
            route=resolution.route.key if resolution.route else None,
            query=dict(request.query_params),
            body=body,
            status=status,
            sso_user=request.headers.get(SSO_HEADER),
            traceparent=request.headers.get("traceparent"),
        )
    )
    if status == 0:
        return _DroppedConnection()
    return JSONResponse(payload, status_code=status, headers=headers)


# Control surface for tests: no auth, never recorded.


async def _control_json(request: Request) -> dict[str, Any]:
    try:
        payload = json.loads(await request.body() or b"{}")
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        raise ValueError("expected a JSON object")
    return payload


def _control_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def create_account(request: Request) -> Response:
    """Add a tenant, or re-authorize an existing one (its old refresh token becomes stale).

    A new tenant also gets gateway HMAC credentials (``hmac_client_id`` and
    ``hmac_client_secret`` in the answer); a payload may choose them.
    """
    try:
        payload = await _control_json(request)
    except ValueError as error:
        return _control_error(400, str(error))
    name = payload.get("name")
    strings = ("refresh_token", "hmac_client_id", "hmac_client_secret")
    if (
        not isinstance(name, str)
        or not name
        or not all(isinstance(payload.get(key), str | None) for key in strings)
    ):
        return _control_error(400, f"name (string) is required; {', '.join(strings)} are strings")
    username, password = payload.get("username"), payload.get("password")
    try:
        account = _state(request).add_account(
            name,
            payload.get("refresh_token") or None,
            username=str(username) if username is not None else None,
            password=str(password) if password is not None else None,
            hmac_client_id=payload.get("hmac_client_id") or None,
            hmac_client_secret=payload.get("hmac_client_secret") or None,
        )
    except ValueError as error:
        return _control_error(409, str(error))
    return JSONResponse(
        {
            "name": account.name,
            "refresh_token": account.refresh_token,
            "hmac_client_id": account.hmac_client_id,
            "hmac_client_secret": account.hmac_client_secret,
        },
        status_code=201,
    )


async def show_account(request: Request) -> Response:
    state = _state(request)
    with state.lock:
        account = state.accounts.get(request.path_params["name"])
        if account is None:
            return _control_error(404, "unknown account")
        return JSONResponse(account.summary())


async def list_requests(request: Request) -> Response:
    recorded = _state(request).requests_for(request.query_params.get("account"))
    return JSONResponse([entry.as_json() for entry in recorded])


async def clear_requests(request: Request) -> Response:
    _state(request).clear_requests()
    return Response(status_code=204)


async def show_faults(request: Request) -> Response:
    return JSONResponse(_state(request).faults())


async def set_faults(request: Request) -> Response:
    try:
        return JSONResponse(_state(request).apply_faults(await _control_json(request)))
    except ValueError as error:
        return _control_error(400, str(error))
    except KeyError as error:
        return _control_error(404, f"unknown account {error}")


async def clear_faults(request: Request) -> Response:
    _state(request).clear_faults()
    return Response(status_code=204)


def create_app(state: SimulatorState | None = None) -> Starlette:
    """A simulator app; ``app.state.simulator`` is its SimulatorState."""
    app = Starlette(
        routes=[
            Route("/_simulator/healthz", healthz, methods=["GET"]),
            Route("/_simulator/accounts", create_account, methods=["POST"]),
            Route("/_simulator/accounts/{name}", show_account, methods=["GET"]),
            Route("/_simulator/requests", list_requests, methods=["GET"]),
            Route("/_simulator/requests", clear_requests, methods=["DELETE"]),
            Route("/_simulator/faults", show_faults, methods=["GET"]),
            Route("/_simulator/faults", set_faults, methods=["POST"]),
            Route("/_simulator/faults", clear_faults, methods=["DELETE"]),
            Route("/{path:path}", serve, methods=API_METHODS),
        ]
    )
    app.state.simulator = state if state is not None else SimulatorState()
    return app
