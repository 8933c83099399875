"""The series list (``GET /api/series``, polled by the study list) costs the same
number of queries however many series it shows."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from dicomio.synthetic import phantom_volume, write_series
from radiology.models import FixityIssue, Review
from radiology.services.ingest import upload_ingest
from radiology.services.jobs import denoise_job_request
from tests.conftest import install_tiny_models

pytestmark = pytest.mark.django_db


@pytest.fixture
def models_root(settings, tmp_path):
    return install_tiny_models(settings, tmp_path / "models")


def _add_series(owner, reviewer, folder, seed: int) -> None:
    write_series(folder, phantom_volume((2, 16, 16), seed=seed), patient_id="P1")
    series = upload_ingest(sources=[(folder, "s")], owner=owner).series[0]
    job, _ = denoise_job_request(series=series, requested_by=owner)
    Review.objects.create(job=job, reviewer=reviewer, verdict="accept")
    FixityIssue.objects.create(
        series=series, file=series.volume_file, role="volume", expected_sha256="0" * 64
    )


def _queries(client) -> tuple[int, list]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get("/api/series")
    assert response.status_code == 200
    return len(captured), response.json()


def test_series_list_queries_do_not_grow_with_the_series(
    client, alice, make_user, models_root, tmp_path
):
    bob = make_user("bob-reviewer")
    client.force_login(alice)
    for seed in range(2):
        _add_series(alice, bob, tmp_path / f"s{seed}", seed)
    few, listed = _queries(client)
    assert len(listed) == 2
    for seed in range(2, 7):
        _add_series(alice, bob, tmp_path / f"s{seed}", seed)
    many, listed = _queries(client)
    assert len(listed) == 7
    assert many == few
    first = listed[0]
    assert first["latest_job"]["reviews"][0]["reviewer"] == "bob-reviewer"
    assert first["latest_job"]["requested_by"] == alice.get_username()
    assert first["fixity"]["ok"] is False and len(first["fixity"]["issues"]) == 1
