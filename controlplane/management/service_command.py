"""Base for operator commands: domain errors become one clear line and exit status 1."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from controlplane.errors import ApplicationError


class ServiceCommand(BaseCommand):
    def execute(self, *args: Any, **options: Any) -> str | None:
        try:
            return super().execute(*args, **options)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
