"""Revoke an API key by its prefix; calls with it get HTTP 401 from then on."""

from argparse import ArgumentParser
from typing import Any

from controlplane.management.service_command import ServiceCommand
from controlplane.tenants import api_key_revoke


class Command(ServiceCommand):
    help = "Revoke the API key whose prefix (shown in the admin) is KEY_PREFIX."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("key_prefix")

    def handle(self, *args: Any, **options: Any) -> None:
        api_key = api_key_revoke(prefix=options["key_prefix"])
        self.stdout.write(
            self.style.SUCCESS(f"Revoked {api_key.prefix} (tenant {api_key.tenant.slug})")
        )
