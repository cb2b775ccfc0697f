"""What an audit row keeps of a call's arguments: an allow-list, and a digest nobody can test a
guess against."""

from __future__ import annotations

import hashlib
import json

from controlplane import audit


def test_only_ids_and_paging_are_stored_in_clear():
    stored = audit.stored_arguments(
        "update_contact",
        {
            "id": 7,
            "job_title": "CFO",
            "latitude": -6.2,
            "province": "Jakarta",
            "additional_fields": [{"id": 3, "value": "private"}],
        },
    )
    assert stored == {
        "id": 7,
        "job_title": audit.REDACTED,
        "latitude": audit.REDACTED,
        "province": audit.REDACTED,
        "additional_fields": [{"id": 3, "value": audit.REDACTED}],
    }


def test_fields_of_geolocations_and_companies_are_redacted():
    geo = audit.stored_arguments("create_geolocation", {"latitude": 1.0, "longitude": 2.0})
    company = audit.stored_arguments("create_company", {"website": "x.example", "detail": "d"})
    assert set(geo.values()) == {audit.REDACTED}
    assert set(company.values()) == {audit.REDACTED}


def test_the_digest_cannot_be_matched_by_hashing_a_guess():
    arguments = {"phone": "081234567890"}
    guess = hashlib.sha256(
        json.dumps(arguments, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    digest = audit.arguments_digest(arguments)
    assert digest != guess
    assert digest == audit.arguments_digest(dict(arguments))  # identical calls still match
