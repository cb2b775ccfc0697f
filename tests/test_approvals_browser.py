"""An operator approves a held call in a real browser (Chromium): it appears on the live feed
as it is filed, the operator decides on its page, and the assistant's next call runs it once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from playwright.sync_api import Page, expect

from tests import browser_support
from tests.browser_support import PASSWORD, log_in, messages
from tests.test_approvals import CONTACT, _call, _deletes, _text

chromium = browser_support.chromium
in_browser = browser_support.in_browser

pytestmark = pytest.mark.timeout(900)  # the first run may install Chromium


def test_an_operator_approves_a_held_delete_in_the_browser(
    in_browser: Any, control_plane: Any, simulator: Any, make_tenant: Any
) -> None:
    get_user_model().objects.create_superuser("approver", "a@example.com", PASSWORD)
    demo = make_tenant("approve-ui")
    call_command("set_tool_access", demo.tenant.slug, "delete_contact", "approve")

    def scenario(page: Page) -> None:
        base = control_plane.url
        log_in(page, base, "approver")
        page.goto(f"{base}/admin/live/?tenant={demo.tenant.slug}")
        expect(page.locator("#live-feed-status")).to_have_text("Live")

        with ThreadPoolExecutor(max_workers=1) as pool:  # the browser's loop owns this thread
            first = pool.submit(
                _call, control_plane.mcp_url, demo.key, "delete_contact", CONTACT
            ).result(timeout=60)
        assert first.is_error and "needs a person's approval" in _text(first)

        held = page.locator("#approval-rows tr", has_text="delete_contact")
        expect(held).to_contain_text(demo.tenant.slug)
        expect(page.locator("#approvals-count")).to_have_text("1")
        held.get_by_role("link", name="Decide").click()
        expect(page.locator("#approval-arguments")).to_contain_text('"id": 1')
        page.fill("#id_reason", "checked with the customer")
        page.get_by_role("button", name="Approve").click()
        expect(messages(page)).to_contain_text("approved. It runs once")

        with ThreadPoolExecutor(max_workers=1) as pool:
            ran = pool.submit(
                _call, control_plane.mcp_url, demo.key, "delete_contact", CONTACT
            ).result(timeout=60)
        assert not ran.is_error, _text(ran)
        page.goto(f"{base}/admin/controlplane/approval/")
        expect(page.locator("#result_list")).to_contain_text("executed")

    in_browser(scenario)
    assert len(_deletes(simulator, demo.account)) == 1
