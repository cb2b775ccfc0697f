"""The admin: one module per model group, each a thin caller of the services.

Writes go through the same services the commands use (controlplane.tenants, tokens and
policies), so the admin cannot drift from the CLI or the MCP path. Destructive bulk actions
(revoking keys, rotating tokens) show a confirmation page first. The dashboard, the live feed
and the CSV export live in controlplane.operator.
"""

from django.contrib import admin

# Imported for their @admin.register side effects.
from controlplane.admin import (  # noqa: F401
    approvals,
    keys,
    people,
    policies,
    tenants,
    tool_calls,
)

admin.site.site_header = "Qontak MCP control plane"
admin.site.site_title = "Qontak MCP admin"
admin.site.index_title = "Operations"
admin.site.site_url = None  # there is no public site; the header links to the operator pages
