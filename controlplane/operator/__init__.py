"""Operator pages that are not a model's admin: the dashboard, the live feed and the CSV export.

They are served inside the admin site (its login, CSRF protection and look) but read the audit
trail through selectors of their own; the ModelAdmins in controlplane.admin link to them by URL
name and never the other way round.
"""
