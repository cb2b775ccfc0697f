"""What the admin tests post and read back: shared by the modules in tests/admin/.

The `operator` fixture (a client logged in as a superuser) is in tests/conftest.py, since
pages outside the admin use it too.
"""

from __future__ import annotations

from auditlog.models import LogEntry


def messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def form_data(response) -> dict:
    """What the browser would post back: the admin form and its inlines as rendered."""
    data: dict = {}

    def add(form) -> None:
        for name in form.fields:
            value = form[name].value()
            if value is None or value is False:
                continue
            data[form.add_prefix(name)] = "on" if value is True else value

    add(response.context["adminform"].form)
    for inline in response.context["inline_admin_formsets"]:
        management = inline.formset.management_form
        for name in management.fields:
            data[management.add_prefix(name)] = management[name].value()
        for form in inline.formset.forms:
            add(form)
    return data


def tenant_add_data(**fields) -> dict:
    """The tenant add form as posted: `fields` plus empty inline formsets."""
    return {
        "qontak_base_url": "",
        "auth": "qontak-oauth",
        **fields,
        **{
            f"{prefix}-{field}": value
            for prefix in ("credential", "rate_limits", "tool_policies")
            for field, value in (
                ("TOTAL_FORMS", "0"),
                ("INITIAL_FORMS", "0"),
                ("MIN_NUM_FORMS", "0"),
                ("MAX_NUM_FORMS", "1000"),
            )
        },
    }


def created_entry(obj) -> dict:
    return LogEntry.objects.get_for_object(obj).get(action=LogEntry.Action.CREATE).changes_dict
