"""Refresh Qontak tokens that are about to expire, from cron, on any number of hosts.

Each tenant is rotated under the same cross-process lock tool calls use. The run first notes
every secret's Vault version; a secret whose version changed by the time the lock is ours was
just rotated by a concurrent run and is left alone, so runs on several hosts never
double-rotate. One
tenant's failure is reported and the loop goes on; the exit status is 1 if any failed.
"""

from __future__ import annotations

import json
import sys
from argparse import ArgumentParser
from typing import Any

from controlplane.credentials import Rotation, stored_version, token_rotate
from controlplane.errors import ApplicationError
from controlplane.management.service_command import ServiceCommand
from controlplane.models import Tenant
from controlplane.tenants import tenant_get

DEFAULT_WINDOW_MINUTES = 60


class Command(ServiceCommand):
    help = (
        "Refresh tokens expiring within --window minutes (every token with --force). "
        "Exit status 1 when any tenant failed."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--tenant", metavar="SLUG", help="Only this tenant.")
        parser.add_argument("--force", action="store_true", help="Rotate regardless of expiry.")
        parser.add_argument(
            "--dry-run", action="store_true", help="Report what would rotate; change nothing."
        )
        parser.add_argument("--json", action="store_true", help="One JSON document on stdout.")
        parser.add_argument(
            "--window",
            type=int,
            default=DEFAULT_WINDOW_MINUTES,
            metavar="MINUTES",
            help=f"Rotate tokens expiring within this many minutes (default "
            f"{DEFAULT_WINDOW_MINUTES}).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["tenant"]:
            tenants = [tenant_get(slug=options["tenant"])]
        else:
            tenants = list(Tenant.objects.filter(is_active=True).order_by("slug"))
        seen_versions = {tenant.pk: self._seen_version(tenant) for tenant in tenants}
        show_progress = not options["json"] and sys.stderr.isatty()
        results: list[Rotation] = []
        for index, tenant in enumerate(tenants, start=1):
            if show_progress:
                self._progress(index, len(tenants), tenant.slug)
            results.append(
                token_rotate(
                    tenant=tenant,
                    seen_version=seen_versions[tenant.pk],
                    window=options["window"] * 60,
                    force=options["force"],
                    dry_run=options["dry_run"],
                )
            )
        if show_progress:
            sys.stderr.write("\r\033[K")
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "dry_run": options["dry_run"],
                        "tenants": [
                            {"slug": r.slug, "action": r.action, "detail": r.detail}
                            for r in results
                        ],
                        "failed": sum(r.failed for r in results),
                    }
                )
            )
        else:
            self._table(results)
        if any(r.failed for r in results):
            raise SystemExit(1)

    def _seen_version(self, tenant: Tenant) -> int | None:
        if tenant.auth == Tenant.Auth.MEKARI_HMAC:
            return None  # nothing to rotate: token_rotate says so
        try:
            return stored_version(tenant=tenant)
        except ApplicationError:
            return None  # token_rotate reports the same failure for this tenant

    def _progress(self, index: int, total: int, slug: str) -> None:
        width = 30
        filled = width * index // max(total, 1)
        bar = "#" * filled + "-" * (width - filled)
        sys.stderr.write(f"\r[{bar}] {index}/{total} {slug[:40]}\033[K")
        sys.stderr.flush()

    def _table(self, results: list[Rotation]) -> None:
        if not results:
            self.stdout.write("No active tenants.")
            return
        slug_width = max(len("tenant"), *(len(r.slug) for r in results))
        self.stdout.write(f"{'tenant':<{slug_width}}  {'result':<14}  detail")
        styles = {"failed": self.style.ERROR, "rotated": self.style.SUCCESS}
        for r in results:
            style = styles.get(r.action, str)
            self.stdout.write(f"{r.slug:<{slug_width}}  {style(f'{r.action:<14}')}  {r.detail}")
        counts = {
            action: sum(r.action == action for r in results)
            for action in ("rotated", "would_rotate", "fresh", "not_applicable", "failed")
        }
        self.stdout.write(", ".join(f"{n} {action}" for action, n in counts.items() if n))
