"""Assistants that only speak OAuth (claude.ai, ChatGPT): the official MCP client connects with
nothing but the /mcp URL, a person consents, and every call is made and audited as them."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from controlplane import people
from controlplane.models import ToolCall
from tests.calls import audited_calls
from tests.oauth_support import MemoryStorage, Person, oauth_provider, person_browser, with_oauth_client

PASSWORD = "a-long-person-password-42"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def member(make_tenant: Any) -> tuple[Any, Person]:
    demo = make_tenant("oauth")
    people.member_add(tenant=demo.tenant, username=f"ana-{demo.account}", password=PASSWORD)
    return demo, Person(username=f"ana-{demo.account}", password=PASSWORD)


def test_an_oauth_only_client_connects_with_the_mcp_url_and_calls_as_the_person(
    control_plane: Any, member: tuple[Any, Person]
) -> None:
    demo, person = member
    provider = oauth_provider(control_plane.mcp_url, person_browser(person))

    async def use(client: Any) -> Any:
        tools = await client.list_tools()
        result = await client.call_tool("list_contacts", {})
        return tools, result

    tools, result = asyncio.run(with_oauth_client(control_plane.mcp_url, provider, use))
    names = {tool.name for tool in tools.tools}
    assert "list_contacts" in names and "create_contact" in names
    assert "delete_contact" not in names  # crm.delete was not asked for
    assert not result.is_error
    (row,) = audited_calls(demo.tenant, 1)
    assert (row.person, row.oauth_client, row.key_prefix) == (person.username, "Test Assistant", "")
    assert row.outcome == ToolCall.Outcome.OK
