"""Check Vault: reachability, authentication, KV mount, and each tenant's secret."""

from typing import Any

from controlplane import tokens, vault
from controlplane.errors import CredentialUnavailable
from controlplane.management.service_command import ServiceCommand
from controlplane.models import Tenant

# What each credential kind must have in Vault, and what to do when it does not.
MISSING: dict[str, tuple[str, str]] = {
    Tenant.Auth.QONTAK_OAUTH: ("refresh_token", "no refresh token: run set_refresh_token"),
    Tenant.Auth.MEKARI_HMAC: (
        "client_secret",
        "no HMAC client secret: run set_hmac_credential --client-id ID",
    ),
}


class Command(ServiceCommand):
    help = "Report Vault reachability, auth, KV v2 mount and per-tenant secret presence."

    def handle(self, *args: Any, **options: Any) -> None:
        from django.conf import settings

        status = vault.vault_status()
        rows = [
            ("address", settings.VAULT_ADDR, True),
            ("reachable", "yes" if status.reachable else "no", status.reachable),
            ("authenticated", "yes" if status.authenticated else "no", status.authenticated),
            (
                f"mount {settings.VAULT_KV_MOUNT}",
                "kv v2" if status.mount_ok else "missing",
                status.mount_ok,
            ),
        ]
        if status.lease is not None:
            expiring = (
                status.lease.ttl is not None
                and status.lease.ttl < vault.TOKEN_TTL_WARNING_SECONDS
                and not status.lease.renewable
            )
            rows.append(("token", status.lease.detail, not expiring))
        failed = not (status.reachable and status.authenticated and status.mount_ok)
        if not failed:
            for tenant in Tenant.objects.select_related("credential").order_by("slug"):
                try:
                    found = vault.read_fields(tokens.secret_ref(tenant.credential))
                except CredentialUnavailable as exc:
                    rows.append((f"tenant {tenant.slug}", str(exc), False))
                    failed = True
                    continue
                field, missing = MISSING[tenant.auth]
                present = found is not None and bool(found[0].get(field))
                failed = failed or not present
                detail = f"secret present (version {found[1]})" if found and present else missing
                rows.append((f"tenant {tenant.slug}", detail, present))
        for label, value, ok in rows:
            style = self.style.SUCCESS if ok else self.style.ERROR
            self.stdout.write(f"{label:<28} {style(value)}")
        if failed:
            self.stderr.write(
                status.detail if status.detail != "ok" else "some tenants have no token stored"
            )
            raise SystemExit(1)
