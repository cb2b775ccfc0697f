"""The simulator serves Qontak's CRM through the Mekari API Gateway form: ``/qontak/crm/...``
signed with HMAC, as /work/shared/reference/mekari_gateway.md describes.

Signatures are computed here with hmac and hashlib, not with the simulator's own gateway
module, so a mistake there cannot hide behind the same mistake in the tests. The clock is
pinned at the reference's test vector time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from devtools.devstack import create_simulator_account, create_simulator_hmac_account
from devtools.simulator import SimulatorState, gateway
from tests.simulator.conftest import FakeClock, bearer, login, one_record

# The reference's test vectors.
SECRET = "example-client-secret-0123456789"
DATE = "Tue, 01 Dec 2026 02:18:19 GMT"
MOMENT = datetime(2026, 12, 1, 2, 18, 19, tzinfo=UTC)
DEALS_PAGE = "/qontak/crm/deals?page=2&per_page=25"
DEALS_PAGE_SIGNATURE = "OtF7Cu0qOQ10SYRux3Tas3YRntqnq4V6N3J4tAgXtdU="
CONTACTS_SIGNATURE = "zgyWaj3IqS5wlOM+79fVOn1rdmMXsXdHgDlDSoKF1r8="
AYU = b'{"first_name": "Ayu", "last_name": "Lestari"}'
AYU_DIGEST = "SHA-256=m09tKphduGOMqDXDIvKl9ALfqPmqjqzCvjeCuGDpt5I="

CLIENT_ID = "initech-crm-client"
SSO_ID = "7f9c2d4e-1b3a-4c5d-8e6f-0a1b2c3d4e5f"


def http_date(moment: datetime) -> str:
    return moment.strftime("%a, %d %b %Y %H:%M:%S GMT")


def signed(
    method: str,
    target: str,
    *,
    secret: str = SECRET,
    client_id: str = CLIENT_ID,
    date: str = DATE,
    body: bytes | None = None,
) -> dict[str, str]:
    """Headers of a request the way the reference says a client signs it."""
    line = f"date: {date}\n{method} {target} HTTP/1.1"
    mac = hmac.new(secret.encode(), line.encode(), hashlib.sha256).digest()
    signature = base64.b64encode(mac).decode()
    headers = {
        "Date": date,
        "Authorization": f'hmac username="{client_id}", algorithm="hmac-sha256", '
        f'headers="date request-line", signature="{signature}"',
    }
    if body is not None:
        headers["Digest"] = "SHA-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode()
        headers["Content-Type"] = "application/json"
    return headers


def signature_of(headers: dict[str, str]) -> str:
    return headers["Authorization"].rsplit('signature="', 1)[1].rstrip('"')


def deals_signed_but(old: str, new: str) -> dict[str, str]:
    """A correctly signed ``GET /qontak/crm/deals`` with one part of Authorization changed."""
    headers = signed("GET", "/qontak/crm/deals")
    return {**headers, "Authorization": headers["Authorization"].replace(old, new)}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(MOMENT.timestamp())


@pytest.fixture
def state(state: SimulatorState) -> SimulatorState:
    state.add_account("initech", hmac_client_id=CLIENT_ID, hmac_client_secret=SECRET)
    return state


def create_ayu(client: TestClient, **extra: str) -> Any:
    headers = {**signed("POST", "/qontak/crm/contacts", body=AYU), **extra}
    return client.post("/qontak/crm/contacts", content=AYU, headers=headers)


# The reference's vectors


def test_the_reference_vectors_are_what_the_tests_sign_with() -> None:
    assert signature_of(signed("GET", DEALS_PAGE)) == DEALS_PAGE_SIGNATURE
    assert signature_of(signed("POST", "/qontak/crm/contacts")) == CONTACTS_SIGNATURE
    assert signed("POST", "/qontak/crm/contacts", body=AYU)["Digest"] == AYU_DIGEST
    assert gateway.signature(SECRET, DATE, "GET", DEALS_PAGE) == DEALS_PAGE_SIGNATURE
    assert gateway.body_digest(AYU) == AYU_DIGEST
    assert gateway.http_date(MOMENT.timestamp()) == DATE


def test_a_get_signed_with_the_reference_vector_is_answered(client: TestClient) -> None:
    response = client.get(DEALS_PAGE, headers=signed("GET", DEALS_PAGE))
    assert response.status_code == 200
    assert response.json()["meta"]["status"] == 200


def test_a_post_signed_with_the_reference_vector_creates_the_record(
    client: TestClient, state: SimulatorState
) -> None:
    response = create_ayu(client)
    assert response.status_code == 200
    assert response.json()["response"]["first_name"] == "Ayu"
    recorded = state.requests[-1]
    assert (recorded.account, recorded.path, recorded.route, recorded.status) == (
        "initech",
        "/qontak/crm/contacts",
        "POST /api/v3.1/contacts",
        200,
    )


# Both forms, one account


def test_a_record_created_through_the_gateway_is_read_through_the_legacy_api(
    client: TestClient, state: SimulatorState
) -> None:
    contact_id = create_ayu(client).json()["response"]["id"]
    legacy = client.get(f"/api/v3.1/contacts/{contact_id}", headers=login(state, "initech"))
    assert legacy.status_code == 200
    assert one_record(legacy.json())["last_name"] == "Lestari"


def test_a_record_created_through_the_legacy_api_is_read_through_the_gateway(
    client: TestClient, state: SimulatorState
) -> None:
    created = client.post(
        "/api/v3.1/contacts", json={"first_name": "Budi"}, headers=login(state, "initech")
    )
    target = f"/qontak/crm/contacts/{created.json()['response']['id']}"
    answer = client.get(target, headers=signed("GET", target))
    assert answer.status_code == 200
    assert one_record(answer.json())["first_name"] == "Budi"


def test_another_accounts_records_are_not_visible_through_the_gateway(
    client: TestClient, state: SimulatorState
) -> None:
    created = client.post("/api/v3.1/contacts", json={"first_name": "Cici"}, headers=login(state))
    target = f"/qontak/crm/contacts/{created.json()['response']['id']}"
    assert client.get(target, headers=signed("GET", target)).status_code == 404


# Each check answers 401 with its own message


def date_off_by(seconds: int) -> str:
    return http_date(MOMENT + timedelta(seconds=seconds))


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        pytest.param({}, gateway.NOT_HMAC, id="no-authorization"),
        pytest.param({"Authorization": "Bearer abc"}, gateway.NOT_HMAC, id="bearer-token"),
        pytest.param(
            {**signed("GET", "/qontak/crm/deals"), "Authorization": 'hmac username="x"'},
            gateway.NOT_HMAC,
            id="no-signature",
        ),
        pytest.param(
            signed("GET", "/qontak/crm/deals", client_id="nobody"),
            gateway.UNKNOWN_CLIENT,
            id="unknown-client-id",
        ),
        pytest.param(
            deals_signed_but('signature="', 'signature="AAAA'),
            gateway.BAD_SIGNATURE,
            id="wrong-signature",
        ),
        pytest.param(
            signed("GET", "/qontak/crm/deals", secret="another-secret"),
            gateway.BAD_SIGNATURE,
            id="wrong-secret",
        ),
        pytest.param(
            signed("GET", "/api/v3.1/deals"), gateway.BAD_SIGNATURE, id="legacy-path-signed"
        ),
        pytest.param(
            signed("GET", "/qontak/crm/deals", date=date_off_by(-301)),
            gateway.DATE_SKEWED,
            id="date-301s-old",
        ),
        pytest.param(
            signed("GET", "/qontak/crm/deals", date=date_off_by(301)),
            gateway.DATE_SKEWED,
            id="date-301s-ahead",
        ),
        pytest.param(
            {k: v for k, v in signed("GET", "/qontak/crm/deals").items() if k != "Date"},
            gateway.DATE_MISSING,
            id="date-missing",
        ),
        pytest.param(
            signed("GET", "/qontak/crm/deals", date=MOMENT.isoformat()),
            gateway.DATE_MISSING,
            id="date-not-rfc7231",
        ),
        pytest.param(
            deals_signed_but("hmac-sha256", "hmac-sha1"),
            gateway.UNSUPPORTED_ALGORITHM,
            id="other-algorithm",
        ),
        pytest.param(
            deals_signed_but('headers="date request-line"', 'headers="date"'),
            gateway.UNSUPPORTED_HEADERS,
            id="other-signed-headers",
        ),
    ],
)
def test_a_get_failing_a_check_is_401_with_the_checks_message(
    client: TestClient, headers: dict[str, str], message: str
) -> None:
    response = client.get("/qontak/crm/deals", headers=headers)
    assert response.status_code == 401
    assert response.json() == {"message": message}


@pytest.mark.parametrize("seconds", [-300, 300])
def test_a_date_300_seconds_away_is_still_accepted(client: TestClient, seconds: int) -> None:
    headers = signed("GET", "/qontak/crm/deals", date=date_off_by(seconds))
    assert client.get("/qontak/crm/deals", headers=headers).status_code == 200


def test_a_post_without_a_digest_is_401(client: TestClient, state: SimulatorState) -> None:
    headers = signed("POST", "/qontak/crm/contacts", body=AYU)
    del headers["Digest"]
    response = client.post("/qontak/crm/contacts", content=AYU, headers=headers)
    assert (response.status_code, response.json()) == (401, {"message": gateway.DIGEST_MISSING})
    assert state.requests[-1].status == 401


def test_a_post_whose_digest_does_not_match_the_body_is_401(client: TestClient) -> None:
    headers = signed("POST", "/qontak/crm/contacts", body=AYU)
    tampered = AYU.replace(b"Ayu", b"Eka")
    response = client.post("/qontak/crm/contacts", content=tampered, headers=headers)
    assert (response.status_code, response.json()) == (401, {"message": gateway.DIGEST_MISMATCH})


def test_a_delete_without_a_body_needs_no_digest(client: TestClient, state: SimulatorState) -> None:
    contact_id = create_ayu(client).json()["response"]["id"]
    target = f"/qontak/crm/contacts/{contact_id}"
    assert client.delete(target, headers=signed("DELETE", target)).status_code == 200


def test_a_rejected_request_is_recorded_against_the_client_it_claimed(
    client: TestClient, state: SimulatorState
) -> None:
    client.get("/qontak/crm/deals", headers=signed("GET", "/qontak/crm/deals", secret="wrong"))
    recorded = state.requests[-1]
    assert (recorded.account, recorded.status, recorded.route) == (
        "initech",
        401,
        "GET /api/v3.1/deals",
    )


def test_hmac_credentials_do_not_open_the_legacy_api(client: TestClient) -> None:
    response = client.get("/api/v3.1/deals", headers=signed("GET", "/api/v3.1/deals"))
    assert response.status_code == 401
    assert response.json()["meta"]["error_code"] == "invalid_token"


# The signed request line


def test_the_query_string_is_part_of_the_signed_request_line(client: TestClient) -> None:
    without_query = signed("GET", "/qontak/crm/deals")
    assert client.get(DEALS_PAGE, headers=without_query).status_code == 401
    reordered = signed("GET", "/qontak/crm/deals?per_page=25&page=2")
    assert client.get(DEALS_PAGE, headers=reordered).status_code == 401
    assert client.get(DEALS_PAGE, headers=signed("GET", DEALS_PAGE)).status_code == 200


def test_the_query_string_is_signed_exactly_as_sent(client: TestClient) -> None:
    target = "/qontak/crm/contacts?name=Ayu%20Lestari&page=1"
    assert client.get(target, headers=signed("GET", target)).status_code == 200
    decoded = signed("GET", "/qontak/crm/contacts?name=Ayu Lestari&page=1")
    assert client.get(target, headers=decoded).status_code == 401


# The CRM user each call acts as


def test_the_sso_user_of_a_gateway_call_is_recorded(client: TestClient) -> None:
    create_ayu(client, **{"X-Crm-User-Sso-Id": SSO_ID})
    client.get(DEALS_PAGE, headers=signed("GET", DEALS_PAGE))
    recorded = client.get("/_simulator/requests", params={"account": "initech"}).json()
    assert [(r["path"], r["sso_user"]) for r in recorded] == [
        ("/qontak/crm/contacts", SSO_ID),
        ("/qontak/crm/deals", None),
    ]


def test_the_sso_user_of_a_legacy_call_is_recorded_when_sent(
    client: TestClient, state: SimulatorState
) -> None:
    client.get("/api/v3.1/deals", headers={**login(state), "X-Crm-User-Sso-Id": SSO_ID})
    assert state.requests[-1].sso_user == SSO_ID


# Accounts and faults


def test_a_new_account_gets_hmac_credentials_that_open_the_gateway(client: TestClient) -> None:
    created = client.post("/_simulator/accounts", json={"name": "hooli"}).json()
    client_id, secret = created["hmac_client_id"], created["hmac_client_secret"]
    assert client_id and secret and client_id != CLIENT_ID
    headers = signed("GET", "/qontak/crm/deals", client_id=client_id, secret=secret)
    assert client.get("/qontak/crm/deals", headers=headers).status_code == 200
    again = client.post("/_simulator/accounts", json={"name": "hooli"}).json()
    assert (again["hmac_client_id"], again["hmac_client_secret"]) == (client_id, secret)


def test_a_client_id_belongs_to_one_account(client: TestClient) -> None:
    taken = client.post("/_simulator/accounts", json={"name": "hooli", "hmac_client_id": CLIENT_ID})
    assert taken.status_code == 409
    assert (
        client.post("/_simulator/accounts", json={"name": "x", "hmac_client_id": 1}).status_code
        == 400
    )


def test_a_fault_on_the_legacy_prefix_also_fails_the_gateway_form(
    client: TestClient, state: SimulatorState
) -> None:
    state.fail_next(503, path_prefix="/api/v3.1/deals")
    assert client.get(DEALS_PAGE, headers=signed("GET", DEALS_PAGE)).status_code == 503
    state.fail_next(503, path_prefix="/qontak/crm/")
    assert client.get("/api/v3.1/deals", headers=login(state, "initech")).status_code == 200
    assert client.get(DEALS_PAGE, headers=signed("GET", DEALS_PAGE)).status_code == 503


def test_an_injected_401_on_the_gateway_has_the_gateways_shape(
    client: TestClient, state: SimulatorState
) -> None:
    state.fail_next(401, path_prefix="/qontak/crm/")
    response = client.get(DEALS_PAGE, headers=signed("GET", DEALS_PAGE))
    assert (response.status_code, response.json()) == (401, {"message": gateway.BAD_SIGNATURE})


def test_devstack_creates_an_account_usable_through_both_forms(
    threaded_server: str, state: SimulatorState
) -> None:
    client_id, secret = create_simulator_hmac_account(threaded_server, "umbrella")
    created = httpx.post(
        f"{threaded_server}/qontak/crm/contacts",
        content=AYU,
        headers=signed(
            "POST", "/qontak/crm/contacts", client_id=client_id, secret=secret, body=AYU
        ),
    )
    contact_id = created.json()["response"]["id"]
    target = f"/qontak/crm/contacts/{contact_id}?fields=first_name"
    read = httpx.get(
        f"{threaded_server}{target}",
        headers=signed("GET", target, client_id=client_id, secret=secret),
    )
    assert one_record(read.json())["first_name"] == "Ayu"

    refresh_token = create_simulator_account(threaded_server, "umbrella")
    assert state.accounts["umbrella"].hmac_client_id == client_id
    grant = httpx.post(
        f"{threaded_server}/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
    ).json()
    legacy = httpx.get(
        f"{threaded_server}/api/v3.1/contacts/{contact_id}", headers=bearer(grant["access_token"])
    )
    assert one_record(legacy.json())["last_name"] == "Lestari"
