"""Denoise jobs in-process: one job per input, a run with provenance, failures."""

from __future__ import annotations

import errno
import json

import numpy as np
import pytest
from django.core.management import call_command

import inference
from dicomio.synthetic import phantom_volume, write_series
from radiology import storage
from radiology.audit import audit_verify
from radiology.celery import app
from radiology.models import AuditEvent, DenoiseJob
from radiology.services.ingest import upload_ingest
from radiology.services.jobs import (
    JobRequestError,
    denoise_job_cancel,
    denoise_job_request,
    denoise_job_run,
    normalise_params,
    output_names,
    reconcile_stale_jobs,
    resolve_model,
    warm_worker,
    worker_model,
)
from radiology.storage import ArrayFile, file_sha256, load_array, media_path
from tests.conftest import install_tiny_models

pytestmark = pytest.mark.django_db


@pytest.fixture
def models_root(settings, tmp_path):
    return install_tiny_models(
        settings, tmp_path / "models", versions=("1.0.0", "1.1.0")
    )


@pytest.fixture
def series(alice, tmp_path):
    write_series(
        tmp_path / "s", phantom_volume((4, 48, 48), seed=5), spacing_mm=(2, 1, 1)
    )
    return upload_ingest(sources=[(tmp_path / "s", "s")], owner=alice).series[0]


def test_asking_twice_returns_the_same_job(alice, series, models_root):
    first, created = denoise_job_request(series=series, requested_by=alice)
    again, created_again = denoise_job_request(series=series, requested_by=alice)
    assert created and not created_again and first.pk == again.pk
    assert (first.model_name, first.model_version) == ("tiny", "1.1.0")


def test_other_parameters_or_version_make_another_job(alice, series, models_root):
    a, _ = denoise_job_request(series=series, requested_by=alice)
    b, _ = denoise_job_request(series=series, requested_by=alice, model="tiny:1.0.0")
    c, _ = denoise_job_request(
        series=series, requested_by=alice, params={"batch_size": 2}
    )
    assert len({a.pk, b.pk, c.pk}) == 3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"model": "nope"}, "no model 'nope'"),
        ({"params": {"bogus": 1}}, "unknown parameter"),
        ({"params": {"precision": "fp8"}}, "precision must be"),
        ({"params": {"batch_size": 0}}, "batch_size must be"),
    ],
)
def test_bad_requests_are_refused_and_queue_nothing(
    alice, series, models_root, kwargs, message
):
    with pytest.raises(JobRequestError, match=message):
        denoise_job_request(series=series, requested_by=alice, **kwargs)
    assert DenoiseJob.objects.count() == 0


def test_derived_series_is_never_denoised(alice, series, models_root):
    series.derived = True
    series.save()
    with pytest.raises(JobRequestError, match="derived"):
        denoise_job_request(series=series, requested_by=alice)


def test_run_stores_outputs_and_provenance(alice, series, models_root, monkeypatch):
    read_back = []
    real_sha256_path = storage._sha256_path
    monkeypatch.setattr(
        storage,
        "_sha256_path",
        lambda path: read_back.append(path) or real_sha256_path(path),
    )
    job, _ = denoise_job_request(series=series, requested_by=alice)
    done = denoise_job_run(job_id=job.pk, worker="test@host")
    assert read_back == []  # both outputs were hashed as they were written
    assert done.status == DenoiseJob.Status.SUCCEEDED, done.error
    assert done.progress == 1.0 and done.attempts == 1
    original = load_array(series.volume_file)
    recon, residual = (
        load_array(done.reconstruction_file),
        load_array(done.residual_file),
    )
    np.testing.assert_allclose(recon + residual, original, atol=1e-3)
    assert done.provenance["model"]["weights_sha256"] == done.weights_sha256
    assert done.provenance["requested_by"] == "alice"
    assert "flagged_slices" in done.metrics
    assert set(done.timings_s) >= {"load_model", "denoise", "write_outputs", "total"}
    assert not list(media_path(done.reconstruction_file).parent.glob("*.partial"))
    # Hashed chunk by chunk during the run: the hashes must be those of the files.
    assert file_sha256(done.reconstruction_file) == done.reconstruction_sha256
    assert file_sha256(done.residual_file) == done.residual_sha256
    assert audit_verify().ok


def test_a_second_delivery_of_a_finished_job_does_nothing(alice, series, models_root):
    job, _ = denoise_job_request(series=series, requested_by=alice)
    denoise_job_run(job_id=job.pk)
    assert denoise_job_run(job_id=job.pk) is None
    assert DenoiseJob.objects.get(pk=job.pk).attempts == 1
    assert AuditEvent.objects.filter(action="job.succeeded").count() == 1


def test_tampered_weights_fail_the_job_clearly(alice, series, models_root):
    job, _ = denoise_job_request(series=series, requested_by=alice)
    weights = models_root / "tiny" / "1.1.0" / "models" / "model.pt"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    inference.clear_cache()
    done = denoise_job_run(job_id=job.pk)
    assert done.status == DenoiseJob.Status.FAILED
    assert "sha" in done.error.lower() or "hash" in done.error.lower()
    assert AuditEvent.objects.filter(action="job.failed").count() == 1


def test_failed_job_requested_again_is_requeued(alice, series, models_root):
    job, _ = denoise_job_request(series=series, requested_by=alice)
    DenoiseJob.objects.filter(pk=job.pk).update(status="failed", error="boom")
    again, created = denoise_job_request(series=series, requested_by=alice)
    assert not created and again.pk == job.pk and again.status == "queued"


def test_cancel_then_run_does_nothing(alice, series, models_root):
    job, _ = denoise_job_request(series=series, requested_by=alice)
    denoise_job_cancel(job=job, actor=alice)
    assert denoise_job_run(job_id=job.pk) is None
    assert DenoiseJob.objects.get(pk=job.pk).status == "cancelled"


def test_reconciler_requeues_jobs_of_a_restarted_worker(alice, series, models_root):
    job, _ = denoise_job_request(series=series, requested_by=alice)
    DenoiseJob.objects.filter(pk=job.pk).update(
        status="running", worker="w1@host#999999", claim="old", attempts=1
    )
    assert reconcile_stale_jobs(restarted_worker="w2@host") == []
    assert reconcile_stale_jobs(restarted_worker="w1@host") == [job.pk]
    done = denoise_job_run(job_id=job.pk)
    assert done.status == "succeeded" and done.attempts == 2


def test_redelivery_takes_over_a_job_whose_pool_process_died(
    alice, series, models_root
):
    job, _ = denoise_job_request(series=series, requested_by=alice)
    # pid 999999 is beyond pid_max on this kind of machine: that process is gone.
    DenoiseJob.objects.filter(pk=job.pk).update(
        status="running", worker="w1@host#999999", claim="old", attempts=1
    )
    assert denoise_job_run(job_id=job.pk, worker="w2@host#1") is None
    done = denoise_job_run(job_id=job.pk, worker="w1@host#1")
    assert done.status == "succeeded" and done.attempts == 2
    assert AuditEvent.objects.filter(action="job.requeued").count() == 1


def test_a_live_attempt_is_never_taken_over(alice, series, models_root):
    import os

    job, _ = denoise_job_request(series=series, requested_by=alice)
    DenoiseJob.objects.filter(pk=job.pk).update(
        status="running", worker=f"w1@host#{os.getpid()}", claim="live", attempts=1
    )
    assert denoise_job_run(job_id=job.pk, worker="w1@host#1") is None
    assert DenoiseJob.objects.get(pk=job.pk).claim == "live"


@pytest.mark.django_db(transaction=True)
def test_denoise_command_wait_json(alice, series, models_root, capsys):
    # Eager: the task runs in-process once the request commits (real workers are
    # exercised in tests/integration).

    app.conf.task_always_eager = True
    try:
        call_command("denoise", str(series.pk), "--wait", "--json", "--timeout", "60")
    finally:
        app.conf.task_always_eager = False
    job = json.loads(capsys.readouterr().out)
    assert job["status"] == "succeeded"
    assert job["provenance"]["model"]["version"] == "1.1.0"
    assert "noise_sd_before" in job["metrics"]


def test_models_command_lists_bundles(models_root, capsys):
    call_command("models", "--json")
    rows = json.loads(capsys.readouterr().out)
    assert {(r["name"], r["version"]) for r in rows} == {
        ("tiny", "1.0.0"),
        ("tiny", "1.1.0"),
    }
    assert all(len(r["sha256"]) == 64 for r in rows)
    assert sum(r["default"] for r in rows) >= 1
    assert resolve_model("").version == "1.1.0"


def test_job_of_an_older_volume_is_refused_by_viewer_and_export(
    client, alice, series, models_root
):
    job, _ = denoise_job_request(series=series, requested_by=alice)
    denoise_job_run(job_id=job.pk)
    series.volume_sha256 = "0" * 64  # as when an upload adds slices to the series
    series.save()
    client.force_login(alice)
    response = client.get(f"/api/jobs/{job.pk}/volume/reconstruction")
    assert response.status_code == 409
    assert client.get(f"/api/jobs/{job.pk}/export.zip").status_code in {400, 409}


def test_a_job_keeps_reading_the_volume_it_was_requested_for(
    alice, series, models_root
):
    job, _ = denoise_job_request(series=series, requested_by=alice)
    requested_volume = series.volume_file
    series.volume_file = "volumes/elsewhere.npy"
    series.save()
    done = denoise_job_run(job_id=job.pk)
    assert done.status == "succeeded" and done.input_volume_file == requested_volume


def test_superseded_attempt_stops_and_writes_nothing(alice, series, models_root):
    from radiology.services.jobs import output_names

    job, _ = denoise_job_request(series=series, requested_by=alice)

    def cancel_midway(*args, **kwargs):
        DenoiseJob.objects.filter(pk=job.pk).update(status="cancelled", claim="")
        return real(*args, **kwargs)

    real = inference.denoise_volume
    import radiology.services.jobs as jobs_module

    jobs_module.inference.denoise_volume = cancel_midway
    try:
        assert denoise_job_run(job_id=job.pk) is None
    finally:
        jobs_module.inference.denoise_volume = real
    recon, _ = output_names(job)
    assert not media_path(recon).exists()
    assert (
        not list(media_path(recon).parent.glob(".*"))
        if media_path(recon).parent.exists()
        else True
    )


def test_attempts_are_capped(alice, series, models_root, settings):
    settings.DENOISE_MAX_ATTEMPTS = 2
    job, _ = denoise_job_request(series=series, requested_by=alice)
    DenoiseJob.objects.filter(pk=job.pk).update(attempts=2)
    assert denoise_job_run(job_id=job.pk) is None
    failed = DenoiseJob.objects.get(pk=job.pk)
    assert failed.status == "failed" and "gave up after 2 attempts" in failed.error


def test_queued_job_whose_message_was_lost_is_sent_again(
    alice, series, models_root, settings, monkeypatch
):
    from datetime import timedelta

    from django.utils import timezone

    import radiology.services.jobs as jobs_module

    job, _ = denoise_job_request(series=series, requested_by=alice)
    sent = []
    monkeypatch.setattr(jobs_module, "_enqueue", lambda j: sent.append(j.pk))
    assert reconcile_stale_jobs() == [] and sent == []
    DenoiseJob.objects.filter(pk=job.pk).update(
        queued_at=timezone.now() - timedelta(hours=1)
    )
    reconcile_stale_jobs()
    assert sent == [job.pk]


def test_pinned_precision_is_the_default_and_part_of_the_job_identity(settings):
    settings.DENOISE_PRECISION = "fp32"
    pinned, pinned_sha = normalise_params(None)
    assert pinned["precision"] == "fp32"
    asked, asked_sha = normalise_params({"precision": "bf16"})
    assert asked["precision"] == "bf16" and asked_sha != pinned_sha
    settings.DENOISE_PRECISION = "auto"
    auto, auto_sha = normalise_params(None)
    assert auto["precision"] == "auto" and auto_sha != pinned_sha


def test_worker_warm_up_loads_the_default_model_before_any_job(models_root):
    inference.clear_cache()
    seconds = warm_worker()
    assert seconds > 0
    # The first job then finds the network built: only the weights hash is redone.
    model = worker_model("tiny", "1.1.0")
    assert model.load_s < seconds


def test_one_output_failing_to_sync_leaves_neither_output_stored(
    alice, series, models_root, monkeypatch
):
    real_prepare = ArrayFile.prepare

    def failing(self):
        if self.name.endswith("residual.npy"):
            raise OSError(errno.EIO, "Input/output error")
        return real_prepare(self)

    monkeypatch.setattr(ArrayFile, "prepare", failing)
    job, _ = denoise_job_request(series=series, requested_by=alice)
    done = denoise_job_run(job_id=job.pk)
    assert done.status == DenoiseJob.Status.FAILED
    recon, residual = output_names(job)
    assert not media_path(recon).exists() and not media_path(residual).exists()
    assert not list(media_path(recon).parent.glob("*.partial"))
