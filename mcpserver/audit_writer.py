"""Audit rows are committed shortly after the answer is sent, the rows of the calls of one batch
window in one INSERT.

Writing a row before answering would cost every call a thread hop and a database commit
before its answer, most of the database work under load. The request's
ASGI task still waits for its own row (mcpserver.server), so a graceful shutdown finishes every
write; only the client stops waiting. Either way the row is written after Qontak has acted, so
a worker killed mid-call loses the row it would have lost before; one killed with SIGKILL also
loses the rows still waiting in the window.

A batch the database refuses is retried after RETRY_DELAYS. If the database is still
unreachable after them (OperationalError or InterfaceError: connection refused or lost, server
shutting down, SQLite's lock timeout), the rows go to the spool instead: one JSON-lines file per
worker process in AUDIT_SPOOL_DIR (`audit-<pid>.jsonl`), a line per row as the table would
keep it (redacted arguments, digest, call time, call id; never the raw arguments), fsynced
before the rows count as written, so a graceful shutdown during an outage keeps them too.

While spool files exist, a task of each worker replays them every REPLAY_INTERVAL_SECONDS:
its own, and those left by processes no longer alive (a pid reused by a live process holds its
file back until that one ends too). A file is first renamed to a name of the replaying process
(`audit-<pid>-<claim>.jsonl`), so a worker never replays a file another has taken and its own
writes go on in a new file; it is deleted once all its rows are committed. Rows keep their
call time; a row whose call id is already stored is skipped, so a file replayed again after a
crash stores nothing twice. Replayed rows are not published to the live feed. The directory
belongs to the workers of one host and one database: another database would get the rows.

A row is logged in full at ERROR instead (controlplane.audit.tool_call_not_recorded) when the
batch failed for another reason, when the spool cannot be written (disk full), or when the
database refuses the row itself. A row that breaks a constraint (its tenant deleted mid-call)
or that the database cannot take is logged at once and does not hold back the rest of its
batch. Each row is also published to the live feed while an operator watches it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from asgiref.sync import sync_to_async
from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    close_old_connections,
)
from django.db import connection as db_connection

from controlplane import audit, audit_spool
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
# Errors that say the database cannot be reached, rather than that it refuses these rows.
UNREACHABLE = (InterfaceError, OperationalError)
# While spool files exist, how often the replay tries the database again; also how often a
# worker with traffic looks for files that dead processes left.
REPLAY_INTERVAL_SECONDS = 5.0


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
    replaying: asyncio.Task[None] | None = None
    next_spool_scan: float = 0.0


# Futures belong to the loop that made them: one writer per running loop.
_writers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Writer] = (
    weakref.WeakKeyDictionary()
)
_next_connection_check = 0.0


def submit(record: audit.ToolCallRecord, *, tenant_slug: str) -> asyncio.Future[None]:
    """Queue the row; the future is done once it is written, spooled, or logged as unwritten.

    Also starts the spool replay now and then (REPLAY_INTERVAL_SECONDS), so a worker picks up
    the files a dead one left."""
    loop = asyncio.get_running_loop()
    writer = _writers.setdefault(loop, _Writer())
    pending = _Pending(record, tenant_slug, loop.create_future())
    writer.queue.append(pending)
    if writer.flushing is None or writer.flushing.done():
        writer.flushing = loop.create_task(_flush(writer))
    if time.monotonic() >= writer.next_spool_scan:
        _replay_in_background(writer)
    return pending.written


async def drain() -> None:
    """Wait until every row queued on this loop is written or spooled (shutdown, tests); the
    spool's replay is not waited for."""
    writer = _writers.get(asyncio.get_running_loop())
    while writer is not None and writer.flushing is not None and not writer.flushing.done():
        await asyncio.shield(writer.flushing)


async def _flush(writer: _Writer) -> None:
    while writer.queue:
        await asyncio.sleep(BATCH_WINDOW_SECONDS)
        batch, writer.queue = writer.queue, []
        written = await _write_with_retries(writer, batch)
        for pending in batch:
            if not pending.written.done():
                pending.written.set_result(None)
        if written is not None and written.feed_watched:
            for row, pending in zip(written.rows, batch, strict=True):
                if row is not None:
                    live.publish_in_background(row, tenant_slug=pending.tenant_slug)


async def _write_with_retries(writer: _Writer, batch: list[_Pending]) -> _WrittenBatch | None:
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
    if isinstance(failure, UNREACHABLE) and await _spooled(records, failure):
        _replay_in_background(writer)
        return None
    for record in records:
        audit.tool_call_not_recorded(record, failure or RuntimeError("unknown"))
    return None


def _check_connection() -> None:
    """Replace an old or unusable connection, at most every CONNECTION_CHECK_SECONDS."""
    global _next_connection_check
    now = time.monotonic()
    if now >= _next_connection_check:
        close_old_connections()
        _next_connection_check = now + CONNECTION_CHECK_SECONDS


def _connection_lost() -> None:
    global _next_connection_check
    db_connection.close()  # broken: the next attempt opens a fresh one
    _next_connection_check = 0.0


def _write(records: list[audit.ToolCallRecord]) -> _WrittenBatch:
    """The rows, and whether a live feed wants them: one thread hop for both."""
    _check_connection()
    try:
        rows: list[ToolCall | None] = list(audit.tool_calls_record(records))
    except UNREACHABLE:
        _connection_lost()
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
    except UNREACHABLE:
        _connection_lost()
        raise
    except DatabaseError as exc:
        audit.tool_call_not_recorded(record, exc)
        return None


# The spool: rows the database could not take, kept on local disk until it can.


async def _spooled(records: list[audit.ToolCallRecord], failure: BaseException) -> bool:
    """Whether the rows are now in this worker's spool file, on disk; False, logged, when the
    spool cannot be written."""
    try:
        path = await sync_to_async(audit_spool.append, thread_sensitive=False)(records)
    except Exception as exc:  # OSError above all; whatever it is, the rows go to the log
        logger.error(
            "audit spool not writable (%s); logging the %d rows instead",
            exc,
            len(records),
            extra={"event": "audit_spool_failed"},
        )
        return False
    logger.warning(
        "%d audit rows spooled to %s: the database is unreachable (%s)",
        len(records),
        path,
        type(failure).__name__,
        extra={"event": "audit_spooled"},
    )
    return True


def _replay_in_background(writer: _Writer) -> None:
    if writer.replaying is None or writer.replaying.done():
        writer.replaying = asyncio.get_running_loop().create_task(_replay_spool(writer))


async def _replay_spool(writer: _Writer) -> None:
    """Replay the spool files this process may take, every REPLAY_INTERVAL_SECONDS while the
    database is unreachable, until none is left."""
    waiting = False
    try:
        while paths := await sync_to_async(audit_spool.files, thread_sensitive=False)():
            try:
                for path in paths:
                    await _replay_file(path)
            except UNREACHABLE as exc:
                if not waiting:
                    logger.warning(
                        "audit spool kept until the database answers (%s); retrying every %.0f s",
                        type(exc).__name__,
                        REPLAY_INTERVAL_SECONDS,
                        extra={"event": "audit_replay_waiting"},
                    )
                waiting = True
            await asyncio.sleep(REPLAY_INTERVAL_SECONDS)
    except OSError as exc:  # the spool directory or a file in it cannot be read
        logger.error(
            "audit spool replay failed (%s); trying again later",
            exc,
            extra={"event": "audit_replay_failed"},
        )
    except Exception:
        logger.exception("audit spool replay failed", extra={"event": "audit_replay_failed"})
    finally:
        writer.next_spool_scan = time.monotonic() + REPLAY_INTERVAL_SECONDS


async def _replay_file(path: Path) -> None:
    """Insert the rows of one spool file, a chunk per transaction, and delete the file once
    all are committed. Raises InterfaceError or OperationalError while the database is
    unreachable; the file then stays, taken by this process."""
    off_loop = sync_to_async(audit_spool.claim, thread_sensitive=False)
    claimed = await off_loop(path)
    if claimed is None:
        return
    spool = await sync_to_async(audit_spool.open_file, thread_sensitive=False)(claimed)
    replayed = 0
    try:
        while (
            rows := await sync_to_async(audit_spool.read_rows, thread_sensitive=False)(spool)
        ) is not None:
            if rows:
                await sync_to_async(_insert_replayed)(rows)
                replayed += len(rows)
    finally:
        spool.close()
    await sync_to_async(claimed.unlink, thread_sensitive=False)(missing_ok=True)
    logger.info(
        "%d audit rows replayed from the spool (%s)",
        replayed,
        path.name,
        extra={"event": "audit_replayed"},
    )


def _insert_replayed(rows: list[ToolCall]) -> None:
    """Commit replayed rows in one INSERT. A row the database refuses for itself (its tenant
    deleted since) is logged and dropped rather than retried forever."""
    _check_connection()
    try:
        audit.tool_calls_replay(rows)
    except UNREACHABLE:
        _connection_lost()
        raise
    except DatabaseError:
        for row in rows:
            try:
                audit.tool_calls_replay([row])
            except UNREACHABLE:
                _connection_lost()
                raise
            except DatabaseError as exc:
                audit.tool_call_not_recorded(row, exc)
