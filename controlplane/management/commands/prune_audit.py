"""Delete audit rows older than the retention period (default 90 days), in batches."""

from __future__ import annotations

from argparse import ArgumentParser
from datetime import timedelta
from typing import Any

from django.core.management.base import CommandError
from django.utils import timezone

from controlplane.audit import tool_calls_prune
from controlplane.management.service_command import ServiceCommand


class Command(ServiceCommand):
    help = "Delete tool-call audit rows older than --older-than DAYS (default 90)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--older-than", type=int, default=90, metavar="DAYS")
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would be deleted; delete nothing."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["older_than"]
        if days < 1:
            raise CommandError("--older-than must be at least 1 day")
        cutoff = timezone.now() - timedelta(days=days)
        deleted = tool_calls_prune(before=cutoff, dry_run=options["dry_run"])
        verb = "Would delete" if options["dry_run"] else "Deleted"
        self.stdout.write(
            self.style.SUCCESS(
                f"{verb} {deleted} audit rows older than {cutoff:%Y-%m-%d %H:%M} UTC"
            )
        )
