"""Admin hardening: staff-only pages, login throttling, cookies, headers, CSP and CSRF."""

from __future__ import annotations

import re

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from controlplane.tenants import tenant_create

PASSWORD = "correct-horse-battery"


@pytest.fixture
def operator_user(db):
    return get_user_model().objects.create_superuser("operator", "op@example.com", PASSWORD)


@pytest.fixture
def operator(operator_user) -> Client:
    client = Client()
    client.force_login(operator_user)
    return client


def _pages() -> list[str]:
    tenant = tenant_create(slug="guarded")
    return [
        reverse("admin:index"),
        reverse("operator-dashboard"),
        reverse("operator-live-feed"),
        reverse("admin:controlplane_toolcall_changelist"),
        reverse("admin:controlplane_toolcall_export"),
        reverse("admin:controlplane_tenant_changelist"),
        reverse("admin:controlplane_tenant_change", args=[tenant.pk]),
        reverse("admin:controlplane_tenant_credential", args=[tenant.pk]),
        reverse("admin:controlplane_apikey_add"),
    ]


def _login(client: Client, password: str, address: str = "127.0.0.1"):
    return client.post(
        reverse("admin:login"),
        {"username": "operator", "password": password, "next": reverse("admin:index")},
        REMOTE_ADDR=address,
    )


def test_anonymous_visitors_and_non_staff_users_are_sent_to_the_login_page(db):
    customer = get_user_model().objects.create_user("customer", password=PASSWORD)
    logged_in = Client()
    logged_in.force_login(customer)
    login_url = reverse("admin:login")
    for url in _pages():
        for client in (Client(), logged_in):
            response = client.get(url)
            assert response.status_code == 302, url
            assert response["Location"].startswith(login_url), url


def test_repeated_wrong_passwords_lock_the_login_even_with_the_right_one(operator_user):
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert _login(client, "wrong").status_code == 200  # the form again, with an error
    locked = _login(client, "wrong")
    assert locked.status_code == 429
    assert "Try again in 15 minutes" in locked.content.decode()

    refused = _login(client, PASSWORD)
    assert refused.status_code == 429
    assert "_auth_user_id" not in client.session


def test_a_lockout_holds_only_for_that_username_and_address(operator_user):
    attacker = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        _login(attacker, "wrong", address="203.0.113.9")
    operator = Client()
    response = _login(operator, PASSWORD, address="198.51.100.7")
    assert response.status_code == 302
    assert operator.session["_auth_user_id"] == str(operator_user.pk)


def test_session_and_csrf_cookies_are_secure_and_http_only_when_not_debug(operator_user):
    assert not settings.DEBUG
    client = Client()
    login_page = client.get(reverse("admin:login"))
    csrf_cookie = login_page.cookies["csrftoken"]
    assert csrf_cookie["secure"] and csrf_cookie["httponly"]
    response = _login(client, PASSWORD)
    session_cookie = response.cookies["sessionid"]
    assert session_cookie["secure"] and session_cookie["httponly"]
    assert session_cookie["samesite"] == "Lax"


def test_admin_pages_carry_security_headers_and_a_strict_content_security_policy(operator):
    response = operator.get(reverse("operator-dashboard"))
    policy = response["Content-Security-Policy"]
    directives = dict(
        (part.split()[0], part.split()[1:]) for part in policy.split(";") if part.strip()
    )
    assert directives["script-src"] == ["'self'"]
    assert directives["style-src"] == ["'self'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert directives["object-src"] == ["'none'"]
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"


def test_https_requests_get_strict_transport_security(operator):
    response = operator.get(reverse("admin:index"), secure=True)
    assert response["Strict-Transport-Security"].startswith("max-age=31536000")


def test_operator_pages_have_no_inline_script_or_style_the_policy_would_block(operator):
    for url in _pages():
        if url.endswith(".csv"):
            continue
        html = operator.get(url).content.decode()
        scripts = re.findall(r"<script\b[^>]*>", html)
        assert all("src=" in tag for tag in scripts), (url, scripts)
        assert not re.search(r"<style\b|\sstyle=", html), url
        assert not re.search(r"\son[a-z]+=", html), url  # no inline event handlers


def test_forms_and_actions_without_a_csrf_token_are_refused(operator_user):
    anonymous = Client(enforce_csrf_checks=True)
    assert _login(anonymous, PASSWORD).status_code == 403

    operator = Client(enforce_csrf_checks=True)
    operator.force_login(operator_user)
    tenant = tenant_create(slug="csrf")
    response = operator.post(
        reverse("admin:controlplane_tenant_changelist"),
        {"action": "revoke_all_keys", "_selected_action": [tenant.pk], "confirmed": "yes"},
    )
    assert response.status_code == 403
