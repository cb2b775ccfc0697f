"""Store a tenant's Qontak refresh token in Vault, read from standard input.

The token is never an argument (it would land in shell history and `ps`) and never echoed.
It is validated with one refresh grant first; Qontak rotates it, so Vault keeps the new one.
"""

from argparse import ArgumentParser
from typing import Any

from controlplane.credentials import store_refresh_token
from controlplane.management.service_command import ServiceCommand
from controlplane.tenants import tenant_get


class Command(ServiceCommand):
    help = "Read SLUG's Qontak refresh token from stdin, validate it, store it in Vault."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("slug")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = tenant_get(slug=options["slug"])
        token = self.secret_from_stdin("refresh token")
        store_refresh_token(tenant=tenant, refresh_token=token)
        self.stdout.write(
            self.style.SUCCESS(f"Stored a validated refresh token for {tenant.slug} in Vault")
        )
