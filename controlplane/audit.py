"""The audit trail: one append-only ToolCall row per tools/call, whatever happened.

Arguments are stored through an allow-list (record ids and paging; everything else redacted)
and bounded in size, next to a keyed digest of the raw arguments so two identical calls can
still be matched. Rows are written in batches
by mcpserver.audit_writer; a row the database keeps refusing is logged in full (redacted) at
ERROR and counted, and never fails the tool call that was already served.

A row carries the time of its call and a call id: rows kept in the writer's spool while the
database is unreachable (tool_call_stored) keep that time when they are replayed
(tool_calls_replay), and the unique call id makes a second replay of a row store nothing.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import QuerySet

from controlplane import metrics
from controlplane.models import ApiKey, Tenant, ToolCall
from qontak.endpoints import ENDPOINTS, ENDPOINTS_BY_NAME

logger = logging.getLogger(__name__)

REDACTED = "[redacted]"
TOOL_NAME_LENGTH = ToolCall._meta.get_field("tool").max_length or 100
# Stored arguments beyond this size are replaced by a note: the digest still matches them.
STORED_ARGUMENTS_BYTES = 4096
STRING_KEPT = 200


def _identifies_no_person(name: str) -> bool:
    """Record ids and paging say which records a call touched, never who someone is."""
    return name in ("id", "page", "per_page") or name.endswith(("_id", "_ids"))


# What may be stored of each tool's arguments: an allow-list, so a field added to a tool is
# redacted until someone decides otherwise. Names no tool declares follow the same rule.
STORED_ARGUMENTS: dict[str, frozenset[str]] = {
    endpoint.name: frozenset(
        name for name in endpoint.input_model.model_fields if _identifies_no_person(name)
    )
    for endpoint in ENDPOINTS
}


def _kept(tool: str, key: str, *, nested: bool) -> bool:
    if nested or tool not in STORED_ARGUMENTS:
        return _identifies_no_person(key)
    return key in STORED_ARGUMENTS[tool]


def redact_arguments(value: Any, *, tool: str = "", key: str = "", nested: bool = False) -> Any:
    """A copy of `value` safe to keep: only allowed fields keep their values, the others
    become REDACTED (nested objects, such as custom fields, keep their ids)."""
    if isinstance(value, dict):
        return {
            printable(str(k), STRING_KEPT): redact_arguments(
                v, tool=tool, key=str(k), nested=nested or bool(key)
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact_arguments(item, tool=tool, key=key, nested=nested) for item in value]
    if value is None:
        return None
    if not _kept(tool, key, nested=nested):
        return REDACTED
    return printable(value, STRING_KEPT) if isinstance(value, str) else value


def stored_arguments(tool: str, arguments: Any) -> Any:
    """The arguments as the audit row keeps them: redacted, and bounded in size."""
    redacted = redact_arguments(arguments, tool=tool)
    size = len(json.dumps(redacted, ensure_ascii=False, default=str))
    if size > STORED_ARGUMENTS_BYTES:
        return {"truncated": f"{size} bytes of redacted arguments; compare arguments_digest"}
    return redacted


def printable(text: str, limit: int) -> str:
    """`text` without control characters (a NUL makes PostgreSQL refuse a whole batch), cut
    to `limit` characters: anything an assistant sends can end up in a row or a log line."""
    kept = "".join(ch for ch in text if ch.isprintable())
    return kept if len(kept) <= limit else kept[: limit - 1] + "…"


def arguments_digest(arguments: Any) -> str:
    """Keyed (HMAC with SECRET_KEY), so a guessed phone number cannot be checked against it;
    identical arguments still get identical digests."""
    canonical = json.dumps(arguments, sort_keys=True, separators=(",", ":"), default=str)
    return hmac.new(_digest_key(settings.SECRET_KEY), canonical.encode(), "sha256").hexdigest()


@functools.lru_cache(maxsize=2)
def _digest_key(secret_key: str) -> bytes:
    """The digest's key, derived from SECRET_KEY once rather than on every row."""
    return hashlib.sha256(b"qmcp.audit-arguments" + secret_key.encode()).digest()


@dataclass(frozen=True)
class ToolCallRecord:
    tenant_id: int
    api_key_id: int | None
    key_prefix: str
    tool: str
    arguments: Any
    outcome: str
    upstream_status: int | None
    latency_ms: float
    request_id: str
    message: str
    called_at: datetime  # timezone-aware; the row's created_at
    call_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    qontak_user: str = ""  # the CRM user (Mekari SSO id) the call acted as, if any
    person: str = ""  # the person (username) of an OAuth call
    oauth_client: str = ""  # the assistant client of an OAuth call
    approval_id: int | None = None  # the approval the call waited for or ran under


def _row(record: ToolCallRecord) -> ToolCall:
    return ToolCall(
        created_at=record.called_at,
        call_id=record.call_id,
        tenant_id=record.tenant_id,
        api_key_id=record.api_key_id,
        key_prefix=record.key_prefix,
        tool=printable(record.tool, TOOL_NAME_LENGTH),
        arguments=stored_arguments(record.tool, record.arguments),
        arguments_digest=arguments_digest(record.arguments),
        outcome=record.outcome,
        upstream_status=record.upstream_status,
        latency_ms=record.latency_ms,
        request_id=record.request_id,
        message=record.message[:500],
        qontak_user=record.qontak_user,
        person=record.person,
        oauth_client=record.oauth_client,
        approval_id=record.approval_id,
    )


def tool_calls_record(records: Sequence[ToolCallRecord]) -> list[ToolCall]:
    """Write the rows in one INSERT. Blocking (database); raises DatabaseError.

    One row is a plain INSERT, one round trip in autocommit; bulk_create always adds BEGIN
    and COMMIT, worth it only when they are shared by several rows."""
    rows = [_row(record) for record in records]
    if len(rows) == 1:
        rows[0].save(force_insert=True)
        return rows
    return ToolCall.objects.bulk_create(rows, batch_size=500)


# What a spool line and a refused row's log line hold: the row as stored (arguments redacted,
# their digest, the call's time), never the raw arguments.
STORED_ROW_FIELDS = (
    "created_at",
    "call_id",
    "tenant_id",
    "api_key_id",
    "key_prefix",
    "tool",
    "arguments",
    "arguments_digest",
    "outcome",
    "upstream_status",
    "latency_ms",
    "request_id",
    "message",
    "qontak_user",
    "person",
    "oauth_client",
    "approval_id",
)


def _stored_values(row: ToolCall) -> dict[str, Any]:
    values = {name: getattr(row, name) for name in STORED_ROW_FIELDS}
    values["created_at"] = row.created_at.isoformat()
    return values


def tool_call_stored(record: ToolCallRecord) -> dict[str, Any]:
    """The row as the table would keep it, JSON-ready: what the audit spool writes to disk."""
    return _stored_values(_row(record))


def tool_call_restored(values: Mapping[str, Any]) -> ToolCall:
    """The unsaved row `values` (from tool_call_stored) describe; fields they lack take the
    model's defaults. Raises KeyError, TypeError or ValueError for values that are no row."""
    kept = {name: values[name] for name in STORED_ROW_FIELDS if name in values}
    kept["created_at"] = datetime.fromisoformat(values["created_at"])
    if kept["created_at"].tzinfo is None:
        raise ValueError("created_at has no time zone")
    return ToolCall(**kept)


def tool_calls_replay(rows: Sequence[ToolCall]) -> None:
    """Insert rows kept in the spool, skipping those whose call_id is already stored, so a row
    replayed twice (by two workers, or again after a crash) is stored once. Blocking
    (database); raises DatabaseError, e.g. IntegrityError for a row whose tenant is gone."""
    ToolCall.objects.bulk_create(rows, batch_size=500, ignore_conflicts=True)


def tool_call_not_recorded(record: ToolCallRecord | ToolCall, error: BaseException) -> None:
    """The last resort for a row the database refused: the whole row, redacted as it would
    have been stored, goes to the ERROR log, so the security log still holds the record.

    The log filter masks anything shaped like an API key in the message, the key prefix
    included; the `key_prefix` field of the line keeps it."""
    row = record if isinstance(record, ToolCall) else _row(record)
    metrics.AUDIT_WRITE_FAILURES.inc()
    logger.error(
        "audit row NOT written to the database (%s): %s",
        type(error).__name__,
        json.dumps(_stored_values(row), ensure_ascii=False, default=str),
        extra={
            "event": "audit_write_failed",
            "tool": row.tool,
            "outcome": row.outcome,
            "request_id": row.request_id,
            "key_prefix": row.key_prefix,
        },
    )


# New columns go last: scripts read the CSV by position.
EXPORT_FIELDS = (
    "created_at",
    "tenant",
    "key_prefix",
    "tool",
    "outcome",
    "upstream_status",
    "latency_ms",
    "request_id",
    "arguments_digest",
    "arguments",
    "message",
    "qontak_user",
    "person",
    "oauth_client",
    "approval_id",
    "approval_status",
    "approval_decided_by",
    "approval_decided_at",
)
# What an export reads of each row (EXPORT_FIELDS come from these), for QuerySet.only().
EXPORT_QUERY_FIELDS = (
    *(name for name in EXPORT_FIELDS if name != "tenant" and not name.startswith("approval_")),
    "approval_id",
    "tenant__slug",
    "approval__status",
    "approval__expires_at",
    "approval__decided_by",
    "approval__decided_at",
)


def tool_call_export_row(call: ToolCall) -> dict[str, Any]:
    """One audit row as exports show it (tenant and approval select_related)."""
    approval = call.approval
    return {
        "created_at": call.created_at.isoformat(),
        "tenant": call.tenant.slug,
        "key_prefix": call.key_prefix,
        "tool": call.tool,
        "outcome": call.outcome,
        "upstream_status": call.upstream_status,
        "latency_ms": round(call.latency_ms, 3),
        "request_id": call.request_id,
        "arguments_digest": call.arguments_digest,
        "arguments": call.arguments,
        "message": call.message,
        "qontak_user": call.qontak_user,
        "person": call.person,
        "oauth_client": call.oauth_client,
        "approval_id": call.approval_id,
        "approval_status": approval.shown_status if approval else "",
        "approval_decided_by": approval.decided_by if approval else "",
        "approval_decided_at": (
            approval.decided_at.isoformat() if approval and approval.decided_at else ""
        ),
    }


def _spreadsheet_safe(value: Any) -> Any:
    """Defuse values a spreadsheet would run as a formula (tool names come from assistants)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def tool_call_csv_row(call: ToolCall) -> list[Any]:
    """The CSV cells of one audit row, in EXPORT_FIELDS order, safe to open in a spreadsheet."""
    row = tool_call_export_row(call)
    row["arguments"] = json.dumps(row["arguments"], sort_keys=True)
    return [_spreadsheet_safe(row[field]) for field in EXPORT_FIELDS]


def tool_calls_export_rows(
    *, tenant_slug: str | None = None, since: datetime | None = None
) -> Iterator[ToolCall]:
    """Audit rows, oldest first, a page at a time (tool_calls_in_pages)."""
    queryset = ToolCall.objects.all()
    if tenant_slug:
        queryset = queryset.filter(tenant__slug=tenant_slug)
    if since:
        queryset = queryset.filter(created_at__gte=since)
    for page in tool_calls_in_pages(queryset):
        yield from page


EXPORT_PAGE = 2000


def _export_query(queryset: QuerySet[ToolCall]) -> QuerySet[ToolCall]:
    return (
        queryset.select_related("tenant", "approval")
        .only(*EXPORT_QUERY_FIELDS)
        .order_by("created_at", "pk")
    )


def _page_after(queryset: QuerySet[ToolCall], last: ToolCall | None) -> QuerySet[ToolCall]:
    """The next EXPORT_PAGE rows after `last` in (created_at, pk) order: a keyset page, read
    from the time index wherever the export has got to, in its own short query."""
    if last is not None:
        queryset = queryset.filter(created_at__gte=last.created_at).exclude(
            created_at=last.created_at, pk__lte=last.pk
        )
    return queryset[:EXPORT_PAGE]


def tool_calls_in_pages(queryset: QuerySet[ToolCall]) -> Iterator[list[ToolCall]]:
    """Every row of `queryset` for an export, oldest first, in keyset pages: memory stays flat
    for any number of rows without a server-side cursor, which a transaction pooler
    (DATABASE_POOLER=transaction) cannot keep across statements."""
    ordered = _export_query(queryset)
    last: ToolCall | None = None
    while page := list(_page_after(ordered, last)):
        yield page
        last = page[-1]


async def tool_calls_in_pages_async(queryset: QuerySet[ToolCall]) -> AsyncIterator[list[ToolCall]]:
    """tool_calls_in_pages for a streaming response served on the event loop."""
    ordered = _export_query(queryset)
    last: ToolCall | None = None
    while page := [call async for call in _page_after(ordered, last)]:
        yield page
        last = page[-1]


def tools_called() -> list[str]:
    """Every distinct tool name in the audit trail, read as one index probe per name (a loose
    index scan on toolcall_tool_time) instead of a DISTINCT over every row."""
    table = connection.ops.quote_name(ToolCall._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH RECURSIVE called(tool) AS ("  # noqa: S608 - the table name is the model's
            f" SELECT MIN(tool) FROM {table}"
            f" UNION ALL"
            f" SELECT (SELECT MIN(tool) FROM {table} WHERE tool > called.tool)"
            f" FROM called WHERE called.tool IS NOT NULL"
            f") SELECT tool FROM called WHERE tool IS NOT NULL"
        )
        return [row[0] for row in cursor.fetchall()]


def rows_estimate(queryset: QuerySet[Any]) -> int | None:
    """The PostgreSQL planner's estimate of how many rows `queryset` has (None elsewhere): a
    count of a large audit list would read all of it on every page view."""
    if connection.vendor != "postgresql":
        return None
    plan = queryset.explain(format="json")
    parsed = json.loads(plan) if isinstance(plan, str) else plan
    return int(parsed[0]["Plan"]["Plan Rows"])


def tool_calls_search(queryset: QuerySet[ToolCall], terms: str) -> QuerySet[ToolCall]:
    """The calls matching every word of `terms`, each read as what it names, in this order: an
    API key prefix, a tool, a tenant slug, a person, else a request id. Whole values only, each
    through an index that ends in the time, so a search answers as fast as a filter."""
    for word in terms.split():
        keys = list(ApiKey.objects.filter(prefix=word).values_list("pk", flat=True))
        if keys:
            queryset = queryset.filter(api_key_id__in=keys)
        elif word in ENDPOINTS_BY_NAME:
            queryset = queryset.filter(tool=word)
        elif tenant := Tenant.objects.filter(slug=word).values_list("pk", flat=True).first():
            queryset = queryset.filter(tenant_id=tenant)
        elif ToolCall.objects.filter(person=word).exists():
            queryset = queryset.filter(person=word)
        else:
            queryset = queryset.filter(request_id=word)
    return queryset


PRUNE_BATCH = 5000
# Autovacuum's own throttle: an unthrottled VACUUM of a large audit table writes its WAL so
# fast that concurrent audit inserts queue behind the flushes (bench/audit_scale.py).
PRUNE_VACUUM_COST_DELAY = "2ms"


def tool_calls_prune(
    *,
    before: datetime,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Delete rows created before `before`, oldest first, PRUNE_BATCH rows per statement (each
    its own short transaction, locking only those rows), then VACUUM on PostgreSQL, paced like
    autovacuum, so the space goes to new rows instead of the table growing. Returns the count;
    `progress` is called with the running count after each batch."""
    old = ToolCall.objects.filter(created_at__lt=before)
    if dry_run:
        return old.count()
    deleted = 0
    while batch := list(old.order_by("created_at").values_list("pk", flat=True)[:PRUNE_BATCH]):
        deleted += ToolCall.objects.filter(pk__in=batch).delete()[0]
        if progress is not None:
            progress(deleted)
    # VACUUM cannot run in a transaction: a caller inside one (a test) vacuums nothing.
    if deleted and connection.vendor == "postgresql" and not connection.in_atomic_block:
        with connection.cursor() as cursor:
            # Behind a transaction pooler the three may reach different server sessions: the
            # VACUUM then runs unpaced, and the setting only paces that session's VACUUMs.
            cursor.execute(f"SET vacuum_cost_delay = '{PRUNE_VACUUM_COST_DELAY}'")
            cursor.execute(f"VACUUM (ANALYZE) {connection.ops.quote_name(ToolCall._meta.db_table)}")
            cursor.execute("RESET vacuum_cost_delay")
    return deleted
