"""Export the tool-call audit trail as JSON lines or CSV, streamed row by row."""

import csv
import json
from argparse import ArgumentParser
from datetime import UTC
from typing import Any

from django.core.management.base import CommandError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from controlplane.audit import (
    EXPORT_FIELDS,
    tool_call_csv_row,
    tool_call_export_row,
    tool_calls_export_rows,
)
from controlplane.management.service_command import ServiceCommand


class Command(ServiceCommand):
    help = "Write audit rows (oldest first) to stdout as jsonl (default) or csv."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--tenant", default=None, help="Only this tenant's calls.")
        parser.add_argument("--since", default=None, help="ISO 8601 time, e.g. 2026-11-01T00:00Z")
        parser.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")

    def handle(self, *args: Any, **options: Any) -> None:
        since = None
        if options["since"]:
            since = parse_datetime(options["since"].replace("Z", "+00:00"))
            if since is not None and timezone.is_naive(since):
                since = timezone.make_aware(since, UTC)
            if since is None:
                raise CommandError(
                    f"--since '{options['since']}' is not an ISO 8601 time "
                    "(e.g. 2026-11-01T00:00:00+00:00)"
                )
        calls = tool_calls_export_rows(tenant_slug=options["tenant"], since=since)
        if options["format"] == "csv":
            writer = csv.writer(self.stdout)
            writer.writerow(EXPORT_FIELDS)
            for call in calls:
                writer.writerow(tool_call_csv_row(call))
        else:
            for call in calls:
                self.stdout.write(json.dumps(tool_call_export_row(call), ensure_ascii=False))
