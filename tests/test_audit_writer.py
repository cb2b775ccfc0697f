"""Audit rows written after the answer: batched, retried, and never silently lost."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import DatabaseError, OperationalError, connection
from django.utils import timezone

from controlplane import audit, metrics
from controlplane.models import Tenant, ToolCall
from controlplane.tenants import tenant_create
from mcpserver import audit_writer, pipeline
from tests.calls import in_process_caller, run_tool_call_and_drain


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit_writer, "RETRY_DELAYS", (0.01, 0.01, 0.01))


@pytest.mark.django_db(transaction=True)
def test_rows_of_concurrent_calls_share_inserts(monkeypatch):
    caller = in_process_caller("batch", "req-batch")
    batch_sizes: list[int] = []
    write = audit.tool_calls_record

    def counted(records: Any) -> list[ToolCall]:
        batch_sizes.append(len(records))
        return write(records)

    monkeypatch.setattr(audit, "tool_calls_record", counted)

    async def twenty_calls() -> None:
        await asyncio.gather(
            *(pipeline.run_tool_call(caller, "no_such_tool", {"n": n}) for n in range(20))
        )
        await audit_writer.drain()

    asyncio.run(twenty_calls())
    assert sum(batch_sizes) == 20
    assert len(batch_sizes) < 20
    stored = ToolCall.objects.filter(tenant=caller.tenant)
    assert len({row.arguments_digest for row in stored}) == 20


@pytest.mark.django_db(transaction=True)
def test_a_batch_the_database_refuses_for_a_moment_is_written_on_retry(
    monkeypatch, quick_retries, caplog
):
    caller = in_process_caller("retry", "req-retry")
    write = audit.tool_calls_record
    failures = iter([OperationalError("server closed the connection"), OperationalError("busy")])

    def flaky(records: Any) -> list[ToolCall]:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return write(records)

    monkeypatch.setattr(audit, "tool_calls_record", flaky)
    with caplog.at_level(logging.WARNING):
        asyncio.run(run_tool_call_and_drain(caller, "no_such_tool", {}))
    assert ToolCall.objects.get(tenant=caller.tenant).request_id == "req-retry"
    retries = [r for r in caplog.records if getattr(r, "event", None) == "audit_write_retry"]
    assert len(retries) == 2


@pytest.mark.django_db(transaction=True)
def test_a_row_the_database_keeps_refusing_is_logged_in_full_and_counted(
    monkeypatch, quick_retries, caplog
):
    caller = in_process_caller("lost", "req-lost")

    def refused(records: Any) -> list[ToolCall]:
        raise DatabaseError("disk full")

    monkeypatch.setattr(audit, "tool_calls_record", refused)
    before = metrics.AUDIT_WRITE_FAILURES._value.get()
    arguments = {"email": "ann@example.com", "page": 2}
    result = asyncio.run(run_tool_call_and_drain(caller, "no_such_tool", arguments))

    assert result.is_error  # the caller still got its answer
    assert metrics.AUDIT_WRITE_FAILURES._value.get() == before + 1
    logged = [r for r in caplog.records if getattr(r, "event", None) == "audit_write_failed"]
    assert len(logged) == 1 and logged[0].levelno == logging.ERROR
    line = logged[0].getMessage()
    assert '"request_id": "req-lost"' in line
    assert '"outcome": "invalid_input"' in line
    assert '"page": 2' in line and '"email": "[redacted]"' in line
    assert "ann@example.com" not in line
    assert '"created_at": ' in line  # the call's time, not the time it was logged
    assert logged[0].key_prefix == caller.key_prefix  # the log filter masks it in the line
    assert not ToolCall.objects.filter(tenant=caller.tenant).exists()


@pytest.mark.django_db(transaction=True)
def test_a_row_whose_tenant_was_deleted_is_logged_and_does_not_hold_back_its_batch(
    monkeypatch, quick_retries, caplog
):
    kept = in_process_caller("kept", "req-kept")
    gone = in_process_caller("gone", "req-gone")
    monkeypatch.setattr(audit_writer, "BATCH_WINDOW_SECONDS", 0.5)  # one batch for both

    async def scenario() -> None:
        await pipeline.run_tool_call(kept, "no_such_tool", {})
        await pipeline.run_tool_call(gone, "no_such_tool", {})
        await sync_to_async(Tenant.objects.filter(pk=gone.tenant.pk).delete)()
        await audit_writer.drain()

    asyncio.run(scenario())
    assert ToolCall.objects.get(tenant=kept.tenant).request_id == "req-kept"
    logged = [r for r in caplog.records if getattr(r, "event", None) == "audit_write_failed"]
    assert [r.request_id for r in logged] == ["req-gone"]
    assert not [r for r in caplog.records if getattr(r, "event", None) == "audit_write_retry"]


@pytest.mark.django_db(transaction=True)
def test_operator_changes_succeed_while_audit_rows_are_being_written():
    """On SQLite a transaction that read before another connection committed could not write
    ("database is locked"); operators edit while the server keeps writing rows."""
    writer_tenant = tenant_create(slug=f"busy-{uuid.uuid4().hex[:8]}")
    record = audit.ToolCallRecord(
        tenant_id=writer_tenant.pk,
        api_key_id=None,
        key_prefix="qmcp_busy",
        tool="get_contact",
        arguments={},
        outcome="ok",
        upstream_status=200,
        latency_ms=1.0,
        request_id="req-busy",
        message="",
        called_at=timezone.now(),
    )
    stop = threading.Event()

    def keep_writing() -> None:
        try:
            while not stop.is_set():  # a call id of its own for each row (it is unique)
                audit.tool_calls_record([dataclasses.replace(record, call_id=uuid.uuid4().hex)])
        finally:
            connection.close()

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        created = [tenant_create(slug=f"op-{n}-{uuid.uuid4().hex[:6]}") for n in range(40)]
    finally:
        stop.set()
        writer.join()
    assert len(created) == 40
    assert ToolCall.objects.filter(tenant=writer_tenant).exists()


@pytest.mark.django_db(transaction=True)
def test_a_row_the_database_cannot_store_does_not_lose_the_other_tenants_rows(monkeypatch):
    """Any refusal that is not a lost connection (here a DataError, as psycopg raises for a
    value PostgreSQL cannot store) falls back to writing the rows one by one."""
    from django.db import DataError

    kept = in_process_caller("kept", "req-kept")
    poisoned = in_process_caller("poison", "req-poison")
    write = audit.tool_calls_record

    def refuses_poison(records: Any) -> list[ToolCall]:
        if any(record.request_id == "req-poison" for record in records):
            raise DataError("invalid byte sequence")
        return write(records)

    monkeypatch.setattr(audit, "tool_calls_record", refuses_poison)

    async def both() -> None:
        await asyncio.gather(
            pipeline.run_tool_call(kept, "no_such_tool", {}),
            pipeline.run_tool_call(poisoned, "no_such_tool", {}),
        )
        await audit_writer.drain()

    asyncio.run(both())
    assert ToolCall.objects.filter(tenant=kept.tenant).count() == 1
    assert not ToolCall.objects.filter(tenant=poisoned.tenant).exists()


@pytest.fixture
def spool_dir(settings, tmp_path, monkeypatch: pytest.MonkeyPatch) -> Path:
    settings.AUDIT_SPOOL_DIR = tmp_path / "audit-spool"
    monkeypatch.setattr(audit_writer, "REPLAY_INTERVAL_SECONDS", 0.05)
    return Path(settings.AUDIT_SPOOL_DIR)


class DatabaseOutage:
    """Audit writes and spool replays fail as when the database is unreachable, until end()."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.down = True
        monkeypatch.setattr(audit, "tool_calls_record", self._guarded(audit.tool_calls_record))
        monkeypatch.setattr(audit, "tool_calls_replay", self._guarded(audit.tool_calls_replay))

    def _guarded(self, write: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def guarded(rows: Any) -> Any:
            if self.down:
                raise OperationalError("connection refused")
            return write(rows)

        return guarded

    def end(self) -> None:
        self.down = False


def submitted_records(monkeypatch: pytest.MonkeyPatch) -> list[audit.ToolCallRecord]:
    """The records the pipeline hands to the audit writer, from now on."""
    records: list[audit.ToolCallRecord] = []
    submit = audit_writer.submit

    def recorded(record: audit.ToolCallRecord, *, tenant_slug: str) -> Any:
        records.append(record)
        return submit(record, tenant_slug=tenant_slug)

    monkeypatch.setattr(audit_writer, "submit", recorded)
    return records


def spool_text(spool_dir: Path) -> str:
    """What the spool files hold; the replay may rename one while it is read."""
    while True:
        try:
            return "".join(path.read_text() for path in sorted(spool_dir.glob("*.jsonl")))
        except FileNotFoundError:
            continue


async def eventually(condition: Callable[[], bool]) -> None:
    """Wait, off the event loop, until `condition` (which may query the database) holds."""
    deadline = time.monotonic() + 10
    while not await sync_to_async(condition)():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", ""])
    process.wait()
    return process.pid


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == name]


@pytest.mark.django_db(transaction=True)
def test_rows_refused_beyond_the_retries_are_spooled_and_replayed_with_their_call_time(
    monkeypatch, quick_retries, spool_dir, caplog
):
    caller = in_process_caller("outage", "req-outage")
    records = submitted_records(monkeypatch)
    outage = DatabaseOutage(monkeypatch)
    stored = ToolCall.objects.filter(tenant=caller.tenant)

    async def scenario() -> list[dict[str, Any]]:
        await asyncio.gather(
            *(pipeline.run_tool_call(caller, "no_such_tool", {"page": n}) for n in range(4))
        )
        await audit_writer.drain()
        await run_tool_call_and_drain(caller, "no_such_tool", {"page": 4})  # a second batch
        spooled = [json.loads(line) for line in spool_text(spool_dir).splitlines()]
        assert not await sync_to_async(stored.exists)()
        await asyncio.sleep(0.3)  # the outage goes on: the replay keeps trying
        outage.end()
        await eventually(lambda: stored.count() == 5 and not list(spool_dir.iterdir()))
        return spooled

    with caplog.at_level(logging.INFO):
        spooled = asyncio.run(scenario())

    assert len(spooled) == 5
    assert all(line["key_prefix"] == caller.key_prefix for line in spooled)
    called_at = {record.call_id: record.called_at for record in records}
    assert {row.call_id: row.created_at for row in stored} == called_at
    assert sorted(row.arguments["page"] for row in stored) == [0, 1, 2, 3, 4]
    assert (spool_dir.stat().st_mode & 0o777) == 0o700
    assert sum(int(r.getMessage().split()[0]) for r in events(caplog, "audit_spooled")) == 5
    assert events(caplog, "audit_replayed")
    assert not events(caplog, "audit_write_failed")


@pytest.mark.django_db(transaction=True)
def test_a_spool_replayed_again_after_its_rows_were_committed_stores_each_row_once(
    monkeypatch, quick_retries, spool_dir, caplog
):
    """As when a worker dies after committing the rows of a spool file but before deleting
    it, and another worker replays the file again."""
    caller = in_process_caller("twice", "req-twice")
    outage = DatabaseOutage(monkeypatch)
    stored = ToolCall.objects.filter(tenant=caller.tenant)

    async def scenario() -> None:
        await asyncio.gather(
            *(pipeline.run_tool_call(caller, "no_such_tool", {"page": n}) for n in range(3))
        )
        await audit_writer.drain()
        kept = spool_text(spool_dir)
        assert kept.count("\n") == 3
        outage.end()
        await eventually(lambda: stored.count() == 3 and not list(spool_dir.iterdir()))

        (spool_dir / f"audit-{dead_pid()}.jsonl").write_text(kept)
        await asyncio.sleep(0.1)  # past the replay interval: the next call looks again
        await run_tool_call_and_drain(caller, "no_such_tool", {"page": 9})
        await eventually(lambda: not list(spool_dir.iterdir()))

    with caplog.at_level(logging.INFO):
        asyncio.run(scenario())

    assert stored.count() == 4  # three replayed once, and the call that found the file
    assert len({row.call_id for row in stored}) == 4
    assert len(events(caplog, "audit_replayed")) == 2
    assert not events(caplog, "audit_write_failed")


@pytest.mark.django_db(transaction=True)
def test_a_spool_file_left_by_a_dead_process_is_replayed_by_a_live_worker(spool_dir, caplog):
    caller = in_process_caller("orphan", "req-live")
    an_hour_ago = timezone.now() - timedelta(hours=1)

    def line(request_id: str) -> str:
        record = audit.ToolCallRecord(
            tenant_id=caller.tenant.pk,
            api_key_id=caller.api_key_id,
            key_prefix=caller.key_prefix,
            tool="get_contact",
            arguments={"id": 7, "email": "ann@example.com"},
            outcome="ok",
            upstream_status=200,
            latency_ms=12.5,
            request_id=request_id,
            message="",
            called_at=an_hour_ago,
        )
        return json.dumps(audit.tool_call_stored(record)) + "\n"

    spool_dir.mkdir(mode=0o700)
    (spool_dir / f"audit-{dead_pid()}.jsonl").write_text(line("req-dead-1") + line("req-dead-2"))
    # A file a dead worker had taken to replay, and one a live process still writes.
    (spool_dir / f"audit-{dead_pid()}-0badc0ffee.jsonl").write_text(line("req-dead-3"))
    alive = spool_dir / f"audit-{os.getppid()}.jsonl"
    alive.write_text(line("req-alive"))

    async def scenario() -> None:
        await run_tool_call_and_drain(caller, "no_such_tool", {})
        await eventually(lambda: sorted(p.name for p in spool_dir.iterdir()) == [alive.name])

    with caplog.at_level(logging.INFO):
        asyncio.run(scenario())

    replayed = ToolCall.objects.filter(tenant=caller.tenant, request_id__startswith="req-dead")
    assert sorted(row.request_id for row in replayed) == ["req-dead-1", "req-dead-2", "req-dead-3"]
    assert {row.created_at for row in replayed} == {an_hour_ago}
    assert all(row.arguments == {"id": 7, "email": audit.REDACTED} for row in replayed)
    assert not ToolCall.objects.filter(request_id="req-alive").exists()
    assert len(events(caplog, "audit_replayed")) == 2


@pytest.mark.django_db(transaction=True)
def test_rows_are_logged_in_full_when_the_spool_cannot_be_written(
    monkeypatch, quick_retries, settings, tmp_path, caplog
):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    settings.AUDIT_SPOOL_DIR = blocker / "audit-spool"
    caller = in_process_caller("full", "req-full")
    DatabaseOutage(monkeypatch)

    asyncio.run(run_tool_call_and_drain(caller, "no_such_tool", {"page": 3}))

    assert len(events(caplog, "audit_spool_failed")) == 1
    (logged,) = events(caplog, "audit_write_failed")
    assert logged.levelno == logging.ERROR and '"page": 3' in logged.getMessage()
    assert '"request_id": "req-full"' in logged.getMessage()
