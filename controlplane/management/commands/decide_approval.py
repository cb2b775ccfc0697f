"""Approve or reject a tool call held for approval."""

import getpass
from argparse import ArgumentParser
from typing import Any

from controlplane.approvals import decide
from controlplane.management.service_command import ServiceCommand


class Command(ServiceCommand):
    help = (
        "Approve or reject held call ID. An approved call runs once, when the assistant calls "
        "again; a rejected one is refused with the reason."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("approval_id", type=int, metavar="ID")
        parser.add_argument("decision", choices=["approve", "reject"])
        parser.add_argument("--reason", default="", help="Told to the assistant (and audited).")
        parser.add_argument(
            "--as",
            dest="operator",
            default="",
            metavar="NAME",
            help="Who decides, for the audit (default: the login name running the command).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        operator = options["operator"] or f"{getpass.getuser()} (command line)"
        approval = decide(
            approval_id=options["approval_id"],
            approve=options["decision"] == "approve",
            decided_by=operator,
            reason=options["reason"],
        )
        self.stdout.write(
            self.style.SUCCESS(
                f"#{approval.pk} {approval.tool} ({approval.tenant.slug}): {approval.status} "
                f"by {approval.decided_by}"
            )
        )
