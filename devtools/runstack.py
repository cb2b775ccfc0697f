"""`make run`: the control plane on its embedded defaults, with a working demo tenant.

Starts OpenBao (unless VAULT_ADDR is set) and the Qontak simulator (unless QONTAK_BASE_URL
is set), migrates, creates an admin login and a demo tenant on the Mekari API Gateway form
(its HMAC secret stored in Vault), issues a demo API key acting as a demo CRM user, makes a
demo member for OAuth clients, prints all of it, and serves the ASGI app with uvicorn.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from controlplane.qontak_urls import DEFAULT_ALLOWED_HOSTS
from devtools.devstack import (
    ManagedProcess,
    create_simulator_account,
    create_simulator_hmac_account,
    port_is_free,
    start_openbao,
    start_simulator,
)

BASE_DIR = Path(__file__).resolve().parent.parent
LOG_DIR = BASE_DIR / ".run"
DEMO_SLUG = "demo"
DEMO_CRM_USER = "00000000-0000-4000-8000-000000000001"  # the Mekari SSO id demo calls act as


def _preferred_port(port: int) -> int | None:
    return port if port_is_free(port) else None


def _start_dependencies() -> tuple[list[ManagedProcess], bool]:
    started: list[ManagedProcess] = []
    if not os.environ.get("VAULT_ADDR"):
        print("Starting OpenBao dev server (in memory) ...", flush=True)
        bao = start_openbao(LOG_DIR, port=_preferred_port(8200))
        started.append(bao)
        os.environ["VAULT_ADDR"] = bao.url
        os.environ["VAULT_TOKEN"] = bao.extra["token"]
    uses_simulator = not os.environ.get("QONTAK_BASE_URL")
    if uses_simulator:
        print("Starting the Qontak simulator ...", flush=True)
        simulator = start_simulator(LOG_DIR, port=_preferred_port(8100))
        started.append(simulator)
        os.environ["QONTAK_BASE_URL"] = simulator.url
        # Plain http is allowed for a loopback host only when QONTAK_ALLOWED_HOSTS lists it.
        allowed = os.environ.get("QONTAK_ALLOWED_HOSTS") or ",".join(DEFAULT_ALLOWED_HOSTS)
        os.environ["QONTAK_ALLOWED_HOSTS"] = f"{allowed},{urlsplit(simulator.url).hostname}"
    return started, uses_simulator


DEMO_PERSON = "demo-person"


def _seed_demo(uses_simulator: bool) -> tuple[str, str, str]:
    """Admin login, a demo tenant with a key and a member who can connect an assistant with
    OAuth; returns (admin password, API key, the member's password)."""
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from controlplane import credentials, people, tenants
    from controlplane.models import Tenant

    call_command("migrate", verbosity=0, interactive=False)
    password = secrets.token_urlsafe(12)
    user_model = get_user_model()
    admin, _ = user_model.objects.get_or_create(
        username="admin", defaults={"is_staff": True, "is_superuser": True}
    )
    admin.set_password(password)
    admin.save()

    try:
        tenant = tenants.tenant_get(slug=DEMO_SLUG)
    except tenants.TenantNotFound:  # on the gateway form, as companies onboarding today are
        tenant = tenants.tenant_create(
            slug=DEMO_SLUG,
            name="Demo (Qontak simulator)",
            auth=Tenant.Auth.MEKARI_HMAC,
            qontak_base_url=f"{settings.QONTAK_BASE_URL}/qontak/crm" if uses_simulator else "",
            default_qontak_user=DEMO_CRM_USER,
        )
    if not uses_simulator:
        print(
            "QONTAK_BASE_URL is set: store the demo tenant's credential with\n"
            f"  python manage.py set_hmac_credential {DEMO_SLUG} --client-id ID"
        )
    elif tenant.auth == Tenant.Auth.MEKARI_HMAC:
        client_id, secret = create_simulator_hmac_account(settings.QONTAK_BASE_URL, DEMO_SLUG)
        credentials.store_hmac_credential(tenant=tenant, client_id=client_id, client_secret=secret)
    else:  # a demo tenant made by an earlier version keeps the legacy form
        refresh_token = create_simulator_account(settings.QONTAK_BASE_URL, DEMO_SLUG)
        credentials.store_refresh_token(tenant=tenant, refresh_token=refresh_token)
    issued = tenants.api_key_issue(tenant=tenant, label="make run demo", qontak_user=DEMO_CRM_USER)
    person_password = secrets.token_urlsafe(12)
    membership, _ = people.member_add(
        tenant=tenant, username=DEMO_PERSON, password=person_password, qontak_user=DEMO_CRM_USER
    )
    membership.user.set_password(person_password)  # a new one on every run, like the admin's
    membership.user.save(update_fields=["password"])
    return password, issued.key, person_password


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
    os.environ.setdefault("LOG_FORMAT", "plain")  # a person reads this terminal
    # The demo serves plain HTTP on loopback; not every browser keeps Secure cookies there.
    os.environ.setdefault("SESSION_COOKIE_SECURE", "false")
    os.environ.setdefault("CSRF_COOKIE_SECURE", "false")
    started, uses_simulator = _start_dependencies()
    try:
        import django

        django.setup()
        from django.conf import settings

        password, key, person_password = _seed_demo(uses_simulator)
        base = f"http://{settings.RUN_HOST}:{settings.RUN_PORT}"
        print(
            "\n".join(
                [
                    "",
                    "Qontak MCP control plane is starting.",
                    f"  Admin:        {base}/admin/   login: admin / {password}",
                    f"  MCP endpoint: {base}/mcp",
                    f"  Demo API key: {key}",
                    f"  OAuth person: {DEMO_PERSON} / {person_password}   (an OAuth-only client "
                    "given the MCP endpoint signs in as this member of the demo tenant)",
                    f"  Health:       {base}/healthz",
                    f"  Vault:        {settings.VAULT_ADDR}",
                    f"  Qontak:       {settings.QONTAK_BASE_URL}",
                    "  Stop with Ctrl-C.",
                    "",
                ]
            ),
            flush=True,
        )
        import uvicorn

        uvicorn.run(
            "controlplane.asgi:application",
            host=settings.RUN_HOST,
            port=settings.RUN_PORT,
            lifespan="on",
        )
    finally:
        for process in reversed(started):
            process.stop()


if __name__ == "__main__":
    main()
