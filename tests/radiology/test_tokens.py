"""API tokens: a lifetime, listed and revoked by their owner or staff, use audited."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from radiology.models import ApiToken, AuditEvent

pytestmark = pytest.mark.django_db


def _bearer(key: str) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {key}")


def test_a_token_expires_is_listed_revoked_and_its_use_audited(
    client, alice, bob, make_user, settings
):
    settings.API_TOKEN_LIFETIME_DAYS = 30
    client.force_login(alice)
    made = client.post(
        "/api/tokens", {"name": "pacs bridge"}, content_type="application/json"
    )
    assert made.status_code == 201
    key, token_id = made.json()["key"], made.json()["id"]
    expires = ApiToken.objects.get(pk=token_id).expires_at
    assert timedelta(days=29) < expires - timezone.now() <= timedelta(days=30)
    listed = client.get("/api/tokens").json()
    assert [t["name"] for t in listed] == ["pacs bridge"] and "key" not in listed[0]
    # Used twice within the hour: one token.used event.
    for _ in range(2):
        assert _bearer(key).get("/api/series").status_code == 200
    used = AuditEvent.objects.filter(action=AuditEvent.Action.TOKEN_USED)
    assert used.count() == 1 and used.get().actor == alice
    # Bob can neither see nor revoke it; staff can.
    client.force_login(bob)
    assert client.get("/api/tokens").json() == []
    assert client.delete(f"/api/tokens/{token_id}").status_code == 400
    assert _bearer(key).get("/api/series").status_code == 200
    staff = make_user("root", is_staff=True)
    client.force_login(staff)
    assert [t["owner"] for t in client.get("/api/tokens").json()] == ["alice"]
    revoked = client.delete(f"/api/tokens/{token_id}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    assert _bearer(key).get("/api/series").status_code == 401
    assert AuditEvent.objects.filter(action=AuditEvent.Action.TOKEN_REVOKED).exists()


def test_an_expired_token_is_refused(client, alice):
    client.force_login(alice)
    made = client.post("/api/tokens", {"days": 1}, content_type="application/json")
    key = made.json()["key"]
    assert _bearer(key).get("/api/series").status_code == 200
    ApiToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert _bearer(key).get("/api/series").status_code == 401
    bad = client.post("/api/tokens", {"days": 0}, content_type="application/json")
    assert bad.status_code == 400 and "1 to 3650 days" in bad.json()["detail"]
