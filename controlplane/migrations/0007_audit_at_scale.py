# Indexes for a year of audit rows (README, "Audit at scale"). The new indexes are built first
# and concurrently on PostgreSQL, so the audit writer keeps inserting while they are built; the
# indexes they replace are dropped last (a moment's lock each).

import django.db.models.deletion
from django.db import migrations, models

from controlplane.migration_operations import AddIndexConcurrently, AddUniqueConstraintConcurrently


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ('controlplane', '0006_approvals'),
    ]

    operations = [
        AddIndexConcurrently(
            model_name='toolcall',
            index=models.Index(fields=['outcome', 'created_at'], name='toolcall_outcome_time'),
        ),
        AddIndexConcurrently(
            model_name='toolcall',
            index=models.Index(fields=['tool', 'created_at'], name='toolcall_tool_time'),
        ),
        AddIndexConcurrently(
            model_name='toolcall',
            index=models.Index(fields=['api_key', 'created_at'], name='toolcall_key_time'),
        ),
        AddIndexConcurrently(
            model_name='toolcall',
            index=models.Index(fields=['request_id'], name='toolcall_request_id'),
        ),
        AddIndexConcurrently(
            model_name='toolcall',
            index=models.Index(condition=models.Q(('person', ''), _negated=True), fields=['person', 'created_at'], name='toolcall_person_time'),
        ),
        AddIndexConcurrently(
            model_name='toolcall',
            index=models.Index(condition=models.Q(('approval__isnull', False)), fields=['approval'], name='toolcall_approval'),
        ),
        AddUniqueConstraintConcurrently(
            model_name='toolcall',
            constraint=models.UniqueConstraint(fields=('call_id',), name='toolcall_call_id'),
        ),
        migrations.AlterField(
            model_name='toolcall',
            name='api_key',
            field=models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.SET_NULL, to='controlplane.apikey'),
        ),
        migrations.AlterField(
            model_name='toolcall',
            name='approval',
            field=models.ForeignKey(blank=True, db_index=False, help_text='The approval this call waited for or ran under; it says who decided, when.', null=True, on_delete=django.db.models.deletion.PROTECT, related_name='tool_calls', to='controlplane.approval'),
        ),
        migrations.AlterField(
            model_name='toolcall',
            name='call_id',
            field=models.CharField(editable=False, max_length=32, null=True),
        ),
        migrations.AlterField(
            model_name='toolcall',
            name='outcome',
            field=models.CharField(choices=[('ok', 'Ok'), ('denied', 'Denied'), ('rate_limited', 'Rate Limited'), ('invalid_input', 'Invalid Input'), ('upstream_error', 'Upstream Error'), ('unavailable', 'Unavailable'), ('internal_error', 'Internal Error'), ('pending_approval', 'Pending Approval')], max_length=20),
        ),
        migrations.AlterField(
            model_name='toolcall',
            name='tenant',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='tool_calls', to='controlplane.tenant'),
        ),
        migrations.AlterField(
            model_name='toolcall',
            name='tool',
            field=models.CharField(max_length=100),
        ),
    ]
