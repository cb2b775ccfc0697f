"""Store a Mekari API Gateway tenant's HMAC credential: the client id as an option, the
client secret from standard input, validated with one signed call before anything is stored.

Mekari lets a company create a new secret at any time: run this again with it; calls in
flight finish with the old one.
"""

from argparse import ArgumentParser
from typing import Any

from controlplane.credentials import store_hmac_credential
from controlplane.management.service_command import ServiceCommand
from controlplane.tenants import tenant_get


class Command(ServiceCommand):
    help = (
        "Read SLUG's Mekari HMAC client secret from stdin, validate it with one signed call "
        "with --client-id, and store it in Vault."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("slug")
        parser.add_argument(
            "--client-id", required=True, help="The HMAC client id (Mekari Developer Center)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = tenant_get(slug=options["slug"])
        secret = self.secret_from_stdin("Mekari HMAC client secret")
        store_hmac_credential(tenant=tenant, client_id=options["client_id"], client_secret=secret)
        self.stdout.write(
            self.style.SUCCESS(f"Stored a validated HMAC credential for {tenant.slug} in Vault")
        )
