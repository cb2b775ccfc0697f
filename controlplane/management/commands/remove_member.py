"""End a person's membership of a tenant; their assistants' tokens stop working at once."""

from argparse import ArgumentParser
from typing import Any

from controlplane.management.service_command import ServiceCommand
from controlplane.people import member_remove
from controlplane.tenants import tenant_get


class Command(ServiceCommand):
    help = "Remove USERNAME from SLUG: their OAuth tokens for it are refused from the next call."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("username")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = tenant_get(slug=options["slug"])
        ended = member_remove(tenant=tenant, username=options["username"])
        self.stdout.write(
            self.style.SUCCESS(
                f"Removed {options['username']} from {tenant.slug}; "
                f"{ended} assistant connection(s) ended."
            )
        )
