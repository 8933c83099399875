"""Short Hypothesis fuzz of the upload entry point: only our rejections escape."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.fuzz import check_upload, uploads

pytestmark = pytest.mark.django_db

REPO = Path(__file__).resolve().parents[2]

_FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@settings(_FUZZ, max_examples=80)
@given(files=uploads())
def test_upload_ingest_only_ever_rejects(files, alice, tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_upload(files, alice, tmp_path_factory.mktemp("fuzz"))


@settings(_FUZZ, max_examples=20)
@given(files=uploads(), name=st.text(max_size=30))
def test_upload_api_never_answers_500(files, name, client, alice):
    handles = []
    for index, (_, data) in enumerate(files):
        handle = io.BytesIO(data)
        handle.name = f"{name}{index}"
        handles.append(handle)
    client.force_login(alice)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        response = client.post("/api/uploads", {"files": handles})
    assert response.status_code in (201, 400), response.content[:500]
    body = response.json()
    if response.status_code == 201:
        assert all(r["name"] and r["reason"] for r in body["rejected"])


def test_long_run_script_reports_the_inputs_tried():
    done = subprocess.run(
        [sys.executable, "-m", "bench", "fuzz", "--seconds", "2", "--batch", "5"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["inputs_tried"] > 0 and report["failures"] == []
