"""Allow or deny one tool (or `*`) for a tenant."""

from argparse import ArgumentParser
from typing import Any

from controlplane.management.service_command import ServiceCommand
from controlplane.policies import tool_access_set
from controlplane.tenants import api_key_get, tenant_get


class Command(ServiceCommand):
    help = "Allow or deny TOOL (or * for every tool) for SLUG."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("tool")
        parser.add_argument("effect", choices=["allow", "deny"])
        parser.add_argument(
            "--key", metavar="KEY_PREFIX", help="Apply to this API key only, not the tenant."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        tool_access_set(
            tenant=tenant_get(slug=options["slug"]),
            tool=options["tool"],
            effect=options["effect"],
            api_key=api_key_get(prefix=options["key"]) if options["key"] else None,
        )
        self.stdout.write(
            self.style.SUCCESS(f"{options['slug']}: {options['effect']} {options['tool']}")
        )
