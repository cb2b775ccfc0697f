"""Allow, deny or hold for approval one tool (or `*`) for a tenant, a key or a member."""

from argparse import ArgumentParser
from typing import Any

from controlplane.management.service_command import ServiceCommand
from controlplane.models import ToolPolicy
from controlplane.people import membership_get
from controlplane.policies import tool_access_set
from controlplane.tenants import api_key_get, tenant_get


class Command(ServiceCommand):
    help = (
        "Allow, deny or require approval (a person decides each call) for TOOL (or * for "
        "every tool) for SLUG."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("tool")
        parser.add_argument("effect", choices=ToolPolicy.Effect.values)
        parser.add_argument(
            "--key", metavar="KEY_PREFIX", help="Apply to this API key only, not the tenant."
        )
        parser.add_argument(
            "--member", metavar="USERNAME", help="Apply to this member's OAuth calls only."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = tenant_get(slug=options["slug"])
        tool_access_set(
            tenant=tenant,
            tool=options["tool"],
            effect=options["effect"],
            api_key=api_key_get(prefix=options["key"]) if options["key"] else None,
            membership=(
                membership_get(tenant=tenant, username=options["member"])
                if options["member"]
                else None
            ),
        )
        self.stdout.write(
            self.style.SUCCESS(f"{options['slug']}: {options['effect']} {options['tool']}")
        )
