"""The key check in front of /mcp: cheap for floods of invented keys, and independent of the
database for keys a worker already knows."""

from __future__ import annotations

import asyncio
import secrets
from datetime import datetime, timedelta

import httpx
import pytest
from django.db import OperationalError
from django.utils import timezone

from controlplane import config_version, tenants
from controlplane.models import ApiKey

LIST_TOOLS = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}


def _invented_key() -> str:
    return tenants.API_KEY_SCHEME + secrets.token_urlsafe(32)


@pytest.fixture
def counted_lookups(monkeypatch) -> list[str]:
    lookups: list[str] = []
    authenticate = tenants.api_key_authenticate

    def counted(*, key: str) -> ApiKey | None:
        lookups.append(key)
        return authenticate(key=key)

    monkeypatch.setattr(tenants, "api_key_authenticate", counted)
    monkeypatch.setattr(tenants, "failed_authentications", tenants._FailedAuthentications())
    return lookups


@pytest.mark.django_db(transaction=True)
def test_a_flood_of_invented_keys_costs_a_bounded_number_of_queries(
    counted_lookups, settings, monkeypatch
):
    from mcpserver import server

    settings.AUTH_FAILURES_PER_ADDRESS = 5
    monkeypatch.setattr(config_version, "current", lambda: "v1")

    async def flood() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=server.mcp_endpoint, client=("203.0.113.7", 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return [
                await client.post(
                    "/mcp", json=LIST_TOOLS, headers={"Authorization": f"Bearer {_invented_key()}"}
                )
                for _ in range(12)
            ]

    statuses = [response.status_code for response in asyncio.run(flood())]
    assert statuses == [401] * 5 + [429] * 7
    assert len(counted_lookups) == 5


@pytest.mark.django_db(transaction=True)
def test_a_key_issued_during_a_flood_is_accepted_at_once(counted_lookups, settings):
    settings.AUTH_FAILURES_PER_ADDRESS = 2
    tenant = tenants.tenant_create(slug="flooded")

    async def attempts(key: str, version: str) -> ApiKey | None:
        return await tenants.api_key_for_request(
            key=key, version=version, client_address="203.0.113.8"
        )

    for _ in range(2):
        assert asyncio.run(attempts(_invented_key(), "before")) is None
    with pytest.raises(tenants.TooManyFailedAuthentications):
        asyncio.run(attempts(_invented_key(), "before"))
    issued = tenants.api_key_issue(tenant=tenant)  # announced: workers take a new version
    assert asyncio.run(attempts(issued.key, "after")) is not None


@pytest.mark.django_db(transaction=True)
def test_a_known_key_is_served_while_the_database_is_down(monkeypatch):
    tenant = tenants.tenant_create(slug="outage")
    issued = tenants.api_key_issue(tenant=tenant)

    async def check() -> ApiKey | None:
        return await tenants.api_key_for_request(key=issued.key, version="v1")

    known = asyncio.run(check())
    assert known is not None
    known.last_used_at = timezone.now() - timedelta(minutes=5)  # its use is due a write

    def down(*args: object, **kwargs: object) -> None:
        raise OperationalError("connection refused")

    monkeypatch.setattr(tenants, "api_key_authenticate", down)
    monkeypatch.setattr(tenants, "_record_uses", down)
    monkeypatch.setattr(tenants, "USES_WRITE_DELAY_SECONDS", 0.01)

    async def check_and_let_bookkeeping_finish() -> ApiKey | None:
        api_key = await check()
        assert tenants._uses_writer is not None
        await tenants._uses_writer
        return api_key

    assert asyncio.run(check_and_let_bookkeeping_finish()) is not None


@pytest.mark.django_db(transaction=True)
def test_due_last_use_stamps_of_many_keys_are_written_together(monkeypatch):
    monkeypatch.setattr(tenants, "USES_WRITE_DELAY_SECONDS", 0.05)
    tenant = tenants.tenant_create(slug="busy-keys")
    issued = [tenants.api_key_issue(tenant=tenant) for _ in range(3)]
    writes: list[set[int]] = []
    record = tenants._record_uses

    def counted(uses: dict[int, datetime]) -> None:
        writes.append(set(uses))
        record(uses)

    monkeypatch.setattr(tenants, "_record_uses", counted)

    async def calls() -> datetime:
        for key in issued:
            known = await tenants.api_key_for_request(key=key.key, version="v1")
            assert known is not None
            known.last_used_at = timezone.now() - timedelta(minutes=5)  # its use is due a write
        used_from = timezone.now()
        for key in issued:
            assert await tenants.api_key_for_request(key=key.key, version="v1") is not None
        assert tenants._uses_writer is not None
        await tenants._uses_writer
        return used_from

    used_from = asyncio.run(calls())
    assert writes == [{key.api_key.pk for key in issued}]  # one write, not one per key
    for key in issued:
        stamped = ApiKey.objects.get(pk=key.api_key.pk).last_used_at
        assert stamped is not None and stamped >= used_from


@pytest.mark.django_db(transaction=True)
def test_a_new_keys_first_call_does_not_wait_for_its_last_use_to_be_written(monkeypatch):
    """Onboarding thousands of keys at once: the first call reads the key and answers; the
    stamp follows in the worker's next batch."""
    monkeypatch.setattr(tenants, "USES_WRITE_DELAY_SECONDS", 0.05)
    issued = tenants.api_key_issue(tenant=tenants.tenant_create(slug="new-key"))

    def stamp() -> datetime | None:
        return ApiKey.objects.get(pk=issued.api_key.pk).last_used_at

    async def first_call() -> None:
        called_at = timezone.now()
        assert await tenants.api_key_for_request(key=issued.key, version="v1") is not None
        assert await asyncio.to_thread(stamp) is None  # nothing written on the call's path
        assert tenants._uses_writer is not None
        await tenants._uses_writer
        stamped = await asyncio.to_thread(stamp)
        assert stamped is not None and stamped >= called_at

    asyncio.run(first_call())


# Rotating API_KEY_PEPPER (issue 13, item 11).

PEPPER_A = "pepper-a-" + "a" * 40
PEPPER_B = "pepper-b-" + "b" * 40


@pytest.mark.django_db
def test_a_key_issued_under_the_old_pepper_authenticates_and_moves_to_the_new_one(
    settings, django_assert_num_queries
):
    settings.API_KEY_PEPPER, settings.API_KEY_OLD_PEPPERS = PEPPER_A, []
    issued = tenants.api_key_issue(tenant=tenants.tenant_create(slug="rotated"))
    stored = ApiKey.objects.get(pk=issued.api_key.pk)
    assert stored.pepper_id == tenants.api_key_pepper_id(PEPPER_A)
    assert stored.digest == tenants.api_key_digest(issued.key, pepper=PEPPER_A)

    settings.API_KEY_PEPPER, settings.API_KEY_OLD_PEPPERS = PEPPER_B, ["", PEPPER_A]
    # One lookup for every pepper and one UPDATE re-keying the digest (last use is stamped
    # later, by the worker's batched writer).
    with django_assert_num_queries(2) as captured:
        found = tenants.api_key_authenticate(key=issued.key)
    assert found is not None and found.pk == issued.api_key.pk
    assert "IN" in captured.captured_queries[0]["sql"]
    stored.refresh_from_db()
    assert stored.digest == tenants.api_key_digest(issued.key, pepper=PEPPER_B)
    assert stored.pepper_id == tenants.api_key_pepper_id(PEPPER_B) != ""

    settings.API_KEY_OLD_PEPPERS = []  # rotation done: the new pepper alone verifies it
    with django_assert_num_queries(1):
        assert tenants.api_key_authenticate(key=issued.key) is not None


@pytest.mark.django_db
def test_a_key_whose_pepper_is_neither_current_nor_old_is_refused(settings):
    settings.API_KEY_PEPPER, settings.API_KEY_OLD_PEPPERS = PEPPER_A, []
    issued = tenants.api_key_issue(tenant=tenants.tenant_create(slug="forgotten"))
    settings.API_KEY_PEPPER, settings.API_KEY_OLD_PEPPERS = PEPPER_B, ["pepper-c-" + "c" * 40]
    assert tenants.api_key_authenticate(key=issued.key) is None
    stored = ApiKey.objects.get(pk=issued.api_key.pk)
    assert stored.digest == tenants.api_key_digest(issued.key, pepper=PEPPER_A)


def test_the_pepper_id_tells_peppers_apart_without_revealing_them():
    id_a, id_b = tenants.api_key_pepper_id(PEPPER_A), tenants.api_key_pepper_id(PEPPER_B)
    assert id_a != id_b and len(id_a) == len(id_b) == 8
    assert id_a not in PEPPER_A and id_b not in PEPPER_B


@pytest.mark.django_db(transaction=True)
def test_a_known_key_past_its_copy_age_is_served_while_the_database_is_down(monkeypatch):
    tenant = tenants.tenant_create(slug="aged")
    issued = tenants.api_key_issue(tenant=tenant)

    async def check() -> ApiKey | None:
        return await tenants.api_key_for_request(key=issued.key, version="v1")

    assert asyncio.run(check()) is not None
    monkeypatch.setattr(config_version, "MAX_AGE_SECONDS", 0.0)  # the copy has aged

    def down(*args: object, **kwargs: object) -> None:
        raise OperationalError("connection refused")

    monkeypatch.setattr(tenants, "api_key_authenticate", down)
    assert asyncio.run(check()) is not None
