"""A short, bounded load on loopback: concurrent uploads and denoise requests."""

from __future__ import annotations

import hashlib
import json
import secrets

import pytest
from django.db.models import Count

import inference
from bench.load import WebServer, run_load
from radiology.audit import audit_verify
from radiology.models import ApiToken, AuditEvent, DenoiseJob, Series
from tests.inference.inference_fixtures import REDCNN, identity_weights, metadata

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def tiny_models(workers, settings, tmp_path):
    root = tmp_path / "models"
    inference.write_bundle(
        root / "tiny" / "1.0.0",
        metadata=metadata("tiny", "1.0.0"),
        state_dict=identity_weights(REDCNN),
    )
    (root / "DEFAULT").write_text("tiny\n")
    settings.MODELS_ROOT = root
    workers.env["MODELS_ROOT"] = str(root)
    inference.clear_cache()
    return root


def test_concurrent_uploads_and_requests_lose_and_duplicate_nothing(
    alice, workers, tiny_models, tmp_path
):
    token = secrets.token_urlsafe(24)
    ApiToken.objects.create(
        user=alice, key_sha256=hashlib.sha256(token.encode()).hexdigest()
    )
    workers.start("w1")
    workers.start("w2")
    with WebServer(workers.env, tmp_path / "web.log") as web:
        report = run_load(web.url, token, clients=4, seconds=45, max_uploads=12)
    print(json.dumps({k: v for k, v in report.items() if not k.endswith("_ids")}))
    assert report["uploads"] == 12, report["statuses"]
    assert all(key.endswith(("200", "201")) for key in report["statuses"]), report
    assert sorted(Series.objects.values_list("pk", flat=True)) == report["series_ids"]
    jobs = DenoiseJob.objects.all()
    assert sorted(jobs.values_list("pk", flat=True)) == report["job_ids"]
    assert report["second_request_returned_same_job"]
    assert not jobs.values("series").annotate(n=Count("id")).filter(n__gt=1).exists()
    assert report["jobs_unfinished"] == 0
    assert set(jobs.values_list("status", flat=True)) == {"succeeded"}
    succeeded = AuditEvent.objects.filter(action="job.succeeded")
    assert (
        sorted(int(t) for t in succeeded.values_list("target_id", flat=True))
        == (report["job_ids"])
    )
    assert {w.split("@")[0] for w in jobs.values_list("worker", flat=True)} <= {
        "w1",
        "w2",
    }
    logs = (tmp_path / "web.log").read_text() + workers.log("w1") + workers.log("w2")
    assert "database is locked" not in logs
    assert " 500 " not in (tmp_path / "web.log").read_text()
    assert audit_verify().ok
