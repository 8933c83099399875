"""Access: login everywhere, owners and their groups only, 404 for the rest, CSRF."""

from __future__ import annotations

import hashlib
import io

import pytest
from django.test import Client

from dicomio.synthetic import phantom_volume, write_series
from radiology.models import ApiToken, AuditEvent
from radiology.services.ingest import upload_ingest

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice_series(alice, tmp_path):
    write_series(tmp_path / "s", phantom_volume((3, 32, 32), seed=1), patient_id="P9")
    return upload_ingest(sources=[(tmp_path / "s", "s")], owner=alice).series[0]


@pytest.mark.parametrize("path", ["/", "/upload/", "/series/1/"])
def test_pages_redirect_anonymous_users_to_login(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize(
    "path", ["/api/series", "/api/audit", "/api/jobs/1", "/api/models"]
)
def test_api_answers_401_without_credentials(client, path):
    assert client.get(path).status_code == 401


def test_other_users_series_is_404_and_the_attempt_is_audited(
    client, bob, alice_series
):
    client.force_login(bob)
    assert client.get(f"/api/series/{alice_series.pk}").status_code == 404
    assert client.post(f"/api/series/{alice_series.pk}/denoise").status_code == 404
    assert client.get(f"/series/{alice_series.pk}/").status_code == 404
    assert client.get("/api/series").json() == []
    denied = AuditEvent.objects.filter(action="access.denied", actor=bob)
    assert denied.count() == 3
    assert denied.first().target_id == str(alice_series.pk)


def test_missing_and_someone_elses_series_look_the_same_to_the_user(
    client, bob, alice_series
):
    """No existence oracle: the same answer, one event written either way (similar
    timing), and the user cannot read either event; staff can tell them apart."""
    client.force_login(bob)
    mine_not = client.get(f"/api/series/{alice_series.pk}")
    missing = client.get("/api/series/999999")
    assert mine_not.status_code == missing.status_code == 404
    assert mine_not.json().keys() == missing.json().keys()
    denied = AuditEvent.objects.filter(action="access.denied", actor=bob)
    assert [e.extra_data["exists"] for e in denied.order_by("pk")] == [True, False]
    readable = client.get("/api/audit?limit=1000").json()
    assert not any(e["action"] == "access.denied" for e in readable)


def test_group_members_see_shared_studies(client, make_user, alice_series):
    carol = make_user("carol", group="neuro")
    client.force_login(carol)
    response = client.get(f"/api/series/{alice_series.pk}")
    assert response.status_code == 200
    assert response.json()["series_instance_uid"] == alice_series.series_instance_uid


def test_session_write_without_csrf_token_is_403(alice, alice_series):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post(f"/api/series/{alice_series.pk}/denoise")
    assert response.status_code == 403


def test_bearer_token_authenticates_without_csrf(alice, alice_series):
    ApiToken.objects.create(
        user=alice, key_sha256=hashlib.sha256(b"secret-token").hexdigest()
    )
    client = Client(enforce_csrf_checks=True)
    headers = {"HTTP_AUTHORIZATION": "Bearer secret-token"}
    response = client.get("/api/series", **headers)
    assert response.status_code == 200 and len(response.json()) == 1
    assert (
        client.get("/api/series", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    )


def test_admin_works_for_staff(client, make_user):
    staff = make_user("root", is_staff=True, is_superuser=True)
    client.force_login(staff)
    assert client.get("/admin/radiology/auditevent/").status_code == 200
    assert client.get("/admin/radiology/series/").status_code == 200


def test_audit_reads_are_audited_and_filtered_by_access(
    client, bob, alice, alice_series
):
    client.force_login(bob)
    events = client.get("/api/audit").json()
    assert all(e["actor"] != "alice" for e in events)
    client.force_login(alice)
    events = client.get("/api/audit?action=ingest").json()
    assert [e["action"] for e in events] == ["ingest"]
    assert AuditEvent.objects.filter(action="audit.read").count() == 2


def test_oversized_request_is_refused_with_413(client, alice, settings):
    settings.UPLOAD_MAX_BYTES = 1000
    client.force_login(alice)
    response = client.post(
        "/api/uploads", data=b"x" * 5000, content_type="application/octet-stream"
    )
    assert response.status_code == 413
    assert "UPLOAD_MAX_BYTES" in response.json()["detail"]


def test_too_many_files_is_refused_with_413(client, alice, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 2
    client.force_login(alice)
    files = []
    for i in range(3):
        handle = io.BytesIO(b"x")
        handle.name = f"f{i}.dcm"
        files.append(handle)
    response = client.post("/api/uploads", {"files": files})
    assert response.status_code == 413


def test_openapi_schema_lists_the_contract_endpoints(client, alice):
    client.force_login(alice)
    paths = client.get("/api/openapi.json").json()["paths"]
    for path in (
        "/api/uploads",
        "/api/series",
        "/api/series/{series_id}",
        "/api/series/{series_id}/denoise",
        "/api/jobs/{job_id}",
        "/api/audit",
        "/api/jobs/{job_id}/review",
    ):
        assert path in paths


def test_the_api_schema_and_docs_need_a_sign_in_and_use_no_cdn(client, alice):
    for path in ("/api/docs", "/api/openapi.json"):
        response = client.get(path)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")
    client.force_login(alice)
    docs = client.get("/api/docs").content.decode()
    assert "/static/ninja/swagger-ui-bundle.js" in docs
    assert "cdn" not in docs.lower() and "https://" not in docs
    assert client.get("/api/openapi.json").json()["info"]["title"]
