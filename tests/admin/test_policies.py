"""Rate limits and tool policies edited inline on the tenant page."""

from __future__ import annotations

from django.urls import reverse

from controlplane.tenants import tenant_create
from tests.admin.pages import form_data


def test_policies_edited_inline_on_the_tenant_page_apply_to_the_next_call(operator):
    from controlplane import policies
    from controlplane.models import RateLimitPolicy, ToolPolicy

    tenant = tenant_create(slug="inline")
    url = reverse("admin:controlplane_tenant_change", args=[tenant.pk])
    data = form_data(operator.get(url))
    data.update(
        {
            "rate_limits-TOTAL_FORMS": "1",
            "rate_limits-0-rate": "30/m",
            "rate_limits-0-tool": "",
            "tool_policies-TOTAL_FORMS": "1",
            "tool_policies-0-tool": "delete_contact",
            "tool_policies-0-effect": "deny",
        }
    )
    response = operator.post(url, data)
    assert response.status_code == 302, response.content[:3000]
    policy = policies.tenant_policy(tenant_id=tenant.pk)
    assert [rule.rate for rule in policy.rate_rules] == ["30/m"]
    assert not policy.tool_allowed(
        tool="delete_contact", api_key_id=1, key_read_only=False, tool_read_only=False
    )

    # Narrowing the rate to one tool replaces the tenant-wide rule instead of adding one.
    data = form_data(operator.get(url))
    data["rate_limits-0-tool"] = "list_contacts"
    assert operator.post(url, data).status_code == 302
    assert list(RateLimitPolicy.objects.values_list("tool", "rate")) == [("list_contacts", "30/m")]
    assert ToolPolicy.objects.get(tenant=tenant).effect == "deny"


def test_tool_policy_inline_offers_only_this_tenants_keys(operator):
    from controlplane.tenants import api_key_issue

    tenant = tenant_create(slug="mine")
    mine = api_key_issue(tenant=tenant).api_key
    theirs = api_key_issue(tenant=tenant_create(slug="theirs")).api_key
    page = operator.get(reverse("admin:controlplane_tenant_change", args=[tenant.pk]))
    formset = next(
        inline.formset
        for inline in page.context["inline_admin_formsets"]
        if inline.formset.prefix == "tool_policies"
    )
    choices = set(formset.empty_form.fields["api_key"].queryset)
    assert mine in choices and theirs not in choices


def test_a_misspelt_tool_rule_is_refused_with_the_closest_tool_named(operator):
    from controlplane.models import ToolPolicy

    tenant = tenant_create(slug="typo")
    url = reverse("admin:controlplane_tenant_change", args=[tenant.pk])
    data = form_data(operator.get(url))
    data.update(
        {
            "tool_policies-TOTAL_FORMS": "1",
            "tool_policies-0-tool": "delete_contcat",
            "tool_policies-0-effect": "deny",
        }
    )
    refused = operator.post(url, data)
    assert refused.status_code == 200
    assert (
        "There is no tool &#x27;delete_contcat&#x27;: did you mean &#x27;delete_contact&#x27;"
        in (refused.content.decode())
    )
    assert not ToolPolicy.objects.exists()

    alone = operator.post(
        reverse("admin:controlplane_toolpolicy_add"),
        {"tenant": tenant.pk, "tool": "list_contatcs", "effect": "deny"},
    )
    assert "did you mean &#x27;list_contacts&#x27;" in alone.content.decode()
    accepted = operator.post(
        reverse("admin:controlplane_toolpolicy_add"),
        {"tenant": tenant.pk, "tool": "*", "effect": "deny"},
    )
    assert accepted.status_code == 302
    assert ToolPolicy.objects.get().tool == "*"


def test_the_tool_box_suggests_the_known_tools(operator):
    page = operator.get(reverse("admin:controlplane_toolpolicy_add")).content.decode()
    assert 'list="id_tool-known-tools"' in page
    assert '<option value="*"></option>' in page
    assert '<option value="delete_contact"></option>' in page


def test_policy_lists_say_what_applies_without_a_row(operator):
    empty_rates = operator.get(reverse("admin:controlplane_ratelimitpolicy_changelist"))
    assert "No rules here yet. A tenant without a rate limit" in empty_rates.content.decode()
    assert "gets 120/m for the whole tenant" in empty_rates.content.decode()
    empty_rules = operator.get(reverse("admin:controlplane_toolpolicy_changelist"))
    assert "Without a rule every tool is allowed" in empty_rules.content.decode()
    tenant_page = operator.get(
        reverse("admin:controlplane_tenant_change", args=[tenant_create(slug="bare").pk])
    ).content.decode()
    assert "Rate limits (none set: 120/m for the whole tenant)" in tenant_page
    assert "Tool rules (none set: every tool is allowed)" in tenant_page


def test_a_misspelt_tool_in_a_rate_limit_is_refused_and_star_means_every_tool(operator):
    from controlplane.models import RateLimitPolicy

    tenant = tenant_create(slug="typo-rate")
    add = reverse("admin:controlplane_ratelimitpolicy_add")
    refused = operator.post(add, {"tenant": tenant.pk, "rate": "5/m", "tool": "list_contatcs"})
    assert refused.status_code == 200
    assert "did you mean &#x27;list_contacts&#x27;" in refused.content.decode()
    assert not RateLimitPolicy.objects.exists()
    accepted = operator.post(add, {"tenant": tenant.pk, "rate": "5/m", "tool": "*"})
    assert accepted.status_code == 302
    assert RateLimitPolicy.objects.get().tool == ""  # every tool
