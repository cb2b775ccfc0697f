"""The enforcement chain in-process: what every authenticated call costs, and what its audit
row keeps, whatever the call was."""

from __future__ import annotations

import asyncio
import json

import pytest

from controlplane import metrics, policies
from controlplane.models import ToolCall
from mcpserver import pipeline
from tests.calls import in_process_caller, run_tool_call_and_drain


def _calls(caller: pipeline.Caller, calls: list[tuple[str, dict]]) -> list[pipeline.ToolResult]:
    async def run() -> list[pipeline.ToolResult]:
        return [await run_tool_call_and_drain(caller, tool, args) for tool, args in calls]

    return asyncio.run(run())


@pytest.mark.django_db(transaction=True)
def test_unknown_denied_and_invalid_calls_count_against_the_rate_limit():
    caller = in_process_caller("abuse", "req-abuse")
    policies.rate_limit_set(tenant=caller.tenant, rate="3/d")
    policies.tool_access_set(tenant=caller.tenant, tool="delete_contact", effect="deny")
    results = _calls(
        caller,
        [
            ("no_such_tool_1", {}),
            ("delete_contact", {"id": 1}),
            ("get_contact", {"id": "not a number"}),
            ("no_such_tool_2", {}),
            ("get_contact", {"id": -1}),
        ],
    )
    outcomes = list(
        ToolCall.objects.filter(tenant=caller.tenant)
        .order_by("created_at", "pk")
        .values_list("outcome", flat=True)
    )
    assert outcomes == ["invalid_input", "denied", "invalid_input", "rate_limited", "rate_limited"]
    assert results[3].text.startswith("rate limit 3/d reached")


@pytest.mark.django_db(transaction=True)
def test_invented_tool_names_share_one_metrics_series():
    caller = in_process_caller("names", "req-names")
    _calls(caller, [(f"invented_{n}", {}) for n in range(3)])
    exposed = next(iter(metrics.TOOL_CALLS.collect())).samples
    tools = {sample.labels["tool"] for sample in exposed}
    assert "unknown" in tools
    assert not [tool for tool in tools if tool.startswith("invented_")]


@pytest.mark.django_db(transaction=True)
def test_a_huge_argument_list_is_not_stored_whole():
    caller = in_process_caller("huge", "req-huge")
    arguments = {"ids": [{"id": n, "note": "x" * 50} for n in range(20_000)]}
    _calls(caller, [("no_such_tool", arguments)])
    row = ToolCall.objects.get(tenant=caller.tenant)
    assert len(json.dumps(row.arguments)) < 5000
    assert "arguments_digest" in row.arguments["truncated"]


@pytest.mark.django_db(transaction=True)
def test_an_id_of_thousands_of_digits_is_refused_before_qontak():
    caller = in_process_caller("digits", "req-digits")
    (result,) = _calls(caller, [("get_contact", {"id": int("9" * 4000)})])
    assert result.is_error
    assert result.text.startswith("invalid arguments for get_contact: id:")
    assert ToolCall.objects.get(tenant=caller.tenant).outcome == "invalid_input"


@pytest.mark.django_db(transaction=True)
def test_a_nul_byte_in_a_tool_name_does_not_lose_the_row():
    caller = in_process_caller("nul", "req-nul")
    (result,) = _calls(caller, [("get\x00contact", {"id": 1})])
    assert result.is_error
    assert "\x00" not in result.text
    assert ToolCall.objects.get(tenant=caller.tenant).tool == "getcontact"


def test_a_repeated_warning_is_logged_once_per_window_with_the_count_held_back():
    import logging

    from controlplane.logformat import AggregateRepeats

    aggregate = AggregateRepeats()

    def record() -> logging.LogRecord:
        entry = logging.LogRecord("x", logging.WARNING, __file__, 1, "Redis down", None, None)
        entry.event = "counters_unavailable"
        return entry

    first, *held = [record() for _ in range(50)]
    assert aggregate.filter(first)
    assert not any(aggregate.filter(entry) for entry in held)
    later = record()
    aggregate._seen = {k: (v[0] - 60, v[1]) for k, v in aggregate._seen.items()}
    assert aggregate.filter(later)
    assert later.__dict__["repeated"] == 49


@pytest.mark.django_db(transaction=True)
def test_a_database_outage_while_reading_policies_is_unavailable_not_an_internal_error(
    monkeypatch,
):
    from django.db import OperationalError

    from controlplane import config_version

    caller = in_process_caller("pgdown", "req-pgdown")
    aged = in_process_caller("pgaged", "req-pgaged")
    caller = pipeline.Caller(**{**caller.__dict__, "config_version": "v1"})
    aged = pipeline.Caller(**{**aged.__dict__, "config_version": "v1"})
    _calls(aged, [("no_such_tool", {})])  # leaves a copy of its policies under v1
    monkeypatch.setattr(config_version, "MAX_AGE_SECONDS", 0.0)

    def down(**kwargs: object) -> None:
        raise OperationalError("connection refused")

    monkeypatch.setattr(policies, "tenant_policy", down)
    (refused,) = _calls(caller, [("get_contact", {"id": 1})])
    (served,) = _calls(aged, [("no_such_tool", {})])
    assert refused.text.startswith("the control plane cannot reach its database")
    monkeypatch.undo()
    outcomes = dict(ToolCall.objects.values_list("request_id", "outcome"))
    assert outcomes["req-pgdown"] == "unavailable"
    assert served.text.startswith("unknown tool")
