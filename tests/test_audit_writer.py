"""Audit rows written after the answer: batched, retried, and never silently lost."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import DatabaseError, OperationalError, connection

from controlplane import audit, metrics
from controlplane.models import Tenant, ToolCall
from controlplane.tenants import tenant_create
from mcpserver import audit_writer, pipeline
from tests.conftest import in_process_caller, run_tool_call_and_drain


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
    )
    stop = threading.Event()

    def keep_writing() -> None:
        try:
            while not stop.is_set():
                audit.tool_calls_record([record])
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
