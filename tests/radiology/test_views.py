"""Pages and the viewer's volume endpoints: login, rendering, int16, access."""

from __future__ import annotations

import numpy as np
import pytest

from dicomio.synthetic import phantom_volume, write_series
from radiology.services.ingest import upload_ingest
from radiology.services.jobs import denoise_job_request, denoise_job_run
from radiology.storage import load_array
from tests.conftest import install_tiny_models

pytestmark = pytest.mark.django_db


@pytest.fixture
def models_root(settings, tmp_path):
    return install_tiny_models(
        settings, tmp_path / "models", model_card="# tiny\n\nIdentity test bundle.\n"
    )


@pytest.fixture
def alice_series(alice, tmp_path):
    write_series(
        tmp_path / "s", phantom_volume((5, 40, 48), seed=3), spacing_mm=(2, 1, 1)
    )
    return upload_ingest(sources=[(tmp_path / "s", "s")], owner=alice).series[0]


@pytest.fixture
def alice_job(alice, alice_series, models_root):
    job, _ = denoise_job_request(series=alice_series, requested_by=alice)
    return denoise_job_run(job_id=job.pk, worker="test")


def as_user(client, user):
    client.force_login(user)
    return client


def decode(response) -> np.ndarray:
    shape = [int(s) for s in response["X-Volume-Shape"].split(",")]
    z0, z1 = (int(v) for v in response["X-Slice-Range"].split(","))
    q = np.frombuffer(response.content, dtype="<i2").reshape(z1 - z0, *shape[1:])
    return float(response["X-Volume-Offset"]) + float(response["X-Volume-Scale"]) * q


@pytest.mark.parametrize("path", ["/audit/", "/models/", "/jobs/1/compare/"])
def test_new_pages_redirect_anonymous_users_to_login(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize("path", ["/", "/upload/", "/audit/"])
def test_pages_render_for_a_reviewer(client, alice, path):
    response = as_user(client, alice).get(path)
    assert response.status_code == 200
    assert b'type="module"' in response.content


def test_series_and_compare_pages_render_for_the_owner(client, alice, alice_job):
    as_user(client, alice)
    assert client.get(f"/series/{alice_job.series_id}/").status_code == 200
    page = client.get(f"/jobs/{alice_job.pk}/compare/")
    assert page.status_code == 200
    assert f'data-job-id="{alice_job.pk}"'.encode() in page.content


def test_model_registry_page_shows_the_model_card(client, alice, models_root):
    page = as_user(client, alice).get("/models/")
    assert b"tiny" in page.content and b"Identity test bundle." in page.content


def test_model_cards_are_rendered_and_cannot_inject_markup(settings, tmp_path):
    from radiology.views import _metrics_table, render_markdown

    card = (
        "# tiny 1.0.0\n\nIntended use: **research**.\n\n- one\n- two\n\n"
        "| level | PSNR |\n|---|---|\n| dose_0.25 | 43.3 |\n\n"
        "<script>alert(1)</script> <img src=x onerror=alert(2)>\n"
    )
    out = render_markdown(card)
    assert "<h1>tiny 1.0.0</h1>" in out and "<strong>research</strong>" in out
    assert "<li>one</li>" in out and "<td>dose_0.25</td>" in out
    assert "<script" not in out and "<img" not in out
    assert "&lt;script&gt;" in out
    table = _metrics_table(
        {"dose_0.25": {"psnr_window": 43.2961, "rmse": 5.4}, "dose_0.1": {"rmse": 8.5}}
    )
    assert table == {
        "names": ["psnr window", "rmse"],
        "rows": [("dose_0.25", ["43.3", "5.4"]), ("dose_0.1", ["–", "8.5"])],
    }
    assert _metrics_table(None) is None and _metrics_table("x") is None


def test_series_volume_round_trips_through_int16(client, alice, alice_series):
    response = as_user(client, alice).get(f"/api/series/{alice_series.pk}/volume")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/octet-stream"
    original = load_array(alice_series.volume_file)
    decoded = decode(response)
    assert decoded.shape == original.shape
    assert (
        np.abs(decoded - original).max() <= float(response["X-Volume-Scale"]) / 2 + 1e-3
    )


def test_a_slab_of_slices_is_served_with_the_volume_quantisation(
    client, alice, alice_series
):
    as_user(client, alice)
    whole = client.get(f"/api/series/{alice_series.pk}/volume")
    slab = client.get(f"/api/series/{alice_series.pk}/volume?z0=2&z1=4")
    assert slab["X-Slice-Range"] == "2,4"
    assert slab["X-Volume-Scale"] == whole["X-Volume-Scale"]
    assert np.array_equal(decode(slab), decode(whole)[2:4])


def test_slice_range_outside_the_volume_is_refused(client, alice, alice_series):
    response = as_user(client, alice).get(
        f"/api/series/{alice_series.pk}/volume?z0=3&z1=99"
    )
    assert response.status_code == 400


@pytest.mark.parametrize(
    "kind, field",
    [("reconstruction", "reconstruction_file"), ("residual", "residual_file")],
)
def test_job_outputs_round_trip_through_int16(client, alice, alice_job, kind, field):
    response = as_user(client, alice).get(f"/api/jobs/{alice_job.pk}/volume/{kind}")
    assert response.status_code == 200
    stored = load_array(getattr(alice_job, field))
    assert (
        np.abs(decode(response) - stored).max()
        <= float(response["X-Volume-Scale"]) / 2 + 1e-3
    )


def test_reconstruction_shares_the_original_quantisation(client, alice, alice_job):
    as_user(client, alice)
    original = client.get(f"/api/series/{alice_job.series_id}/volume")
    recon = client.get(f"/api/jobs/{alice_job.pk}/volume/reconstruction")
    assert (recon["X-Volume-Scale"], recon["X-Volume-Offset"]) == (
        original["X-Volume-Scale"],
        original["X-Volume-Offset"],
    )


def test_unknown_output_kind_is_refused(client, alice, alice_job):
    response = as_user(client, alice).get(f"/api/jobs/{alice_job.pk}/volume/weights")
    assert response.status_code == 422


@pytest.mark.parametrize(
    "path",
    [
        "/series/{series}/",
        "/jobs/{job}/compare/",
        "/api/series/{series}/volume",
        "/api/series/{series}/volume?z0=0&z1=1",
        "/api/jobs/{job}/volume/reconstruction",
        "/api/jobs/{job}/volume/residual",
    ],
)
def test_another_users_pages_and_volume_bytes_are_404(client, bob, alice_job, path):
    url = path.format(series=alice_job.series_id, job=alice_job.pk)
    response = as_user(client, bob).get(url)
    assert response.status_code == 404
    assert not response.content.startswith(b"\x93NUMPY")


def test_another_users_audit_entries_are_not_listed(client, alice, bob, alice_job):
    as_user(client, alice)
    client.post(
        f"/api/jobs/{alice_job.pk}/review",
        {"verdict": "accept", "comment": "secret", "strength": 0.8},
        content_type="application/json",
    )
    client.logout()
    events = as_user(client, bob).get("/api/audit?limit=1000").json()
    assert not any(
        e["target_id"] == str(alice_job.pk) and e["target_type"] == "denoisejob"
        for e in events
    )
    assert not any("secret" in str(e["extra_data"]) for e in events)
    filtered = client.get(f"/api/audit?target_type=denoisejob&target_id={alice_job.pk}")
    assert filtered.status_code == 200 and filtered.json() == []


def test_measurements_go_with_a_verdict_and_bad_ones_are_refused(
    client, alice, alice_job
):
    as_user(client, alice)
    url = f"/api/jobs/{alice_job.pk}/review"
    roi = {"kind": "ellipse", "plane": "axial", "index": 2, "areaMm2": 50.3}
    roi |= {"origMean": 41.2, "denMean": 40.9, "resSd": 3.1}
    line = {"kind": "length", "plane": "axial", "index": 2, "lengthMm": 23.4}
    body = {"verdict": "reject", "comment": "x", "measurements": [roi, line]}
    response = client.post(url, body, content_type="application/json")
    assert response.status_code == 201, response.content
    assert response.json()["measurements"] == [roi, line]
    job = client.get(f"/api/jobs/{alice_job.pk}").json()
    assert job["reviews"][0]["measurements"] == [roi, line]
    from radiology.models import AuditEvent

    event = AuditEvent.objects.filter(action=AuditEvent.Action.REVIEW).latest("pk")
    assert event.extra_data["measurements"] == [roi, line]
    from radiology.services.jobs import JobRequestError
    from radiology.services.reviews import clean_measurements

    for bad, why in (
        ([{"kind": "circle"}], "needs a kind"),
        ([{"kind": "length", "lengthMm": float("inf")}], "finite number"),
        ([{"kind": "rect", "nested": {"a": 1}}], "finite number"),
        ([line] * 21, "at most 20"),
    ):
        with pytest.raises(JobRequestError, match=why):
            clean_measurements(bad)
    response = client.post(
        url,
        {"verdict": "reject", "measurements": [{"kind": "circle"}]},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert "needs a kind" in response.json()["detail"]
