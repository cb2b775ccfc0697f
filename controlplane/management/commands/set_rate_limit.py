"""Set a tenant's rate limit (all tools or one tool, per tenant or per key)."""

from argparse import ArgumentParser
from typing import Any

from controlplane.management.service_command import ServiceCommand
from controlplane.policies import rate_limit_set
from controlplane.tenants import tenant_get


class Command(ServiceCommand):
    help = "Set RATE (10/s, 120/m, 5000/h) for SLUG; applies to every worker within seconds."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("rate", help="COUNT/UNIT with UNIT s, m, h or d.")
        parser.add_argument("--tool", default="", help="Limit only this tool.")
        parser.add_argument("--per-key", action="store_true", help="Count each API key separately.")

    def handle(self, *args: Any, **options: Any) -> None:
        rate_limit_set(
            tenant=tenant_get(slug=options["slug"]),
            rate=options["rate"],
            tool=options["tool"],
            per_key=options["per_key"],
        )
        scope = options["tool"] or "all tools"
        per = " per key" if options["per_key"] else ""
        self.stdout.write(
            self.style.SUCCESS(f"{options['slug']}: {options['rate']} for {scope}{per}")
        )
