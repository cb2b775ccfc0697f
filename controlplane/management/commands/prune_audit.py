"""Delete audit rows older than the retention period (default 90 days), in batches."""

from __future__ import annotations

import time
from argparse import ArgumentParser
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.core.management.base import CommandError
from django.utils import timezone

from controlplane.audit import tool_calls_prune
from controlplane.management.service_command import ServiceCommand

PROGRESS_EVERY_S = 5.0


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
        if options["dry_run"]:
            deleted = tool_calls_prune(before=cutoff, dry_run=True)
        else:
            total = tool_calls_prune(before=cutoff, dry_run=True)
            self.stderr.write(f"Deleting {total} audit rows older than {cutoff:%Y-%m-%d %H:%M} UTC")
            deleted = tool_calls_prune(before=cutoff, progress=self._progress(total))
        verb = "Would delete" if options["dry_run"] else "Deleted"
        self.stdout.write(
            self.style.SUCCESS(
                f"{verb} {deleted} audit rows older than {cutoff:%Y-%m-%d %H:%M} UTC"
            )
        )

    def _progress(self, total: int) -> Callable[[int], None]:
        """Reports on stderr every PROGRESS_EVERY_S seconds: a year's prune takes minutes."""
        started = last = time.monotonic()

        def report(deleted: int) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last < PROGRESS_EVERY_S:
                return
            last = now
            rate = deleted / (now - started)
            share = f" ({100 * deleted / total:.0f}%)" if total else ""
            self.stderr.write(f"  deleted {deleted} of {total}{share}, {rate:.0f} rows/s")

        return report
