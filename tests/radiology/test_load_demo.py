"""``load_demo``: the demo reviewer, a sample scan queued for denoising, idempotent."""

from __future__ import annotations

import pytest
from django.contrib.auth import authenticate
from django.core.management import call_command

from radiology.models import DenoiseJob, Series

pytestmark = pytest.mark.django_db


def test_demo_reviewer_and_scan_are_created_once(capsys):
    for _ in range(2):
        call_command("load_demo", "--slices", "16", "--size", "64")
    assert authenticate(username="demo", password="demo-review-2026") is not None
    (series,) = Series.objects.all()
    assert series.shape == [16, 64, 64] and series.modality == "CT"
    assert DenoiseJob.objects.filter(series=series).count() == 1
    assert "demo-review-2026" in capsys.readouterr().out
