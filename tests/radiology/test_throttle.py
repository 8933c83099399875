"""Sign-in throttling: by account and by address, audited, for tokens too."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from radiology.models import ApiToken, AuditEvent, AuthFailure

pytestmark = pytest.mark.django_db

PASSWORD = "review-pass-123"


def _sign_in(client: Client, username: str, password: str, address: str = "10.0.0.1"):
    return client.post(
        "/accounts/login/",
        {"username": username, "password": password},
        REMOTE_ADDR=address,
    )


def test_an_account_locks_after_five_failures_even_for_the_right_password(alice):
    client = Client()
    for _ in range(5):
        response = _sign_in(client, "alice", "wrong")
        assert response.status_code == 200  # the form again, not signed in
    response = _sign_in(client, "alice", PASSWORD)
    assert response.status_code == 200
    assert "Too many failed sign-ins" in response.content.decode()
    assert "_auth_user_id" not in client.session
    (event,) = AuditEvent.objects.filter(action=AuditEvent.Action.AUTH_LOCKOUT)
    assert event.target_id == "alice" and event.extra_data["via"] == "sign-in"
    # From another address the account is still locked: it is the account's lock.
    assert (
        "Too many" in _sign_in(Client(), "alice", PASSWORD, "10.9.9.9").content.decode()
    )
    # When the failures leave the window the right password works and clears them.
    AuthFailure.objects.update(at=timezone.now() - timedelta(hours=1))
    response = _sign_in(client, "alice", PASSWORD)
    assert response.status_code == 302
    assert not AuthFailure.objects.filter(scope="account", key="alice").exists()


def test_an_address_guessing_many_accounts_is_locked(alice, settings):
    settings.AUTH_FAILURES_PER_ADDRESS = 6
    client = Client()
    for n in range(6):
        _sign_in(client, f"user{n}", "wrong", "10.0.0.7")
    response = _sign_in(client, "alice", PASSWORD, "10.0.0.7")
    assert "Too many failed sign-ins" in response.content.decode()
    assert _sign_in(Client(), "alice", PASSWORD, "10.0.0.8").status_code == 302


def test_guessing_api_tokens_locks_the_address(alice, settings):
    settings.AUTH_FAILURES_PER_ADDRESS = 3
    key = "a-real-token-for-alice"
    ApiToken.objects.create(
        user=alice, key_sha256=hashlib.sha256(key.encode()).hexdigest()
    )
    client = Client(REMOTE_ADDR="10.0.0.9")
    ok = client.get("/api/series", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert ok.status_code == 200
    for n in range(3):
        bad = client.get("/api/series", HTTP_AUTHORIZATION=f"Bearer guess-{n}")
        assert bad.status_code == 401
    locked = client.get("/api/series", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert locked.status_code == 401
    event = AuditEvent.objects.get(action=AuditEvent.Action.AUTH_LOCKOUT)
    assert event.extra_data["via"] == "api token"
    other = Client(REMOTE_ADDR="10.0.0.10")
    assert (
        other.get("/api/series", HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 200
    )
