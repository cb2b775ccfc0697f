"""Liveness and readiness as a load balancer and an outsider see them."""

from __future__ import annotations

import time

import pytest

from controlplane import health


@pytest.mark.django_db
def test_liveness_is_public_and_touches_nothing(client, monkeypatch):
    def fail() -> tuple[bool, str]:
        raise AssertionError("liveness must not check dependencies")

    monkeypatch.setattr(health, "CHECKS", {"database": fail})
    response = client.get("/healthz", REMOTE_ADDR="198.51.100.4")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readiness_tells_an_outsider_only_the_verdict(client, monkeypatch):
    monkeypatch.setattr(health, "CHECKS", {"database": lambda: (False, "postgresql: Down")})
    response = client.get("/readyz", REMOTE_ADDR="198.51.100.4")
    assert response.status_code == 503
    assert response.json() == {"status": "degraded"}
    assert "postgresql" not in response.content.decode()


@pytest.mark.django_db
def test_readiness_shows_details_with_the_metrics_token(client, monkeypatch, settings):
    settings.METRICS_TOKEN = "t0ken"
    monkeypatch.setattr(health, "CHECKS", {"database": lambda: (True, "postgresql")})
    wrong = client.get("/readyz", REMOTE_ADDR="198.51.100.4", HTTP_AUTHORIZATION="Bearer nope")
    right = client.get("/readyz", REMOTE_ADDR="198.51.100.4", HTTP_AUTHORIZATION="Bearer t0ken")
    assert "checks" not in wrong.json()
    assert right.json()["checks"] == {"database": {"ok": True, "detail": "postgresql"}}


@pytest.mark.django_db
def test_readiness_answers_within_its_timeout_when_a_dependency_hangs(client, monkeypatch):
    def stuck() -> tuple[bool, str]:
        time.sleep(health.READINESS_TIMEOUT + 3)
        return True, "late"

    monkeypatch.setattr(health, "CHECKS", {"cache": stuck, "database": lambda: (True, "ok")})
    started = time.monotonic()
    response = client.get("/readyz")
    assert time.monotonic() - started < health.READINESS_TIMEOUT + 1
    assert response.status_code == 503
    assert response.json()["checks"]["cache"] == {
        "ok": False,
        "detail": f"no answer within {health.READINESS_TIMEOUT:g} s",
    }
