"""Migration operations that build an index on a large table without blocking its writers.

On PostgreSQL a plain CREATE INDEX holds off every INSERT while it reads the whole table
(minutes for a year of audit rows: the audit writer would stall); CONCURRENTLY does not. Other
databases (SQLite, the embedded default) build it the plain way. A migration using them must
set `atomic = False`: PostgreSQL refuses CONCURRENTLY inside a transaction.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import ProjectState


class AddIndexConcurrently(migrations.AddIndex):
    def database_forwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        if schema_editor.connection.vendor != "postgresql":
            return super().database_forwards(app_label, schema_editor, from_state, to_state)
        model = to_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            schema_editor.add_index(model, self.index, concurrently=True)  # type: ignore[call-arg]


class AddUniqueConstraintConcurrently(migrations.AddConstraint):
    """A UNIQUE constraint on one table, its index built concurrently and then attached to it
    (ALTER TABLE ... USING INDEX takes a moment's lock, not the time of the build)."""

    def database_forwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        if schema_editor.connection.vendor != "postgresql":
            return super().database_forwards(app_label, schema_editor, from_state, to_state)
        model = to_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        quote = schema_editor.quote_name
        table = quote(model._meta.db_table)
        name = quote(self.constraint.name)
        fields: Any = self.constraint.fields  # type: ignore[attr-defined]
        columns = ", ".join(quote(model._meta.get_field(field).column) for field in fields)
        schema_editor.execute(f"CREATE UNIQUE INDEX CONCURRENTLY {name} ON {table} ({columns})")
        schema_editor.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT {name} UNIQUE USING INDEX {name}"
        )
