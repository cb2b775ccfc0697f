"""Create a tenant (one Qontak account) and its Vault credential reference."""

from argparse import ArgumentParser
from typing import Any

from controlplane.management.service_command import ServiceCommand
from controlplane.tenants import tenant_create


class Command(ServiceCommand):
    help = "Create a tenant. Next: set_refresh_token SLUG, then issue_api_key SLUG."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("slug", help="Identifier, e.g. acme (letters, digits, - and _).")
        parser.add_argument("--name", default="", help="Display name (defaults to the slug).")
        parser.add_argument(
            "--qontak-base-url", default="", help="Overrides QONTAK_BASE_URL for this tenant."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = tenant_create(
            slug=options["slug"], name=options["name"], qontak_base_url=options["qontak_base_url"]
        )
        self.stdout.write(self.style.SUCCESS(f"Created tenant {tenant.slug}"))
