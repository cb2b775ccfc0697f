"""Tool calls held for approval, newest first; scripts read --json."""

import json
from argparse import ArgumentParser
from typing import Any

from controlplane.approvals import approval_summary, approvals_list
from controlplane.management.service_command import ServiceCommand
from controlplane.tenants import tenant_get


class Command(ServiceCommand):
    help = "List tool calls held for approval (all of them, or --pending), newest first."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--tenant", metavar="SLUG", help="Only this tenant's.")
        parser.add_argument("--pending", action="store_true", help="Only those still waiting.")
        parser.add_argument(
            "--json",
            action="store_true",
            help="An array of objects with id, tenant, tool, arguments, status, asked_by, "
            "created_at, expires_at, decided_by, decided_at, reason, executed_at.",
        )
        parser.add_argument("--limit", type=int, default=200, help="At most this many (200).")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["tenant"]:
            tenant_get(slug=options["tenant"])  # a clear error for an unknown slug
        rows = [
            approval_summary(approval)
            for approval in approvals_list(
                tenant_slug=options["tenant"], pending_only=options["pending"]
            )[: max(options["limit"], 0)]
        ]
        if options["json"]:
            self.stdout.write(json.dumps(rows, ensure_ascii=False))
            return
        if not rows:
            self.stdout.write("No tool calls held for approval.")
            return
        for row in rows:
            decided = f" by {row['decided_by']}" if row["decided_by"] else ""
            reason = f": {row['reason']}" if row["reason"] else ""
            self.stdout.write(
                f"#{row['id']}  {row['created_at'][:19]}Z  {row['tenant']}  {row['tool']}  "
                f"{row['status']}{decided}{reason}  asked by {row['asked_by']}"
            )
