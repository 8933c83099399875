"""Fixity: a flipped byte in a stored file is detected, audited, shown by the API."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command

from dicomio.synthetic import phantom_volume, write_series
from radiology.models import AuditEvent, FixityIssue
from radiology.services.fixity import fixity_check
from radiology.services.ingest import upload_ingest
from radiology.storage import media_path

pytestmark = pytest.mark.django_db


@pytest.fixture
def series(alice, tmp_path):
    write_series(tmp_path / "s", phantom_volume((3, 32, 32), seed=4), patient_id="F")
    return upload_ingest(sources=[(tmp_path / "s", "s")], owner=alice).series[0]


def _flip_byte(name, offset=-5):
    path = media_path(name)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_intact_storage_passes(series):
    report = fixity_check()
    assert report.ok and report.checked == 1 + 3


def test_flipped_byte_in_an_original_is_detected_once(series, capsys):
    original = series.instances.first()
    _flip_byte(original.file)
    report = fixity_check()
    assert [i.file for i in report.issues] == [original.file]
    assert report.issues[0].role == "original"
    fixity_check()
    assert FixityIssue.objects.count() == 1
    assert AuditEvent.objects.filter(action="fixity").count() == 1
    with pytest.raises(SystemExit):
        call_command("fixity", "--json")
    out = json.loads(capsys.readouterr().out)
    assert out["issues"][0]["file"] == original.file


def test_missing_volume_is_reported_and_shown_in_the_api(client, alice, series):
    media_path(series.volume_file).unlink()
    fixity_check()
    client.force_login(alice)
    fixity = client.get(f"/api/series/{series.pk}").json()["fixity"]
    assert fixity["ok"] is False
    assert fixity["issues"][0]["role"] == "volume" and fixity["issues"][0]["missing"]


def test_restored_file_resolves_the_issue(series):
    original = series.instances.first()
    _flip_byte(original.file)
    fixity_check()
    _flip_byte(original.file)
    assert fixity_check().ok
    assert FixityIssue.objects.get().resolved_at is not None


def test_flipped_byte_is_shown_on_the_series_and_viewer_pages(client, alice, series):
    _flip_byte(series.instances.first().file)
    client.force_login(alice)
    assert "fixity-alert" not in client.get(f"/series/{series.pk}/").content.decode()
    fixity_check()
    page = client.get(f"/series/{series.pk}/").content.decode()
    assert 'id="fixity-alert"' in page and "content changed" in page
