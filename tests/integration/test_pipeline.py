"""Ingest → denoise through real Redis, PostgreSQL and Celery worker processes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from dicomio.synthetic import phantom_volume, write_series
from radiology.audit import audit_verify
from radiology.models import AuditEvent, DenoiseJob
from radiology.services.ingest import upload_ingest
from radiology.services.jobs import denoise_job_request, output_names
from radiology.storage import load_array, media_path, sweep_orphans

from .conftest import REPO, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _series(owner, tmp_path, shape=(24, 96, 96), seed=3):
    folder = tmp_path / f"scan-{seed}"
    folder.mkdir()
    write_series(folder, phantom_volume(shape, seed=seed), spacing_mm=(2.0, 0.7, 0.7))
    report = upload_ingest(sources=[(folder, folder.name)], owner=owner)
    assert len(report.series) == 1, report.rejections
    return report.series[0]


def _job(pk):
    return DenoiseJob.objects.get(pk=pk)


def test_ingest_denoise_succeeds_with_full_provenance(alice, workers, tmp_path):
    series = _series(alice, tmp_path)
    workers.start("w1")
    job, created = denoise_job_request(series=series, requested_by=alice)
    assert created
    job = wait_for(
        lambda: _job(job.pk) if _job(job.pk).is_finished else None, 120, "the job"
    )
    assert job.status == DenoiseJob.Status.SUCCEEDED, (job.error, workers.log("w1"))
    original = load_array(series.volume_file)
    recon = load_array(job.reconstruction_file)
    residual = load_array(job.residual_file)
    assert recon.shape == original.shape
    np.testing.assert_allclose(recon + residual, original, atol=1e-3)
    prov = job.provenance
    assert prov["model"]["name"] and prov["model"]["version"]
    assert prov["model"]["weights_sha256"] == job.weights_sha256
    for key in ("torch", "monai", "numpy", "pydicom"):
        assert prov["code"][key], f"provenance lacks the {key} version"
    assert "git_commit" in prov["code"] and "cuda" in prov["code"]
    assert prov["hardware"]["device"] and prov["hardware"]["host"]
    assert prov["precision"] and prov["parameters"] is not None
    assert len(prov["input_sha256"]) == len(prov["output_sha256"]) == 64
    assert prov["started_at"] and prov["finished_at"]
    assert prov["requested_by"] == "alice"
    assert prov["worker"].startswith("w1@")
    assert prov["reconstruction_file_sha256"] == job.reconstruction_sha256
    assert job.worker.startswith("w1@")
    actions = list(
        AuditEvent.objects.filter(
            target_type="denoisejob", target_id=str(job.pk)
        ).values_list("action", flat=True)
    )
    assert actions == ["job.requested", "job.started", "job.succeeded"]
    assert audit_verify().ok


def test_same_request_twice_gives_one_job(alice, workers, tmp_path):
    series = _series(alice, tmp_path)
    first, created_first = denoise_job_request(series=series, requested_by=alice)
    second, created_second = denoise_job_request(series=series, requested_by=alice)
    assert (created_first, created_second) == (True, False)
    assert first.pk == second.pk
    workers.start("w1")
    wait_for(lambda: _job(first.pk).is_finished, 120, "the job")
    assert DenoiseJob.objects.count() == 1
    assert _job(first.pk).attempts == 1


def test_sigkill_mid_job_then_restart_completes_exactly_once(alice, workers, tmp_path):
    series = _series(alice, tmp_path, shape=(32, 96, 96))
    slow = {
        "DJANGO_SETTINGS_MODULE": "tests.integration.slow_worker_settings",
        "TEST_WORKER_BATCH_DELAY_S": "0.4",
    }
    workers.start("w1", **slow)
    job, _ = denoise_job_request(
        series=series, requested_by=alice, params={"batch_size": 2}
    )
    wait_for(
        lambda: _job(job.pk).status == "running" and _job(job.pk).progress > 0.1,
        120,
        "the job to be part-way",
    )
    workers.kill("w1")
    assert _job(job.pk).status == DenoiseJob.Status.RUNNING
    workers.start("w1")
    done = wait_for(
        lambda: _job(job.pk) if _job(job.pk).is_finished else None, 180, "the job"
    )
    assert done.status == DenoiseJob.Status.SUCCEEDED, (done.error, workers.log("w1"))
    assert done.attempts == 2
    recon_name, residual_name = output_names(done)
    folder = media_path(recon_name).parent
    # The killed attempt's temp files stay until the orphan sweep; never referenced.
    names = [p.name for p in folder.iterdir()]
    partial = [n for n in names if n.endswith(".partial")]
    assert sorted(set(names) - set(partial)) == ["reconstruction.npy", "residual.npy"]
    assert sweep_orphans(max_age_s=0) == len(partial)
    assert sorted(p.name for p in folder.iterdir()) == [
        "reconstruction.npy",
        "residual.npy",
    ]
    assert done.reconstruction_file == recon_name
    events = list(
        AuditEvent.objects.filter(
            target_type="denoisejob", target_id=str(job.pk)
        ).values_list("action", flat=True)
    )
    assert events.count("job.succeeded") == 1
    assert "job.requeued" in events
    assert audit_verify().ok


WRITER = """
import django, os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "radiology.settings")
django.setup()
from radiology.audit import audit_record
for i in range(int(sys.argv[1])):
    audit_record(action="upload", target_type="writer", target_id=sys.argv[2],
                 extra_data={"i": i})
"""


def test_concurrent_audit_writers_keep_one_chain(workers, tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), "150", f"writer-{n}"],
            cwd=REPO,
            env=workers.env,
        )
        for n in range(3)
    ]
    assert [p.wait(timeout=180) for p in procs] == [0, 0, 0]
    result = audit_verify()
    assert result.ok, result
    assert result.count == 450
    hashes = list(AuditEvent.objects.values_list("prev_hash", flat=True))
    assert len(set(hashes)) == len(hashes), (
        "two events share a parent: the chain forked"
    )
