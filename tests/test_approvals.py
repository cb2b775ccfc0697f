"""Risky calls held for a person's approval: the assistant is told what waits, nothing reaches
Qontak before a recorded decision, an approved call runs exactly once, and a person whose
client can be asked (2026-07-28 elicitation) decides themselves."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import timedelta
from typing import Any

import httpx2
import mcp_types as types
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse
from django.utils import timezone
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from controlplane.models import Approval
from tests.calls import ERAS, audited_calls, mcp_client
from tests.oauth_support import person_token
from tests.servers import simulator_requests, start_control_plane

pytestmark = pytest.mark.timeout(180)

CONTACT = {"id": 1}


def _deletes(simulator: Any, account: str) -> list[dict[str, Any]]:
    return [
        r
        for r in simulator_requests(simulator, account)
        if r["method"] == "DELETE" and "/contacts/" in r["path"]
    ]


def _call(url: str, key: str, tool: str, arguments: dict[str, Any], era: str = "2026-07-28"):
    async def run() -> Any:
        async with mcp_client(url, key, era) as client:
            return await client.call_tool(tool, arguments)

    return asyncio.run(run())


def _text(result: Any) -> str:
    return " ".join(block.text for block in result.content)


@pytest.fixture
def held(make_tenant: Any) -> Any:
    """A tenant whose delete_contact calls wait for approval."""
    demo = make_tenant("approve")
    call_command("set_tool_access", demo.tenant.slug, "delete_contact", "approve")
    return demo


def test_a_held_call_waits_runs_once_after_an_operator_approves_and_never_before(
    control_plane: Any, simulator: Any, held: Any, operator: Any
) -> None:
    first = _call(control_plane.mcp_url, held.key, "delete_contact", CONTACT)
    assert first.is_error and "needs a person's approval" in _text(first)
    approval = Approval.objects.get(tenant=held.tenant)
    assert f"approval #{approval.pk}" in _text(first) and "get_approval_status" in _text(first)
    again = _call(control_plane.mcp_url, held.key, "delete_contact", CONTACT, era="2025-11-25")
    assert f"approval #{approval.pk}" in _text(again)  # the same request, not a second one
    assert Approval.objects.filter(tenant=held.tenant).count() == 1
    assert _deletes(simulator, held.account) == []  # nothing reached Qontak

    status = _call(
        control_plane.mcp_url, held.key, "get_approval_status", {"approval_id": approval.pk}
    )
    assert not status.is_error, _text(status)
    assert status.structured_content["approval"]["status"] == "pending"

    page = operator.get(reverse("admin:controlplane_approval_decide", args=[approval.pk]))
    assert "delete_contact" in page.content.decode()
    operator.post(
        reverse("admin:controlplane_approval_decide", args=[approval.pk]),
        {"decision": "approve", "reason": ""},
    )
    approval.refresh_from_db()
    assert (approval.status, approval.decided_by) == ("approved", "operator")
    assert _deletes(simulator, held.account) == []  # approving alone sends nothing

    ran = _call(control_plane.mcp_url, held.key, "delete_contact", CONTACT)
    assert not ran.is_error, _text(ran)
    after = _call(control_plane.mcp_url, held.key, "delete_contact", CONTACT)
    assert after.is_error  # a fresh request: the approval was spent
    assert len(_deletes(simulator, held.account)) == 1

    rows = audited_calls(held.tenant, 5)
    outcomes = [(row.tool, row.outcome, row.approval_id) for row in rows]
    assert outcomes.count(("delete_contact", "pending_approval", approval.pk)) == 2
    assert ("delete_contact", "ok", approval.pk) in outcomes
    exported = [json.loads(line) for line in _export(held.tenant.slug).splitlines()]
    done = next(row for row in exported if row["outcome"] == "ok")
    assert (done["approval_status"], done["approval_decided_by"]) == ("executed", "operator")


def _export(slug: str) -> str:
    import io

    out = io.StringIO()
    call_command("export_audit", "--tenant", slug, "--format", "jsonl", stdout=out)
    return out.getvalue()


def test_a_rejected_call_tells_the_assistant_why_and_an_expired_one_is_refused(
    control_plane: Any, simulator: Any, held: Any
) -> None:
    _call(control_plane.mcp_url, held.key, "delete_contact", CONTACT)
    approval = Approval.objects.get(tenant=held.tenant)
    call_command("decide_approval", str(approval.pk), "reject", "--reason", "wrong contact")
    rejected = _call(control_plane.mcp_url, held.key, "delete_contact", CONTACT)
    assert rejected.is_error
    assert "was rejected by" in _text(rejected) and "wrong contact" in _text(rejected)

    other = {"id": 2}
    _call(control_plane.mcp_url, held.key, "delete_contact", other)
    late = Approval.objects.get(tenant=held.tenant, status="pending")
    Approval.objects.filter(pk=late.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    with pytest.raises(CommandError, match=f"approval #{late.pk} expired"):
        call_command("decide_approval", str(late.pk), "approve")
    asked_again = _call(control_plane.mcp_url, held.key, "delete_contact", other)
    assert "needs a person's approval" in _text(asked_again)  # a new request, not the expired one
    assert Approval.objects.filter(tenant=held.tenant, tool="delete_contact").count() == 3
    assert _deletes(simulator, held.account) == []
    listed = json.loads(_list_approvals(held.tenant.slug))
    assert {row["status"] for row in listed} == {"rejected", "expired", "pending"}
    assert {"id", "tool", "status", "arguments", "asked_by"} <= set(listed[0])


def _list_approvals(slug: str) -> str:
    import io

    out = io.StringIO()
    call_command("list_approvals", "--tenant", slug, "--json", stdout=out)
    return out.getvalue()


def test_two_operators_and_two_workers_at_once_send_exactly_one_call(
    log_dir: Any, openbao: Any, simulator: Any, held: Any
) -> None:
    server = start_control_plane(
        log_dir, openbao.url, openbao.extra["token"], simulator.url, workers=2
    )
    try:
        _call(server.mcp_url, held.key, "delete_contact", CONTACT)
        approval = Approval.objects.get(tenant=held.tenant)
        start = threading.Barrier(4)
        outcomes: list[str] = []

        def operator_decides(name: str) -> None:
            start.wait()
            try:
                call_command("decide_approval", str(approval.pk), "approve", "--as", name)
                outcomes.append(f"decided by {name}")
            except CommandError as exc:
                outcomes.append(str(exc))

        def assistant_retries() -> None:
            start.wait()
            for _ in range(5):
                result = _call(server.mcp_url, held.key, "delete_contact", CONTACT)
                outcomes.append("ran" if not result.is_error else _text(result)[:60])

        threads = [threading.Thread(target=operator_decides, args=(n,)) for n in ("ana", "budi")]
        threads += [threading.Thread(target=assistant_retries) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)

        assert sum(o.startswith("decided by") for o in outcomes) == 1
        assert any("was already approved by" in o for o in outcomes)
        assert outcomes.count("ran") == 1
        assert len(_deletes(simulator, held.account)) == 1
    finally:
        server.process.stop()


def _call_as_person(url: str, token: str, answer: types.ElicitResult | None) -> tuple[Any, list]:
    asked: list[types.ElicitRequestParams] = []

    async def elicit(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params)
        assert answer is not None
        return answer

    async def run() -> Any:
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http,
            Client(
                streamable_http_client(url, http_client=http),
                mode=ERAS["2026-07-28"],
                elicitation_callback=elicit if answer is not None else None,
            ) as client,
        ):
            return await client.call_tool("delete_contact", CONTACT)

    return asyncio.run(run()), asked


@pytest.mark.parametrize("accept", [True, False], ids=["accept", "decline"])
def test_the_person_approves_in_their_own_client(
    control_plane: Any, simulator: Any, make_tenant: Any, accept: bool
) -> None:
    demo = make_tenant("elicit")
    call_command("set_tool_access", demo.tenant.slug, "delete_contact", "approve")
    token = person_token(demo, control_plane.mcp_url, "crm.read crm.write crm.delete")
    answer = (
        types.ElicitResult(action="accept", content={"approve": True})
        if accept
        else types.ElicitResult(action="decline")
    )

    result, asked = _call_as_person(control_plane.mcp_url, token, answer)

    assert len(asked) == 1 and "delete_contact" in asked[0].message
    approval = Approval.objects.get(tenant=demo.tenant)
    if accept:
        assert not result.is_error, _text(result)
        assert (
            approval.status == "executed" and "asked in Approving Assistant" in approval.decided_by
        )
        assert len(_deletes(simulator, demo.account)) == 1
    else:
        assert result.is_error and "declined by the person" in _text(result)
        assert approval.status == "rejected"
        assert _deletes(simulator, demo.account) == []
    rows = audited_calls(demo.tenant, 2)
    assert [row.outcome for row in rows] == [
        "pending_approval",
        "ok" if accept else "denied",
    ]


def test_a_client_that_cannot_ask_goes_to_the_operator_queue(
    control_plane: Any, simulator: Any, make_tenant: Any
) -> None:
    demo = make_tenant("noelicit")
    demo.tenant.destructive_needs_approval = True
    demo.tenant.save()
    token = person_token(demo, control_plane.mcp_url, "crm.read crm.write crm.delete")
    result, asked = _call_as_person(control_plane.mcp_url, token, None)
    assert asked == [] and result.is_error and "An operator of this tenant decides" in _text(result)
    assert Approval.objects.get(tenant=demo.tenant).status == "pending"
    assert audited_calls(demo.tenant, 1)[0].outcome == "pending_approval"
    assert _deletes(simulator, demo.account) == []
