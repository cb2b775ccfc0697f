"""Mekari HMAC signing against the vectors in shared/reference/mekari_gateway.md, and against
an independent computation in the test itself."""

from __future__ import annotations

import base64
import hashlib
import hmac
from calendar import timegm
from time import strptime

from qontak import mekari

SECRET = "example-client-secret-0123456789"
DATE = "Tue, 01 Dec 2026 02:18:19 GMT"
PINNED = float(timegm(strptime(DATE, "%a, %d %b %Y %H:%M:%S GMT")))
CREDENTIAL = mekari.HmacCredential(client_id="client-1", client_secret=SECRET)


def test_a_get_with_a_query_signs_the_documented_vector():
    headers = mekari.signed_headers(
        CREDENTIAL,
        method="GET",
        path_with_query="/qontak/crm/deals?page=2&per_page=25",
        body=None,
        clock=lambda: PINNED,
    )
    assert headers["Date"] == DATE
    assert headers["Authorization"] == (
        'hmac username="client-1", algorithm="hmac-sha256", headers="date request-line", '
        'signature="OtF7Cu0qOQ10SYRux3Tas3YRntqnq4V6N3J4tAgXtdU="'
    )
    assert "Digest" not in headers


def test_a_post_carries_the_documented_signature_and_digest_and_the_crm_user():
    body = b'{"first_name": "Ayu", "last_name": "Lestari"}'
    headers = mekari.signed_headers(
        CREDENTIAL,
        method="POST",
        path_with_query="/qontak/crm/contacts",
        body=body,
        sso_user="5f0c6b1e-1111-2222-3333-444455556666",
        clock=lambda: PINNED,
    )
    assert 'signature="zgyWaj3IqS5wlOM+79fVOn1rdmMXsXdHgDlDSoKF1r8="' in headers["Authorization"]
    assert headers["Digest"] == "SHA-256=m09tKphduGOMqDXDIvKl9ALfqPmqjqzCvjeCuGDpt5I="
    assert headers["X-Crm-User-Sso-Id"] == "5f0c6b1e-1111-2222-3333-444455556666"


def test_the_signature_matches_an_independent_computation():
    line = f"date: {DATE}\nDELETE /qontak/crm/notes/7 HTTP/1.1"
    expected = base64.b64encode(
        hmac.new(b"another-secret", line.encode(), hashlib.sha256).digest()
    ).decode()
    assert (
        mekari.signature(
            "another-secret", date=DATE, method="delete", path_with_query="/qontak/crm/notes/7"
        )
        == expected
    )


def test_the_secret_is_not_in_the_credentials_repr():
    assert SECRET not in repr(CREDENTIAL)
