"""DATABASE_POOLER: behind a pooler in transaction mode nothing may outlive a transaction on a
server connection, so Django's server-side cursors are turned off (README, Production notes).
The whole suite runs through PgBouncer in .ci/run's pooled pass."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHOW = (
    "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'controlplane.settings'; "
    "django.setup(); from django.conf import settings; d = settings.DATABASES['default']; "
    "print(d.get('DISABLE_SERVER_SIDE_CURSORS', False), d['OPTIONS'].get('prepare_threshold'))"
)


def _settings(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SHOW],
        capture_output=True,
        text=True,
        env={**os.environ, "DATABASE_URL": "postgres://u@127.0.0.1:6432/app", **env},
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def test_a_transaction_pooler_turns_off_server_side_cursors_and_prepares_nothing():
    pooled = _settings(DATABASE_POOLER="transaction")
    assert pooled.returncode == 0, pooled.stderr
    assert pooled.stdout.splitlines()[-1] == "True None"
    direct = _settings(DATABASE_POOLER="")
    assert direct.stdout.splitlines()[-1] == "False None"


def test_an_unknown_pooler_mode_stops_the_process():
    result = _settings(DATABASE_POOLER="session")
    assert result.returncode != 0
    assert "DATABASE_POOLER must be empty or 'transaction'" in result.stderr
