"""One authentication for /api/ and /dicomweb/: API tokens, the session, CSRF."""

from __future__ import annotations

import hashlib

import pytest
from django.test import Client, RequestFactory
from django.urls import resolve

from radiology import auth
from radiology.api import api
from radiology.models import ApiToken, AuditEvent

pytestmark = pytest.mark.django_db

KEY = "a-token-for-alice"
# A read and a write on each interface; the write is refused after authentication
# (a token lifetime of 0 days, a STOW body without parts), so its status tells
# whether authentication let it through.
READ = {"api": "/api/series", "dicomweb": "/dicomweb/studies"}
WRITE = {
    "api": ("/api/tokens", b'{"days": 0}', "application/json"),
    "dicomweb": (
        "/dicomweb/studies",
        b"--xyz--\r\n",
        'multipart/related; type="application/dicom"; boundary=xyz',
    ),
}
INTERFACES = ["api", "dicomweb"]


@pytest.fixture
def token(alice):
    return ApiToken.objects.create(
        user=alice, key_sha256=hashlib.sha256(KEY.encode()).hexdigest()
    )


def _write(client: Client, interface: str, **headers):
    path, body, content_type = WRITE[interface]
    return client.post(path, data=body, content_type=content_type, **headers)


def test_the_api_authenticates_with_the_shared_classes():
    assert api.auth == auth.API_AUTH


@pytest.mark.parametrize("interface", INTERFACES)
def test_no_credentials_is_401(interface):
    assert Client().get(READ[interface]).status_code == 401


def test_dicomweb_views_answer_401_themselves_rather_than_redirect_to_login():
    """Marked for Django's LoginRequiredMiddleware, which would redirect them."""
    assert resolve(READ["dicomweb"]).func.login_required is False


@pytest.mark.parametrize("interface", INTERFACES)
def test_a_token_authenticates_and_its_use_is_audited(interface, alice, token):
    response = Client().get(READ[interface], HTTP_AUTHORIZATION=f"Bearer {KEY}")
    assert response.status_code == 200
    used = AuditEvent.objects.get(action=AuditEvent.Action.TOKEN_USED)
    assert used.actor == alice
    token.refresh_from_db()
    assert token.last_used_at is not None


@pytest.mark.parametrize("interface", INTERFACES)
def test_an_unknown_token_is_401_and_counts_as_a_failure(interface, token):
    response = Client().get(READ[interface], HTTP_AUTHORIZATION="Bearer nope")
    assert response.status_code == 401
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.TOKEN_USED).exists()


def test_token_guesses_on_one_interface_lock_the_address_on_both(token, settings):
    settings.AUTH_FAILURES_PER_ADDRESS = 3
    client = Client(REMOTE_ADDR="10.0.0.20")
    for n in range(3):
        guess = client.get(READ["dicomweb"], HTTP_AUTHORIZATION=f"Bearer guess-{n}")
        assert guess.status_code == 401
    for path in READ.values():
        assert client.get(path, HTTP_AUTHORIZATION=f"Bearer {KEY}").status_code == 401
    event = AuditEvent.objects.get(action=AuditEvent.Action.AUTH_LOCKOUT)
    assert event.extra_data["via"] == "api token"


@pytest.mark.parametrize("interface", INTERFACES)
def test_the_session_authenticates_reads(interface, alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.get(READ[interface]).status_code == 200


@pytest.mark.parametrize("interface", INTERFACES)
def test_a_session_write_needs_the_csrf_token(interface, alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    refused = _write(client, interface)
    assert refused.status_code == 403
    assert "CSRF" in refused.content.decode()
    client.cookies["csrftoken"] = "k" * 32
    allowed = _write(client, interface, HTTP_X_CSRFTOKEN="k" * 32)
    assert allowed.status_code == 400


@pytest.mark.parametrize("interface", INTERFACES)
def test_a_token_write_needs_no_csrf_token(interface, token):
    client = Client(enforce_csrf_checks=True)
    assert _write(
        client, interface, HTTP_AUTHORIZATION=f"Bearer {KEY}"
    ).status_code == (400)


@pytest.mark.parametrize(
    ("method", "by_token", "failed"),
    [
        ("GET", False, False),
        ("HEAD", False, False),
        ("POST", False, True),
        ("DELETE", False, True),
        ("POST", True, False),
    ],
)
def test_csrf_is_checked_for_session_writes_only(method, by_token, failed):
    request = RequestFactory().generic(method, "/dicomweb/studies")
    assert auth.csrf_failed(request, by_token=by_token) is failed


def test_authenticate_prefers_the_token_to_the_session(alice, bob, token):
    request = RequestFactory().get("/", HTTP_AUTHORIZATION=f"Bearer {KEY}")
    request.user = bob
    assert auth.authenticate(request) == (alice, True)
    assert request.user == alice
    session_only = RequestFactory().get("/")
    session_only.user = bob
    assert auth.authenticate(session_only) == (bob, False)
    bad = RequestFactory().get("/", HTTP_AUTHORIZATION="Bearer nope")
    bad.user = bob
    assert auth.authenticate(bad) == (None, True)
