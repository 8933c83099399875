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


def test_the_demo_reviewer_is_not_staff_even_where_it_once_was(django_user_model):
    """Its password is printed in the README: it must not read other users' audit
    events or use the admin. Earlier set-ups made it staff; load_demo demotes it."""
    old = django_user_model.objects.create_user("demo", password="x", is_staff=True)
    old.is_superuser = True
    old.save()
    call_command("load_demo", "--slices", "16", "--size", "32")
    demo = django_user_model.objects.get(username="demo")
    assert not demo.is_staff and not demo.is_superuser


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("short1", "too short"),
        ("password123", "too common"),
        ("83920174652", "entirely numeric"),
        ("carol-smith-9", "too similar"),
    ],
)
def test_createreviewer_applies_the_password_validators(
    monkeypatch, django_user_model, password, message
):
    import io

    from django.core.management import CommandError

    monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
    with pytest.raises(CommandError, match=message):
        call_command("createreviewer", "carol-smith", "--password-stdin")
    assert not django_user_model.objects.filter(username="carol-smith").exists()
    monkeypatch.setattr("sys.stdin", io.StringIO("Vq8#long-unusual-phrase\n"))
    call_command("createreviewer", "carol-smith", "--password-stdin")
    assert not django_user_model.objects.get(username="carol-smith").is_staff


def test_the_demo_scan_is_made_without_the_training_package():
    """The demo's phantom and noise come from the pure DICOM core, not training."""
    import subprocess
    import sys

    code = (
        "import sys, django; django.setup();"
        "import radiology.management.commands.load_demo;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'training');"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
