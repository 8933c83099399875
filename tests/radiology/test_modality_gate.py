"""A model runs only on the modality it was trained for, unless asked explicitly;
an Accept on a job with flagged slices or warnings needs a comment."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

import inference
from dicomio.synthetic import phantom_volume, write_series
from radiology.models import AuditEvent, DenoiseJob
from radiology.services.ingest import upload_ingest
from radiology.services.jobs import (
    JobRequestError,
    denoise_job_request,
    denoise_job_run,
    normalise_params,
)
from radiology.services.reviews import review_concerns, review_submit
from tests.conftest import install_tiny_models
from tests.inference.inference_fixtures import REDCNN, identity_weights, metadata

pytestmark = pytest.mark.django_db


@pytest.fixture
def models_root(settings, tmp_path):
    return install_tiny_models(settings, tmp_path / "models")


def _series(owner, tmp_path, modality: str):
    volume = phantom_volume((3, 48, 48), seed=7)
    if modality == "MR":
        volume = volume + 1024.0  # magnitudes, not HU
    write_series(tmp_path / modality, volume, spacing_mm=(2, 1, 1), modality=modality)
    return upload_ingest(sources=[(tmp_path / modality, modality)], owner=owner).series[
        0
    ]


def test_a_ct_model_is_refused_for_mr_before_any_job(alice, tmp_path, models_root):
    series = _series(alice, tmp_path, "MR")
    with pytest.raises(JobRequestError, match="is MR and model tiny:1.0.0 is for CT"):
        denoise_job_request(series=series, requested_by=alice)
    assert not DenoiseJob.objects.exists()


def test_the_override_runs_it_and_is_recorded(alice, tmp_path, models_root):
    series = _series(alice, tmp_path, "MR")
    job, _ = denoise_job_request(
        series=series, requested_by=alice, params={"allow_modality_mismatch": True}
    )
    event = AuditEvent.objects.filter(action=AuditEvent.Action.JOB_REQUESTED).get()
    assert event.extra_data["params"]["allow_modality_mismatch"] is True
    assert event.extra_data["modality"] == "MR"
    job = denoise_job_run(job_id=job.pk)
    assert job.provenance["modality_override"] is True
    assert job.provenance["series_modality"] == "MR"
    assert any("modality MR" in w for w in job.warnings)


def test_an_mr_model_is_picked_for_mr_when_one_is_registered(
    alice, tmp_path, models_root
):
    meta = metadata("tiny-mr", "1.0.0")
    meta["input_spec"]["modality"] = "MR"
    meta["input_spec"]["normalisation"] = {"kind": "percentile", "upper": 99.5}
    inference.write_bundle(
        models_root / "tiny-mr" / "1.0.0",
        metadata=meta,
        state_dict=identity_weights(REDCNN),
    )
    inference.clear_cache()
    job, _ = denoise_job_request(
        series=_series(alice, tmp_path, "MR"), requested_by=alice
    )
    assert job.model_name == "tiny-mr"
    ct_job, _ = denoise_job_request(
        series=_series(alice, tmp_path, "CT"), requested_by=alice
    )
    assert ct_job.model_name == "tiny"


def test_the_override_flag_is_validated_and_keeps_old_job_identities():
    with pytest.raises(JobRequestError, match="allow_modality_mismatch"):
        normalise_params({"allow_modality_mismatch": "yes"})
    plain = normalise_params(None)[1]
    assert normalise_params({"allow_modality_mismatch": False})[1] == plain
    assert normalise_params({"allow_modality_mismatch": True})[1] != plain


def test_denoise_command_refuses_mr_with_the_reason(alice, tmp_path, models_root):
    series = _series(alice, tmp_path, "MR")
    with pytest.raises(CommandError, match="allow_modality_mismatch"):
        call_command("denoise", str(series.pk))
    call_command("denoise", str(series.pk), "--allow-modality-mismatch")
    assert DenoiseJob.objects.get().params["allow_modality_mismatch"] is True


def _finished_job(alice, tmp_path):
    series = _series(alice, tmp_path, "CT")
    job, _ = denoise_job_request(series=series, requested_by=alice)
    return denoise_job_run(job_id=job.pk)


def test_accepting_a_flagged_job_needs_a_comment(alice, tmp_path, models_root):
    job = _finished_job(alice, tmp_path)
    job.metrics = {**job.metrics, "flagged_slices": [1]}
    job.warnings = []
    job.save(update_fields=["metrics", "warnings"])
    assert review_concerns(job) == ["1 slice(s) flagged for structure in the residual"]
    with pytest.raises(JobRequestError, match="needs a comment"):
        review_submit(job=job, reviewer=alice, verdict="accept", comment="  ")
    review_submit(job=job, reviewer=alice, verdict="reject")
    review = review_submit(
        job=job, reviewer=alice, verdict="accept", comment="edges checked, fine"
    )
    assert review.verdict == "accept"


def test_accepting_a_job_with_an_ood_warning_needs_a_comment(
    alice, tmp_path, models_root
):
    job = _finished_job(alice, tmp_path)
    job.warnings = ["noise_sd 9.9 is 7.0 SD above the training mean"]
    job.save(update_fields=["warnings"])
    with pytest.raises(JobRequestError, match="noise_sd 9.9"):
        review_submit(job=job, reviewer=alice, verdict="accept")


def test_a_clean_job_is_accepted_without_a_comment(alice, tmp_path, models_root):
    job = _finished_job(alice, tmp_path)
    job.metrics = {**job.metrics, "flagged_slices": []}
    job.warnings = []
    job.save(update_fields=["metrics", "warnings"])
    assert review_submit(job=job, reviewer=alice, verdict="accept").verdict == "accept"


def test_series_volumes_command_prints_where_the_volume_is(
    alice, tmp_path, models_root, capsys
):
    import json as json_module

    series = _series(alice, tmp_path, "CT")
    call_command("series_volumes", str(series.pk), "--json")
    (row,) = json_module.loads(capsys.readouterr().out)
    assert row["id"] == series.pk and row["modality"] == "CT"
    assert row["volume"].endswith(".npy") and row["shape"] == [3, 48, 48]
    with pytest.raises(CommandError, match="no series 999"):
        call_command("series_volumes", "999")


def test_only_staff_may_fine_tune_and_only_on_ct(
    client, alice, make_user, tmp_path, models_root
):
    ct = _series(alice, tmp_path, "CT")
    client.force_login(alice)
    response = client.post(
        "/api/models/finetune", {"series": [ct.pk]}, content_type="application/json"
    )
    assert response.status_code == 403
    assert not AuditEvent.objects.filter(action="model.finetune").exists()
    alice.is_staff = True
    alice.save()
    mr = _series(alice, tmp_path, "MR")
    response = client.post(
        "/api/models/finetune", {"series": [mr.pk]}, content_type="application/json"
    )
    assert response.status_code == 400 and "only CT" in response.json()["detail"]
    # Three slices are too few to hold any out for the decision.
    response = client.post(
        "/api/models/finetune", {"series": [ct.pk]}, content_type="application/json"
    )
    assert response.status_code == 400 and "at least 8" in response.json()["detail"]


def test_a_fine_tune_request_is_audited_and_queued(
    alice, tmp_path, models_root, monkeypatch
):
    from radiology import tasks
    from radiology.services.finetune import model_finetune_request

    sent = []
    monkeypatch.setattr(
        tasks.run_model_finetune, "delay_on_commit", lambda *a: sent.append(a)
    )
    volume = phantom_volume((10, 48, 48), seed=9)
    write_series(tmp_path / "long", volume, spacing_mm=(2, 1, 1))
    series = upload_ingest(sources=[(tmp_path / "long", "long")], owner=alice).series[0]
    alice.is_staff = True
    model_finetune_request(series=[series], requested_by=alice, minutes=5)
    event = AuditEvent.objects.get(action="model.finetune")
    assert event.target_id == "tiny:1.0.0"  # the parent it will fine-tune
    assert event.extra_data["series"] == [series.pk]
    assert event.extra_data["volume_sha256"] == {str(series.pk): series.volume_sha256}
    assert sent == [([series.pk], alice.pk, 5)]


def test_a_name_without_version_runs_the_default_not_a_newer_candidate(
    settings, tmp_path
):
    """A fine-tuned version that was not promoted runs only when asked for by
    version; the name alone means the version models/DEFAULT names."""
    from radiology.services.jobs import resolve_model

    root = install_tiny_models(settings, tmp_path / "models", ("1.0.0", "1.1.0"))
    inference.write_default(root, "tiny", "1.0.0")
    assert resolve_model("tiny").version == "1.0.0"
    assert resolve_model(None).version == "1.0.0"
    assert resolve_model("tiny:1.1.0").version == "1.1.0"
    inference.write_default(root, "tiny", "1.1.0")
    assert resolve_model("tiny").version == "1.1.0"


def test_an_accept_records_the_concerns_it_overrode(alice, tmp_path, models_root):
    job = _finished_job(alice, tmp_path)
    job.metrics = {**job.metrics, "flagged_slices": [0, 2]}
    job.warnings = []
    job.save(update_fields=["metrics", "warnings"])
    review_submit(job=job, reviewer=alice, verdict="accept", comment="edges fine")
    event = AuditEvent.objects.filter(action=AuditEvent.Action.REVIEW).get()
    assert event.extra_data["concerns"] == [
        "2 slice(s) flagged for structure in the residual"
    ]
    assert event.extra_data["replaces"] is None
    first = job.reviews.get()
    review_submit(job=job, reviewer=alice, verdict="reject", comment="on reflection")
    change = AuditEvent.objects.filter(action=AuditEvent.Action.REVIEW).latest("pk")
    assert change.extra_data["replaces"] == {"review": first.pk, "verdict": "accept"}
    assert job.reviews.count() == 2  # both verdicts kept


def test_one_fine_tune_at_a_time_and_a_killed_one_frees_the_lock(
    alice, settings, tmp_path, models_root
):
    import subprocess
    import sys

    from radiology.services import finetune

    settings.MEDIA_ROOT = tmp_path / "media"
    volume = phantom_volume((10, 48, 48), seed=9)
    write_series(tmp_path / "long", volume, spacing_mm=(2, 1, 1))
    series = upload_ingest(sources=[(tmp_path / "long", "long")], owner=alice).series[0]
    alice.is_staff = True
    lock = finetune._lock_path()
    # Another worker process holds the lock, then is killed without cleaning up.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_CREAT | "
            "os.O_RDWR); fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); "
            "time.sleep(60)",
            str(lock),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(JobRequestError, match="a fine-tune is running"):
            finetune.model_finetune_request(series=[series], requested_by=alice)
        with pytest.raises(JobRequestError, match="a fine-tune is running"):
            finetune.model_finetune_run(
                series_ids=[series.pk], requested_by_id=alice.pk, minutes=1
            )
        # The refused run is audited as an outcome, not lost.
        failed = AuditEvent.objects.get(action="model.finetuned")
        assert "a fine-tune is running" in failed.extra_data["error"]
    finally:
        holder.kill()
        holder.wait()
    assert lock.exists()  # left behind by the killed process, yet free
    with finetune._finetune_lock(probe=True):
        pass


def test_staff_cannot_fine_tune_on_series_they_may_not_see(
    client, alice, bob, tmp_path, models_root
):
    """Staff rights do not widen access: another group's series is not found, the
    denial is audited, and nothing is queued."""
    from django.test import Client

    volume = phantom_volume((10, 48, 48), seed=9)
    write_series(tmp_path / "long", volume, spacing_mm=(2, 1, 1))
    series = upload_ingest(sources=[(tmp_path / "long", "long")], owner=alice).series[0]
    bob.is_staff = True
    bob.save()
    client.force_login(bob)
    response = client.post(
        "/api/models/finetune", {"series": [series.pk]}, content_type="application/json"
    )
    assert response.status_code == 404
    assert not AuditEvent.objects.filter(action="model.finetune").exists()
    assert AuditEvent.objects.filter(actor=bob, action="access.denied").exists()
    # A session without the CSRF token is refused before anything else.
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(bob)
    response = strict.post(
        "/api/models/finetune", {"series": [series.pk]}, content_type="application/json"
    )
    assert response.status_code == 403
    assert "CSRF" in response.content.decode()
