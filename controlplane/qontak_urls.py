"""Where Qontak requests may go: every tenant's access and refresh tokens are sent to its
Qontak base URL, so that URL is held to a short list of hosts (QONTAK_ALLOWED_HOSTS).

The rules, checked for a tenant's URL (model field, admin, create_tenant) and for the global
QONTAK_BASE_URL at startup: scheme https, or http for a loopback host (the simulator in tests
and `make run`); no user name or password, query or fragment; the host, compared exactly and
without regard to case, listed in QONTAK_ALLOWED_HOSTS (any port).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError

DEFAULT_ALLOWED_HOSTS = ("app.qontak.com", "api.mekari.com")
LOOPBACK_NAMES = frozenset({"localhost"})


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def qontak_url_problems(url: str, allowed_hosts: Iterable[str]) -> list[str]:
    """Every rule `url` breaks, each saying what to do; empty when it may be used.

    The messages name the host but never echo the URL, which may carry a password.
    """
    problems = []
    try:
        parts = urlsplit(url.strip())
    except ValueError:  # e.g. an unclosed [ of an IPv6 address
        return ["the URL cannot be parsed: write it as https://HOST[:PORT][/PATH]"]
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        problems.append(f"scheme '{scheme or 'none'}' is not allowed: use https://")
    if "@" in parts.netloc:
        problems.append("a user name or password (NAME:PASSWORD@) is not allowed: remove it")
    if "?" in url.split("#", 1)[0]:
        problems.append("a query string (?...) is not allowed: remove it")
    if "#" in url:
        problems.append("a fragment (#...) is not allowed: remove it")
    try:
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return [*problems, "the port is not a number"]
    if not host:
        return [*problems, "the URL has no host"]
    allowed = {name.strip().strip("[]").lower() for name in allowed_hosts if name.strip()}
    if host not in allowed:
        problems.append(
            f"host '{host}' is not in QONTAK_ALLOWED_HOSTS ({', '.join(sorted(allowed))}): "
            "add the host to QONTAK_ALLOWED_HOSTS if it really is a Qontak API host"
        )
    if scheme == "http" and not is_loopback(host):
        problems.append(
            f"plain http is allowed only for a loopback host (127.0.0.0/8, ::1, localhost) "
            f"listed in QONTAK_ALLOWED_HOSTS: use https://{host}"
        )
    return problems


def validate_qontak_base_url(value: str) -> None:
    """Validator of Tenant.qontak_base_url, against the QONTAK_ALLOWED_HOSTS of this moment."""
    problems = qontak_url_problems(value, settings.QONTAK_ALLOWED_HOSTS)
    if problems:
        raise ValidationError(
            [f"Refused Qontak URL: {problem}." for problem in problems], code="qontak_url"
        )
