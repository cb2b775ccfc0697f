"""Issue an MCP API key for a tenant. The key is printed once, alone on the last line."""

from argparse import ArgumentParser
from typing import Any

from controlplane.management.service_command import ServiceCommand
from controlplane.tenants import api_key_issue, tenant_get


class Command(ServiceCommand):
    help = "Issue an API key for SLUG; the key is shown once, alone on the last line."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--label", default="", help="Who or what uses the key.")
        parser.add_argument(
            "--read-only",
            action="store_true",
            help="Only tools annotated readOnlyHint are listed and callable with this key.",
        )
        parser.add_argument(
            "--qontak-user",
            default="",
            metavar="SSO_ID",
            help="Mekari SSO id (UUID) of the Qontak CRM user this key's calls act as; "
            "default: the tenant's default CRM user.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        issued = api_key_issue(
            tenant=tenant_get(slug=options["slug"]),
            label=options["label"],
            read_only=options["read_only"],
            qontak_user=options["qontak_user"],
        )
        self.stderr.write(
            f"Issued key {issued.api_key.prefix}… for {options['slug']}. "
            "It is not stored anywhere: copy it now."
        )
        self.stdout.write(issued.key)
