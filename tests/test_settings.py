"""Settings that must hold before the process serves anything (issue 13): no public secret
with DEBUG off, and Qontak URLs only on the hosts QONTAK_ALLOWED_HOSTS lists."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError

from controlplane.qontak_urls import validate_qontak_base_url

ROOT = Path(__file__).resolve().parent.parent
SETUP = (
    "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'controlplane.settings'; "
    "django.setup(); from django.conf import settings; "
    "print(settings.SECRET_KEY != settings.API_KEY_PEPPER)"
)
GENERATE = 'python -c "import secrets; print(secrets.token_urlsafe(50))"'


def _setup_django(**env: str) -> subprocess.CompletedProcess[str]:
    """django.setup() in a fresh process, DEBUG unset, with `env` ("" counts as unset and
    keeps a .env value out)."""
    clean = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "DJANGO_SETTINGS_MODULE")}
    return subprocess.run(
        [sys.executable, "-c", SETUP],
        capture_output=True,
        text=True,
        env={**clean, **env},
        cwd=ROOT,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("missing", ["SECRET_KEY", "API_KEY_PEPPER"])
def test_settings_refuse_to_load_without_a_secret_when_debug_is_off(missing):
    env = {"SECRET_KEY": "s" * 50, "API_KEY_PEPPER": "p" * 50, missing: ""}
    result = _setup_django(**env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert f"{missing} must be set when DEBUG is off" in result.stderr
    assert GENERATE in result.stderr
    assert "DEBUG=true allows development defaults" in result.stderr


def test_settings_load_with_both_secrets_or_with_debug_and_keep_the_pepper_separate():
    configured = _setup_django(SECRET_KEY="s" * 50, API_KEY_PEPPER="p" * 50)
    assert configured.returncode == 0, configured.stderr
    development = _setup_django(SECRET_KEY="", API_KEY_PEPPER="", DEBUG="true")
    assert development.returncode == 0, development.stderr
    assert development.stdout.strip() == "True"  # the pepper does not fall back to SECRET_KEY


def test_settings_refuse_a_global_qontak_url_on_a_host_that_is_not_allowed():
    result = _setup_django(QONTAK_BASE_URL="https://qontak.attacker.example")
    assert result.returncode != 0
    assert "ImproperlyConfigured: QONTAK_BASE_URL is refused" in result.stderr
    assert "add the host to QONTAK_ALLOWED_HOSTS" in result.stderr
    listed = _setup_django(
        QONTAK_BASE_URL="https://qontak.example", QONTAK_ALLOWED_HOSTS="qontak.example"
    )
    assert listed.returncode == 0, listed.stderr


REFUSED = [
    ("http://169.254.169.254/latest/meta-data/", ["host '169.254.169.254'", "plain http"]),
    ("http://127.0.0.1:8200", ["host '127.0.0.1' is not in QONTAK_ALLOWED_HOSTS"]),
    ("ftp://app.qontak.com/", ["scheme 'ftp' is not allowed"]),
    (
        "http://user:pass@10.0.0.5:8080/x?",
        ["user name or password", "query string", "host '10.0.0.5'", "plain http"],
    ),
    ("https://app.qontak.com/#frag", ["fragment"]),
    ("https://app.qontak.com.attacker.example/", ["host 'app.qontak.com.attacker.example'"]),
    ("http://app.qontak.com", ["plain http is allowed only for a loopback host"]),
    ("http://localhost:8100", ["host 'localhost' is not in QONTAK_ALLOWED_HOSTS"]),
]


@pytest.mark.parametrize(("url", "reasons"), REFUSED, ids=[url for url, _ in REFUSED])
def test_qontak_urls_off_the_allowed_hosts_or_rules_are_refused(settings, url, reasons):
    settings.QONTAK_ALLOWED_HOSTS = ["app.qontak.com", "api.mekari.com"]
    with pytest.raises(ValidationError) as refused:
        validate_qontak_base_url(url)
    shown = " ".join(refused.value.messages)
    for reason in reasons:
        assert reason in shown
    assert "user:pass" not in shown  # the URL, and any password in it, is never echoed


@pytest.mark.parametrize(
    "url",
    [
        "https://app.qontak.com",
        "https://APP.Qontak.com:443/api/v3.1",
        "https://api.mekari.com/qontak/crm",
        "http://127.0.0.1:8100",
    ],
)
def test_qontak_urls_on_allowed_hosts_are_accepted(settings, url):
    settings.QONTAK_ALLOWED_HOSTS = ["app.qontak.com", "api.mekari.com", "127.0.0.1"]
    validate_qontak_base_url(url)
