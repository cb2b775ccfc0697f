"""Audit rows are committed shortly after the answer is sent, the rows of the calls of one batch
window in one INSERT.

Writing a row before answering would cost every call a thread hop and a database commit
before its answer, most of the database work under load. The request's
ASGI task still waits for its own row (mcpserver.server), so a graceful shutdown finishes every
write; only the client stops waiting. Either way the row is written after Qontak has acted, so
a worker killed mid-call loses the row it would have lost before; one killed with SIGKILL also
loses the rows still waiting in the window.

A batch the database refuses is retried after RETRY_DELAYS; a row still refused is logged in
full at ERROR (controlplane.audit.tool_call_not_recorded). A row that breaks a constraint
(its tenant deleted mid-call) or that the database cannot take is logged at once and does not
hold back the rest of its batch.
Each row is also published to the live feed while an operator watches it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from dataclasses import dataclass, field

from asgiref.sync import sync_to_async
from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    close_old_connections,
)
from django.db import connection as db_connection

from controlplane import audit
from controlplane.models import ToolCall
from controlplane.operator import live

logger = logging.getLogger(__name__)

RETRY_DELAYS = (0.2, 1.0, 3.0)
# How long the first row of a batch waits for others. Nobody waits for it but the request's
# own task; each batch costs a thread hop, a round trip and a commit, so a longer window means
# less CPU per call (the README's Performance section has the figures). It is also how much of
# the audit trail a worker killed with SIGKILL can lose on top of the calls in flight.
BATCH_WINDOW_SECONDS = 0.1
# A kept connection is checked (age, health) at most this often, not once per batch: the
# check is a round trip of its own. A broken connection is also replaced when a write fails.
CONNECTION_CHECK_SECONDS = 10.0


@dataclass
class _Pending:
    record: audit.ToolCallRecord
    tenant_slug: str
    written: asyncio.Future[None]


@dataclass(frozen=True)
class _WrittenBatch:
    """What one write of a batch produced: a row per record (None where the database refused
    that one), and whether an operator is watching the live feed."""

    rows: list[ToolCall | None]
    feed_watched: bool


@dataclass
class _Writer:
    queue: list[_Pending] = field(default_factory=list)
    flushing: asyncio.Task[None] | None = None


# Futures belong to the loop that made them: one writer per running loop.
_writers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Writer] = (
    weakref.WeakKeyDictionary()
)
_next_connection_check = 0.0


def submit(record: audit.ToolCallRecord, *, tenant_slug: str) -> asyncio.Future[None]:
    """Queue the row; the future is done once it is written (or logged as unwritten)."""
    loop = asyncio.get_running_loop()
    writer = _writers.setdefault(loop, _Writer())
    pending = _Pending(record, tenant_slug, loop.create_future())
    writer.queue.append(pending)
    if writer.flushing is None or writer.flushing.done():
        writer.flushing = loop.create_task(_flush(writer))
    return pending.written


async def drain() -> None:
    """Wait until every row queued on this loop is written (shutdown, tests)."""
    writer = _writers.get(asyncio.get_running_loop())
    while writer is not None and writer.flushing is not None and not writer.flushing.done():
        await asyncio.shield(writer.flushing)


async def _flush(writer: _Writer) -> None:
    while writer.queue:
        await asyncio.sleep(BATCH_WINDOW_SECONDS)
        batch, writer.queue = writer.queue, []
        written = await _write_with_retries(batch)
        for pending in batch:
            if not pending.written.done():
                pending.written.set_result(None)
        if written is not None and written.feed_watched:
            for row, pending in zip(written.rows, batch, strict=True):
                if row is not None:
                    live.publish_in_background(row, tenant_slug=pending.tenant_slug)


async def _write_with_retries(batch: list[_Pending]) -> _WrittenBatch | None:
    records = [pending.record for pending in batch]
    failure: BaseException | None = None
    for delay in (*RETRY_DELAYS, None):
        try:
            return await sync_to_async(_write)(records)
        except DatabaseError as exc:
            failure = exc
        except Exception as exc:  # not the database's doing: retrying will not help
            logger.exception("audit batch failed", extra={"event": "audit_write_failed"})
            failure = exc
            break
        if delay is not None:
            logger.warning(
                "audit batch of %d rows not written (%s); retrying in %.1f s",
                len(records),
                type(failure).__name__,
                delay,
                extra={"event": "audit_write_retry"},
            )
            await asyncio.sleep(delay)
    for record in records:
        audit.tool_call_not_recorded(record, failure or RuntimeError("unknown"))
    return None


def _write(records: list[audit.ToolCallRecord]) -> _WrittenBatch:
    """The rows, and whether a live feed wants them: one thread hop for both."""
    global _next_connection_check
    now = time.monotonic()
    if now >= _next_connection_check:
        close_old_connections()
        _next_connection_check = now + CONNECTION_CHECK_SECONDS
    try:
        rows: list[ToolCall | None] = list(audit.tool_calls_record(records))
    except (InterfaceError, OperationalError):
        db_connection.close()  # broken: the next attempt opens a fresh one
        _next_connection_check = 0.0
        raise
    except DatabaseError:  # one row the database cannot take (a constraint, bad data)
        rows = [_write_alone(record) for record in records]
    return _WrittenBatch(rows=rows, feed_watched=live.feed_watched())


def _write_alone(record: audit.ToolCallRecord) -> ToolCall | None:
    """One row of a batch the database refused as a whole (say its tenant was deleted while
    the call ran, or a value it cannot store): retrying cannot fix such a row, and it must
    not hold back the other tenants' rows. A lost connection still fails the whole batch."""
    try:
        return audit.tool_calls_record([record])[0]
    except (InterfaceError, OperationalError):
        raise
    except DatabaseError as exc:
        audit.tool_call_not_recorded(record, exc)
        return None
