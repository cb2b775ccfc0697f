"""The pipeline's Qontak step: one request, authenticated the way the tenant's credential kind
says, within the call's deadline, counted and paused like every request to the tenant.

- Legacy Qontak OAuth: `/api/v3.1/...` with a bearer access token; a 401 gets one refresh
  and one retry.
- Mekari API Gateway: the same resources under the gateway's CRM root, without `/api/v3.1`,
  each attempt signed with the tenant's HMAC credential (controlplane.tokens) and acting as the
  caller's CRM user (`X-Crm-User-Sso-Id`); a write without a CRM user is refused before it is
  sent, so no record is created with no owner.
"""

from __future__ import annotations

import asyncio

from django.conf import settings
from pydantic import BaseModel

from controlplane import backoff, gateway_credentials, policies, ratelimit, tokens, tracing
from controlplane.errors import CredentialMissing, RateLimited, UpstreamError
from controlplane.models import Tenant
from controlplane.tenants import tenant_qontak_base_url
from mcpserver.caller import Caller
from qontak import mekari
from qontak.client import (
    Authenticator,
    DeadlineExceeded,
    FailedAttempt,
    QontakResponse,
    TransportFailure,
    qontak_request,
)
from qontak.endpoints import Endpoint, Kind, gateway_path
from qontak.errors import upstream_error_message


def _bearer(token: str) -> Authenticator:
    return lambda method, path, body: {"Authorization": f"Bearer {token}"}


def _signed(credential: mekari.HmacCredential, sso_user: str) -> Authenticator:
    def authenticate(method: str, path: str, body: bytes | None) -> dict[str, str]:
        return mekari.signed_headers(
            credential, method=method, path_with_query=path, body=body, sso_user=sso_user
        )

    return authenticate


def _gateway_refusal(response: QontakResponse) -> str:
    payload = response.payload if isinstance(response.payload, dict) else {}
    said = str(payload.get("message") or payload.get("error") or "").strip()
    return (
        f"the Mekari API Gateway refused this tenant's HMAC credentials (HTTP 401"
        f"{': ' + said if said else ''}): an operator must check the client id and secret "
        "(set them again with set_hmac_credential, or in the admin)"
    )


async def send(
    caller: Caller,
    policy: policies.TenantPolicy,
    endpoint: Endpoint,
    data: BaseModel,
    deadline: float,
) -> QontakResponse:
    """The Qontak request within the call's deadline. Every retry counts against the
    tenant's Qontak ceiling (the first request was counted at admission) and stops when the
    tenant's requests are paused; every failed attempt counts towards that pause
    (controlplane.backoff)."""
    path, params, body = endpoint.request_parts(data)
    tenant = caller.tenant
    slug = tenant.slug
    gateway = tenant.auth == Tenant.Auth.MEKARI_HMAC

    async def count_retry() -> None:
        hit = await ratelimit.admit_qontak_retry(policy=policy, tenant_slug=slug)
        if hit is not None:
            raise RateLimited(hit.message, retry_after=hit.retry_after)

    async def before_retry(failure: FailedAttempt) -> None:
        await backoff.attempt_failed(
            tenant_slug=slug, status=failure.status, retry_after=failure.retry_after
        )
        await count_retry()

    async def attempt(authenticate: Authenticator) -> QontakResponse:
        return await qontak_request(
            base_url=tenant_qontak_base_url(tenant),
            authenticate=authenticate,
            method=endpoint.method,
            path=gateway_path(path) if gateway else path,
            route=gateway_path(endpoint.path) if gateway else endpoint.path,
            deadline=deadline,
            params=params,
            json_body=body,
            before_retry=before_retry,
            log_context=caller.log_context(),
        )

    if gateway and not caller.qontak_user and endpoint.kind is not Kind.READ:
        raise CredentialMissing(
            f"{endpoint.name} must act as a Qontak CRM user, and neither this API key nor the "
            "tenant names one: an operator must set the key's CRM user (--qontak-user) or the "
            "tenant's default CRM user"
        )
    try:
        async with asyncio.timeout_at(deadline):
            if gateway:
                with tracing.step(tracing.TOKEN):
                    credential = await gateway_credentials.hmac_credential(
                        tenant=tenant, version=caller.config_version
                    )
                response = await attempt(_signed(credential, caller.qontak_user))
            else:
                with tracing.step(tracing.TOKEN):
                    token = await tokens.access_token(tenant=tenant)
                response = await attempt(_bearer(token))
                if response.status == 401:
                    await count_retry()
                    with tracing.step(tracing.TOKEN):
                        fresh = await tokens.access_token(tenant=tenant, stale_token=token)
                    response = await attempt(_bearer(fresh))
    except (DeadlineExceeded, TimeoutError):
        await backoff.attempt_failed(tenant_slug=slug, status=None, retry_after=None)
        seconds = settings.TOOL_CALL_DEADLINE
        raise UpstreamError(
            f"Qontak did not answer within {seconds:g} s: it is slow right now. "
            + _retry_advice(endpoint, "Retry in a minute.")
        ) from None
    except TransportFailure as exc:
        await backoff.attempt_failed(tenant_slug=slug, status=None, retry_after=None)
        raise UpstreamError(
            f"{exc}. " + _retry_advice(endpoint, "Retry in a few seconds.")
        ) from exc
    if response.status == 429 or response.status >= 500:
        await backoff.attempt_failed(
            tenant_slug=slug, status=response.status, retry_after=response.retry_after
        )
    else:
        await backoff.attempt_succeeded(tenant_slug=slug)
    if gateway and response.status == 401:
        raise UpstreamError(_gateway_refusal(response), status=401)
    if response.status >= 400:
        raise UpstreamError(
            upstream_error_message(endpoint, response, path), status=response.status
        )
    return response


def _retry_advice(endpoint: Endpoint, advice: str) -> str:
    """What to do after Qontak did not answer: a create may have happened all the same."""
    if endpoint.kind is not Kind.CREATE:
        return advice
    resource = endpoint.resource
    return (
        f"The {resource.noun} may have been created anyway: check with {resource.list_tool} "
        "before retrying."
    )
