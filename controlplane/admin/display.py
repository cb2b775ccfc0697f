"""How the admin lists show times and yes/no values: times in UTC, said so, and booleans as
words, since the admin's red cross for "No" reads like an error."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.html import format_html

EMPTY = "\u2013"  # an en dash: no value


def utc(moment: datetime | None, *, seconds: bool = False) -> str:
    """2026-12-01 03:58 (UTC, as the column header says), or an en dash."""
    if moment is None:
        return EMPTY
    shown = timezone.localtime(moment, UTC) if timezone.is_aware(moment) else moment
    return shown.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def utc_with_zone(moment: datetime | None) -> str:
    """For change pages, where no column header says the zone: 2026-12-01 03:58:09 UTC."""
    return EMPTY if moment is None else f"{utc(moment, seconds=True)} UTC"


def word(value: bool, yes: str, no: str) -> str:
    """A neutral badge naming the state, e.g. word(key.read_only, "read-only", "read-write")."""
    return format_html('<span class="badge">{}</span>', yes if value else no)


class FullWidthList:
    """A ModelAdmin mixin: the list page without the navigation sidebar, whose 300 px a list
    needs on a 1366 px laptop (the header and breadcrumbs still lead everywhere)."""

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        context = {**(extra_context or {}), "is_nav_sidebar_enabled": False}
        return super().changelist_view(request, context)  # type: ignore[misc]
