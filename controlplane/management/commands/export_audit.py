"""Export the tool-call audit trail as JSON lines or CSV, streamed row by row."""

import csv
import json
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import CommandError
from django.utils.dateparse import parse_datetime

from controlplane.audit import EXPORT_FIELDS, tool_calls_export_rows
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
            if since is None:
                raise CommandError(
                    f"--since '{options['since']}' is not an ISO 8601 time "
                    "(e.g. 2026-11-01T00:00:00+00:00)"
                )
        rows = tool_calls_export_rows(tenant_slug=options["tenant"], since=since)
        if options["format"] == "csv":
            writer = csv.DictWriter(self.stdout, fieldnames=EXPORT_FIELDS)
            writer.writeheader()
            for row in rows:
                writer.writerow({**row, "arguments": json.dumps(row["arguments"])})
        else:
            for row in rows:
                self.stdout.write(json.dumps(row, ensure_ascii=False))
