"""Sign-in through Django's LoginRequiredMiddleware: pages redirect, the API and
DICOMweb answer 401 themselves, login, health check and static files stay open."""

from __future__ import annotations

import pytest
from django.contrib.auth.decorators import login_not_required
from django.http import HttpResponse
from django.urls import URLResolver, get_resolver, path

from radiology.urls import SELF_AUTHENTICATING

pytestmark = pytest.mark.django_db


@login_not_required
def _open_view(request):
    return HttpResponse("open")


def _closed_view(request):
    return HttpResponse("closed")


#: For the test that marks its own views (``pytest.mark.urls(__name__)``).
urlpatterns = [
    path("open/", _open_view),
    path("closed/", _closed_view),
    path("login/", _open_view, name="login"),
]


def _views(entries, prefix=""):
    for entry in entries:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from _views(entry.url_patterns, route)
        else:
            yield route, entry.callback


@pytest.mark.parametrize("path", ["/", "/upload/", "/series/1/", "/api/docs"])
def test_an_anonymous_page_request_is_sent_to_the_login_page(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={path}"


@pytest.mark.parametrize("path", ["/api/series", "/api/jobs/1", "/dicomweb/studies"])
def test_the_api_without_credentials_answers_401_json_not_a_redirect(client, path):
    response = client.get(path)
    assert response.status_code == 401
    assert response["Content-Type"].startswith("application/json")
    assert "detail" in response.json() or "errors" in response.json()


def test_the_admin_sends_anonymous_users_to_its_own_login_page(client):
    response = client.get("/admin/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
    assert client.get("/admin/login/").status_code == 200


def test_login_page_and_health_check_are_open(client):
    assert client.get("/accounts/login/").status_code == 200
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"ok": True}


def test_static_files_are_open(client, settings, tmp_path):
    (tmp_path / "probe.css").write_text("body { color: black }\n")
    settings.STATIC_ROOT = tmp_path  # read by WhiteNoise when the client starts
    response = client.get("/static/probe.css")
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"body { color: black }\n"


@pytest.mark.urls(__name__)
def test_a_view_is_open_exactly_when_marked_login_not_required(client):
    assert client.get("/open/").status_code == 200
    assert client.get("/closed/").status_code == 302


def test_only_login_health_and_self_authenticating_routes_are_open():
    open_routes = {
        route
        for route, view in _views(get_resolver().url_patterns)
        if not getattr(view, "login_required", True)
    }
    assert {r for r in open_routes if not r.startswith(SELF_AUTHENTICATING)} == {
        "accounts/login/",
        "healthz",
    }
    guarded = {
        route
        for route, _ in _views(get_resolver().url_patterns)
        if route.startswith(SELF_AUTHENTICATING)
    }
    assert guarded and guarded <= open_routes, guarded - open_routes
