"""The token service under trouble, in-process against real OpenBao and the simulator: one
tenant's slow refresh never holds up another's, callers share one refresh, a token due soon
is refreshed behind the caller's back, a silent Vault is not waited for twice, and a secret
this tenant never wrote is never used."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

from controlplane import tenants, tokens, vault
from controlplane.errors import CredentialMissing, CredentialUnavailable
from controlplane.models import QontakCredential
from tests.servers import set_simulator_faults, simulator_account, tenant_secret


@pytest.fixture(autouse=True)
def cold_workers() -> Iterator[None]:
    tokens.forget_cached_tokens()
    yield
    tokens.forget_cached_tokens()
    vault._quiet_until = 0.0


def _timed(scenario: Callable[[], Coroutine[Any, Any, float]]) -> tuple[float, float]:
    """What `scenario` returned, and how long it took in all."""
    started = time.monotonic()
    result = asyncio.run(scenario())
    return result, time.monotonic() - started


def test_a_slow_refresh_of_one_tenant_does_not_delay_another(make_tenant, own_simulator):
    slow = make_tenant("slow", qontak=own_simulator)
    quick = make_tenant("quick")
    slow_token = tenant_secret(slow.tenant).access_token  # type: ignore[union-attr]
    tokens.forget_cached_tokens()
    set_simulator_faults(own_simulator, latency_ms=2000)

    async def both() -> float:
        started = time.monotonic()
        # More callers than the token threads: they must share one refresh, not one each.
        slow_callers = asyncio.gather(
            *(
                tokens.access_token(tenant=slow.tenant, stale_token=slow_token)
                for _ in range(tokens.TOKEN_THREADS + 4)
            )
        )
        await asyncio.sleep(0.05)  # the slow refresh holds its thread by now
        await tokens.access_token(tenant=quick.tenant)
        quick_done = time.monotonic() - started
        await slow_callers
        return quick_done

    quick_done, total = _timed(both)
    assert total >= 2.0
    assert quick_done < 1.0


def test_concurrent_callers_of_one_tenant_share_one_refresh(make_tenant, own_simulator):
    demo = make_tenant(qontak=own_simulator)
    stale = tenant_secret(demo.tenant).access_token  # type: ignore[union-attr]
    before = simulator_account(own_simulator, demo.account)["refresh_count"]
    set_simulator_faults(own_simulator, latency_ms=300)

    async def many() -> set[str]:
        return set(
            await asyncio.gather(
                *(tokens.access_token(tenant=demo.tenant, stale_token=stale) for _ in range(10))
            )
        )

    fresh = asyncio.run(many())
    assert len(fresh) == 1 and stale not in fresh
    assert simulator_account(own_simulator, demo.account)["refresh_count"] == before + 1


def test_a_token_due_for_refresh_is_used_while_it_is_refreshed_behind(
    make_tenant, own_simulator, monkeypatch
):
    monkeypatch.setattr(tokens, "REFRESH_MARGIN_SHARE", 0.9)  # due 0.4 s into a 4 s life
    set_simulator_faults(own_simulator, access_token_ttl=4)
    demo = make_tenant(qontak=own_simulator)
    current = tenant_secret(demo.tenant).access_token  # type: ignore[union-attr]
    before = simulator_account(own_simulator, demo.account)["refresh_count"]
    time.sleep(0.6)
    set_simulator_faults(own_simulator, latency_ms=500)

    async def call_then_wait() -> tuple[str, float]:
        started = time.monotonic()
        token = await tokens.access_token(tenant=demo.tenant)
        answered = time.monotonic() - started
        for _ in range(50):
            if tokens._cache[demo.tenant.pk].access_token != current:
                break
            await asyncio.sleep(0.05)
        return token, answered

    token, answered = asyncio.run(call_then_wait())
    assert token == current and answered < 0.2
    assert tokens._cache[demo.tenant.pk].access_token != current
    assert simulator_account(own_simulator, demo.account)["refresh_count"] == before + 1


@pytest.fixture
def silent_vault(settings) -> Iterator[None]:
    """A Vault address that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    settings.VAULT_ADDR = f"http://127.0.0.1:{listener.getsockname()[1]}"
    settings.VAULT_TIMEOUT = 1.0
    vault.reset_client()
    yield
    listener.close()
    vault.reset_client()


@pytest.mark.django_db
def test_after_vault_stops_answering_cold_fetches_fail_at_once(silent_vault):
    tenant = tenants.tenant_create(slug="silent")
    QontakCredential.objects.filter(tenant=tenant).update(vault_version=1)

    started = time.monotonic()
    with pytest.raises(vault.VaultUnreachable):
        tokens.access_token_for(tenant=tenant)
    first = time.monotonic() - started
    started = time.monotonic()
    with pytest.raises(CredentialUnavailable, match="did not answer a moment ago"):
        tokens.access_token_for(tenant=tenant)
    assert first >= 1.0
    assert time.monotonic() - started < 0.2


def test_a_secret_this_tenant_never_wrote_is_not_used(make_tenant, transactional_db):
    tenant = tenants.tenant_create(slug="heir")
    credential = QontakCredential.objects.get(tenant=tenant)
    vault.write_secret(  # left at this path by someone else, say before a database restore
        tokens.secret_ref(credential),
        refresh_token="previous-customers-token",
        access_token="previous-customers-access",
        issued_at=time.time(),
        expires_at=time.time() + 3600,
        base_url=tenants.tenant_qontak_base_url(tenant),
        cas=None,
    )
    with pytest.raises(CredentialMissing):
        tokens.access_token_for(tenant=tenant)


def test_deleting_a_tenant_destroys_its_secret_and_a_new_one_gets_another_path(make_tenant):
    demo = make_tenant("gone")
    ref = tokens.secret_ref(QontakCredential.objects.get(tenant=demo.tenant))
    assert vault.read_secret(ref) is not None
    tenants.tenant_delete(tenant=demo.tenant)
    assert vault.read_secret(ref) is None
    again = tenants.tenant_create(slug=demo.tenant.slug)
    assert tokens.secret_ref(QontakCredential.objects.get(tenant=again)) != ref


def test_the_control_plane_renews_its_own_vault_token_ahead_of_expiry(
    openbao, monkeypatch, settings
):
    root = vault._vault()
    created = root.auth.token.create(ttl="60s", renewable=True, policies=["root"])
    settings.VAULT_TOKEN = created["auth"]["client_token"]
    vault.reset_client()
    try:
        time.sleep(2)
        before = vault.token_lease()
        monkeypatch.setattr(vault, "RENEW_AT_SHARE", 1.0)  # due at once
        after = vault.renew_token_if_due()
        assert before.ttl is not None and after is not None and after.ttl is not None
        assert after.ttl > before.ttl
    finally:
        settings.VAULT_TOKEN = openbao.extra["token"]
        vault.reset_client()


def test_storing_a_token_over_a_secret_this_tenant_never_wrote_is_refused(
    simulator, transactional_db
):
    from controlplane import credentials
    from controlplane.errors import InvalidInput
    from devtools.devstack import create_simulator_account

    tenant = tenants.tenant_create(slug="squatted", qontak_base_url=simulator.url)
    ref = tokens.secret_ref(QontakCredential.objects.get(tenant=tenant))
    vault.write_secret(
        ref,
        refresh_token="someone-elses",
        access_token="",
        issued_at=0,
        expires_at=0,
        base_url="",
        cas=None,
    )
    fresh = create_simulator_account(simulator.url, "squatted")
    with pytest.raises(InvalidInput, match="never wrote"):
        credentials.store_refresh_token(tenant=tenant, refresh_token=fresh)
    stored = vault.read_secret(ref)
    assert stored is not None and stored.refresh_token == "someone-elses"
