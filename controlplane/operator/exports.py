"""The audit trail as CSV, streamed so an export of any size neither buffers nor times out."""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator

from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from django.utils import timezone

from controlplane import audit
from controlplane.models import ToolCall


class _Line:
    """A file-like sink for csv.writer that hands back the line just written."""

    def write(self, value: str) -> str:
        return value


async def _csv_lines(queryset: QuerySet[ToolCall]) -> AsyncIterator[str]:
    """CSV text, fetched and sent in chunks so an export of any size streams under ASGI."""
    writer = csv.writer(_Line())
    yield writer.writerow(audit.EXPORT_FIELDS)
    async for page in audit.tool_calls_in_pages_async(queryset):
        yield "".join(writer.writerow(audit.tool_call_csv_row(call)) for call in page)


def tool_calls_csv_response(queryset: QuerySet[ToolCall]) -> StreamingHttpResponse:
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    response = StreamingHttpResponse(_csv_lines(queryset), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="tool-calls-{stamp}.csv"'
    return response
