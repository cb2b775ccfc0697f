"""Check Vault: reachability, authentication, KV mount, and each tenant's secret."""

from typing import Any

from controlplane import tokens, vault
from controlplane.errors import CredentialUnavailable
from controlplane.management.service_command import ServiceCommand
from controlplane.models import Tenant


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
                    secret = vault.read_secret(tokens.secret_ref(tenant.credential))
                except CredentialUnavailable as exc:
                    rows.append((f"tenant {tenant.slug}", str(exc), False))
                    failed = True
                    continue
                present = secret is not None and bool(secret.refresh_token)
                failed = failed or not present
                rows.append(
                    (
                        f"tenant {tenant.slug}",
                        f"secret present (version {secret.version})"
                        if present and secret
                        else "no refresh token: run set_refresh_token",
                        present,
                    )
                )
        for label, value, ok in rows:
            style = self.style.SUCCESS if ok else self.style.ERROR
            self.stdout.write(f"{label:<28} {style(value)}")
        if failed:
            self.stderr.write(
                status.detail if status.detail != "ok" else "some tenants have no token stored"
            )
            raise SystemExit(1)
