"""Base for operator commands: domain errors become one clear line and exit status 1."""

from __future__ import annotations

import getpass
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from controlplane.errors import ApplicationError


class ServiceCommand(BaseCommand):
    def execute(self, *args: Any, **options: Any) -> str | None:
        try:
            return super().execute(*args, **options)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc

    def secret_from_stdin(self, what: str) -> str:
        """A secret read from standard input (hidden when typed at a terminal), never from an
        argument, which would land in shell history and `ps`."""
        if sys.stdin.isatty():
            value = getpass.getpass(f"{what} (input hidden): ")
        else:
            value = sys.stdin.readline()
        if not value.strip():
            raise CommandError(f"no {what} on standard input")
        return value
