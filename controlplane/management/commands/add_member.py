"""Make a person a member of a tenant, so they can connect an assistant with OAuth."""

from argparse import ArgumentParser
from typing import Any

from controlplane.management.service_command import ServiceCommand
from controlplane.people import member_add, person_exists
from controlplane.tenants import tenant_get


class Command(ServiceCommand):
    help = (
        "Make USERNAME a member of SLUG (or update the membership). A new user's password is "
        "read from standard input."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("username")
        parser.add_argument(
            "--qontak-user",
            default="",
            metavar="SSO_ID",
            help="Mekari SSO id (UUID) of the Qontak CRM user this person's calls act as; "
            "default: the tenant's default CRM user.",
        )
        parser.add_argument(
            "--read-only",
            action="store_true",
            help="Only tools annotated readOnlyHint, whatever the person's assistant is granted.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = tenant_get(slug=options["slug"])
        username = options["username"]
        password = None if person_exists(username) else self.secret_from_stdin("password")
        membership, created = member_add(
            tenant=tenant,
            username=username,
            password=None if password is None else password.rstrip("\r\n"),
            qontak_user=options["qontak_user"],
            read_only=options["read_only"],
        )
        access = "read-only" if membership.read_only else "read and write"
        self.stdout.write(
            self.style.SUCCESS(
                f"{'Created user ' + username + ' and made them' if created else username + ' is'}"
                f" a member of {tenant.slug} ({access}). They connect an assistant with the "
                "/mcp URL and sign in with this username."
            )
        )
