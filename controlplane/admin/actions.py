"""The confirmation step shared by the admin's destructive bulk actions."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse

CONFIRM_FIELD = "confirmed"


def confirmation_page(
    modeladmin: admin.ModelAdmin[Any],
    request: HttpRequest,
    queryset: QuerySet[Any],
    *,
    action: str,
    title: str,
    consequence: str,
    button: str,
) -> TemplateResponse | None:
    """None once the operator has confirmed; until then, the page that asks them to.

    The page posts the same action and selection back with CONFIRM_FIELD=yes, like Django's
    own "delete selected" confirmation.
    """
    if request.POST.get(CONFIRM_FIELD) == "yes":
        return None
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": title,
        "consequence": consequence,
        "button": button,
        "objects": list(queryset),
        "action": action,
        "confirm_field": CONFIRM_FIELD,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "opts": modeladmin.model._meta,
    }
    return TemplateResponse(request, "admin/controlplane/confirm_action.html", context)
