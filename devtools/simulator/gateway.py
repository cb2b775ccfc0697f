"""The Mekari API Gateway's HMAC check, for Qontak's CRM served under ``/qontak/crm``.

The gateway form has the legacy routes, handlers and envelopes (``/qontak/crm/deals`` is
``/api/v3.1/deals``) but authenticates each request on its own, as
/work/shared/reference/mekari_gateway.md describes:

- ``Authorization: hmac username="<client id>", algorithm="hmac-sha256",
  headers="date request-line", signature="<base64>"``, the signature being HMAC-SHA256 keyed
  with the client secret over ``date: <Date>\\n<METHOD> <path with query> HTTP/1.1``, where
  the path is the full request path (``/qontak/crm/...``) and the query string is as sent;
- ``Date`` in RFC 7231 form, at most 300 s away from the simulator's clock;
- ``Digest: SHA-256=<base64 of sha256(body)>`` on every request with a body, matching it.

The checks run in that order and the first failure answers 401 with ``{"message": ...}``, the
gateway's shape. The message texts are the simulator's own, chosen so a test can tell which
check failed; the real gateway's wording may differ, so clients must not depend on them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from devtools.simulator.collection import API_PREFIX
from devtools.simulator.envelope import ApiError

GATEWAY_PREFIX = "/qontak/crm"
ALGORITHM = "hmac-sha256"
SIGNED_HEADERS = ("date", "request-line")
MAX_CLOCK_SKEW = 300
HTTP_DATE_FORMAT = "%a, %d %b %Y %H:%M:%S GMT"

NOT_HMAC = "Authorization header is missing or is not an hmac credential"
UNKNOWN_CLIENT = "HMAC client id is not known"
UNSUPPORTED_ALGORITHM = 'HMAC algorithm must be "hmac-sha256"'
UNSUPPORTED_HEADERS = 'HMAC headers must be "date request-line"'
DATE_MISSING = "Date header is missing or not in RFC 7231 form"
DATE_SKEWED = "Date header is more than 300 seconds away from the gateway's clock"
BAD_SIGNATURE = "HMAC signature cannot be verified"
DIGEST_MISSING = "Digest header is missing (required on requests with a body)"
DIGEST_MISMATCH = "Digest does not match the body"

_SCHEME = re.compile(r"^\s*hmac\s+(?P<params>.*)$", re.IGNORECASE | re.DOTALL)
_PARAM = re.compile(r'\s*(?P<key>[A-Za-z-]+)\s*=\s*"(?P<value>[^"]*)"\s*(?:,|$)')


class GatewayRejected(ApiError):
    """A 401 from the gateway: ``{"message": ...}`` instead of Qontak's envelope."""

    def __init__(self, message: str) -> None:
        super().__init__(401, "unauthorized", message, headers={"WWW-Authenticate": "hmac"})
        self.message = message
        self.body = {"message": message}


@dataclass(frozen=True)
class Credentials:
    """The parameters of an ``Authorization: hmac ...`` header."""

    client_id: str
    algorithm: str
    headers: str
    signature: str


def legacy_path(path: str) -> str | None:
    """The ``/api/v3.1`` path a gateway path stands for; None outside ``/qontak/crm/``."""
    if not path.startswith(GATEWAY_PREFIX + "/"):
        return None
    return API_PREFIX + path[len(GATEWAY_PREFIX) :]


def signing_string(date: str, method: str, path_with_query: str) -> str:
    return f"date: {date}\n{method.upper()} {path_with_query} HTTP/1.1"


def signature(secret: str, date: str, method: str, path_with_query: str) -> str:
    """Base64 HMAC-SHA256 of the signing string, keyed with the client secret."""
    mac = hmac.new(
        secret.encode(), signing_string(date, method, path_with_query).encode(), hashlib.sha256
    )
    return base64.b64encode(mac.digest()).decode("ascii")


def body_digest(body: bytes) -> str:
    """The ``Digest`` header value for ``body``: ``SHA-256=<base64>``."""
    return "SHA-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")


def http_date(moment: float) -> str:
    """A Unix time in RFC 7231 form, e.g. ``Tue, 01 Dec 2026 02:18:19 GMT``."""
    return datetime.fromtimestamp(moment, UTC).strftime(HTTP_DATE_FORMAT)


def parse_credentials(authorization: str) -> Credentials:
    """Raises GatewayRejected(NOT_HMAC) unless the header is an hmac credential with a
    username and a signature."""
    scheme = _SCHEME.match(authorization)
    if scheme is None:
        raise GatewayRejected(NOT_HMAC)
    params: dict[str, str] = {}
    rest = scheme["params"].strip()
    while rest:
        param = _PARAM.match(rest)
        if param is None:
            raise GatewayRejected(NOT_HMAC)
        params[param["key"].lower()] = param["value"]
        rest = rest[param.end() :]
    if not params.get("username") or not params.get("signature"):
        raise GatewayRejected(NOT_HMAC)
    return Credentials(
        client_id=params["username"],
        algorithm=params.get("algorithm", ""),
        headers=params.get("headers", ""),
        signature=params["signature"],
    )


def client_id_of(authorization: str) -> str | None:
    """The client id an Authorization header claims, if it parses (for the request log)."""
    try:
        return parse_credentials(authorization).client_id
    except GatewayRejected:
        return None


def _date_of(value: str | None) -> float:
    try:
        parsed = datetime.strptime(value or "", HTTP_DATE_FORMAT)
    except ValueError:
        raise GatewayRejected(DATE_MISSING) from None
    return parsed.replace(tzinfo=UTC).timestamp()


def _check_digest(digest: str | None, body: bytes) -> None:
    if not digest:
        if body:
            raise GatewayRejected(DIGEST_MISSING)
        return
    # RFC 3230 allows a list of algorithm=value pairs; the gateway asks for SHA-256.
    sent = {
        algorithm.strip().lower(): value.strip()
        for algorithm, _, value in (part.partition("=") for part in digest.split(","))
    }
    expected = body_digest(body).partition("=")[2]
    if not hmac.compare_digest(sent.get("sha-256", "").encode(), expected.encode()):
        raise GatewayRejected(DIGEST_MISMATCH)


def verify(
    credentials: Credentials,
    *,
    secret: str,
    method: str,
    path_with_query: str,
    headers: Mapping[str, str],
    body: bytes,
    now: float,
) -> None:
    """Check a request signed by a known client; raises GatewayRejected at the first failure.

    ``now`` is Unix time (the simulator's clock); ``headers`` is case-insensitive.
    """
    if credentials.algorithm.lower() != ALGORITHM:
        raise GatewayRejected(UNSUPPORTED_ALGORITHM)
    if tuple(credentials.headers.lower().split()) != SIGNED_HEADERS:
        raise GatewayRejected(UNSUPPORTED_HEADERS)
    date = headers.get("date")
    if abs(now - _date_of(date)) > MAX_CLOCK_SKEW:
        raise GatewayRejected(DATE_SKEWED)
    expected = signature(secret, date or "", method, path_with_query)
    if not hmac.compare_digest(credentials.signature.encode(), expected.encode()):
        raise GatewayRejected(BAD_SIGNATURE)
    _check_digest(headers.get("digest"), body)
