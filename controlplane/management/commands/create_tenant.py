"""Create a tenant (one Qontak account) and its Vault credential reference."""

from argparse import ArgumentParser
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from controlplane.management.service_command import ServiceCommand
from controlplane.models import Tenant
from controlplane.qontak_urls import validate_qontak_base_url
from controlplane.tenants import tenant_create


class Command(ServiceCommand):
    help = (
        "Create a tenant. Next: set_hmac_credential SLUG --client-id ID (Mekari gateway) or "
        "set_refresh_token SLUG (legacy OAuth), then issue_api_key SLUG."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("slug", help="Identifier, e.g. acme (letters, digits, - and _).")
        parser.add_argument("--name", default="", help="Display name (defaults to the slug).")
        parser.add_argument(
            "--qontak-base-url",
            default="",
            help="Overrides QONTAK_BASE_URL for this tenant: https:// and a host listed in "
            "QONTAK_ALLOWED_HOSTS. Default: QONTAK_BASE_URL, or MEKARI_GATEWAY_URL for "
            "--auth mekari-hmac.",
        )
        parser.add_argument(
            "--auth",
            choices=Tenant.Auth.values,
            default=Tenant.Auth.QONTAK_OAUTH,
            help="How Qontak is reached: mekari-hmac (the Mekari API Gateway with a client id "
            "and secret: what companies onboarding today are given) or qontak-oauth (the "
            "legacy refresh token). Default: qontak-oauth.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["qontak_base_url"]:
            try:
                validate_qontak_base_url(options["qontak_base_url"])
            except ValidationError as exc:
                raise CommandError(f"--qontak-base-url: {' '.join(exc.messages)}") from None
        tenant = tenant_create(
            slug=options["slug"],
            name=options["name"],
            qontak_base_url=options["qontak_base_url"],
            auth=options["auth"],
        )
        self.stdout.write(
            self.style.SUCCESS(f"Created tenant {tenant.slug} ({tenant.get_auth_display()})")
        )
