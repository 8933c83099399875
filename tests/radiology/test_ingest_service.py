"""Ingest via the service, the API and the command: storage, idempotence, rejections."""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from dicomio.synthetic import phantom_volume, write_series
from radiology.models import AuditEvent, Instance, Series
from radiology.services.ingest import upload_ingest
from radiology.storage import BatchWriter, load_array, media_path

pytestmark = pytest.mark.django_db


@pytest.fixture
def ct_folder(tmp_path):
    folder = tmp_path / "ct"
    write_series(
        folder,
        phantom_volume((6, 64, 64), seed=2),
        spacing_mm=(2.5, 0.8, 0.8),
        patient_id="P1",
    )
    return folder


def test_folder_becomes_one_series_with_originals_kept_byte_for_byte(alice, ct_folder):
    report = upload_ingest(sources=[(ct_folder, "ct")], owner=alice)
    assert report.rejections == []
    (series,) = report.series
    assert series.shape == [6, 64, 64]
    assert series.spacing_mm == pytest.approx([2.5, 0.8, 0.8])
    assert series.study.owner == alice and series.study.group.name == "neuro"
    originals = {p.read_bytes() for p in ct_folder.iterdir()}
    for instance in series.instances.all():
        stored = media_path(instance.file).read_bytes()
        assert stored in originals
        assert hashlib.sha256(stored).hexdigest() == instance.sha256
        assert "ct" not in instance.file  # generated names, never the uploaded ones


def test_volume_is_in_hounsfield_units(alice, ct_folder):
    (series,) = upload_ingest(sources=[(ct_folder, "ct")], owner=alice).series
    volume = load_array(series.volume_file)
    first = min(
        (pydicom.dcmread(p) for p in ct_folder.iterdir()),
        key=lambda ds: float(ds.ImagePositionPatient[2]),
    )
    expected = first.pixel_array * float(first.RescaleSlope) + float(
        first.RescaleIntercept
    )
    np.testing.assert_allclose(volume[0], expected, atol=1e-3)


def test_reupload_is_idempotent(alice, ct_folder):
    first = upload_ingest(sources=[(ct_folder, "ct")], owner=alice).series[0]
    again = upload_ingest(sources=[(ct_folder, "ct")], owner=alice).series[0]
    assert again.pk == first.pk
    assert again.volume_sha256 == first.volume_sha256
    assert Instance.objects.count() == 6 and Series.objects.count() == 1


def _stored_originals() -> list[str]:
    root = media_path("originals/x").parent
    return sorted(p.name for p in root.rglob("*") if p.is_file())


def test_files_no_row_names_leave_nothing_on_disk(alice, ct_folder, tmp_path):
    """Originals are written while the upload is still being decoded; copies,
    rejected files and instances already stored must not stay behind."""
    upload_ingest(sources=[(ct_folder, "ct")], owner=alice)
    stored = _stored_originals()
    assert len(stored) == 6 and not any(n.endswith(".partial") for n in stored)
    copies = tmp_path / "copies"
    copies.mkdir()
    for path in sorted(ct_folder.iterdir()):
        (copies / f"a-{path.name}").write_bytes(path.read_bytes())
        (copies / f"b-{path.name}").write_bytes(path.read_bytes())
    other = tmp_path / "other"
    study = pydicom.dcmread(sorted(ct_folder.iterdir())[0]).StudyInstanceUID
    write_series(
        other, phantom_volume((2, 64, 64), seed=9), patient_id="P2", study_uid=study
    )
    report = upload_ingest(sources=[(copies, "copies"), (other, "o")], owner=alice)
    assert len(report.rejections) == 2  # another patient inside the stored study
    assert _stored_originals() == stored
    assert (
        sorted(
            os.path.basename(f) for f in Instance.objects.values_list("file", flat=True)
        )
        == stored
    )


def test_a_reupload_writes_nothing(alice, ct_folder, monkeypatch):
    upload_ingest(sources=[(ct_folder, "ct")], owner=alice)
    writes = []
    real_write = BatchWriter.write
    monkeypatch.setattr(
        BatchWriter,
        "write",
        lambda self, name, data, **kw: (
            writes.append(name) or real_write(self, name, data, **kw)
        ),
    )
    upload_ingest(sources=[(ct_folder, "ct")], owner=alice)
    assert writes == []


def test_rows_that_fail_to_record_leave_no_stored_files(alice, ct_folder, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("audit database gone")

    monkeypatch.setattr("radiology.services.ingest._record_upload", broken)
    with pytest.raises(RuntimeError, match="audit database gone"):
        upload_ingest(sources=[(ct_folder, "ct")], owner=alice)
    root = media_path("originals/x").parents[1]
    assert [p for p in root.rglob("*") if p.is_file()] == []
    assert Series.objects.count() == 0 and Instance.objects.count() == 0


def test_missing_slices_uploaded_later_rebuild_the_volume(alice, ct_folder, tmp_path):
    files = sorted(ct_folder.iterdir())
    part = tmp_path / "part"
    part.mkdir()
    for path in files[:3]:
        (part / path.name).write_bytes(path.read_bytes())
    first = upload_ingest(sources=[(part, "part")], owner=alice).series[0]
    assert first.shape[0] == 3
    full = upload_ingest(sources=[(ct_folder, "ct")], owner=alice).series[0]
    assert full.pk == first.pk and full.shape == [6, 64, 64]
    assert full.instances.count() == 6
    assert AuditEvent.objects.filter(action="series.updated").count() == 1


def test_bad_file_is_rejected_and_the_rest_goes_in(alice, ct_folder):
    (ct_folder / "notes.txt").write_text("not dicom at all")
    report = upload_ingest(sources=[(ct_folder, "ct")], owner=alice)
    assert len(report.series) == 1
    (rejection,) = report.rejections
    assert "notes.txt" in rejection["name"] and rejection["reason"]
    assert AuditEvent.objects.filter(action="rejection").count() == 1


def test_several_patients_in_one_upload_become_one_study_each(
    alice, ct_folder, tmp_path
):
    other = tmp_path / "other"
    write_series(other, phantom_volume((2, 64, 64), seed=9), patient_id="P2")
    report = upload_ingest(sources=[(ct_folder, "ct"), (other, "other")], owner=alice)
    assert report.rejections == []
    studies = {s.study.patient_id: s.study for s in report.series}
    assert set(studies) == {"P1", "P2"} and studies["P1"].pk != studies["P2"].pk
    assert all(s.owner == alice for s in studies.values())


def test_one_study_is_one_patient(alice, ct_folder, tmp_path):
    """A file naming another patient inside a study is refused, in one upload or
    against a stored study; the study keeps its patient."""
    intruder = tmp_path / "intruder"
    intruder.mkdir()
    path = sorted(ct_folder.iterdir())[0]
    ds = pydicom.dcmread(path)
    ds.PatientID = "P2"
    ds.SOPInstanceUID = ds.SOPInstanceUID[:-2] + "99"
    ds.save_as(intruder / "x.dcm")
    report = upload_ingest(
        sources=[(ct_folder, "ct"), (intruder / "x.dcm", "x.dcm")], owner=alice
    )
    (series,) = report.series
    (refused,) = report.rejections
    assert (
        refused["name"] == "x.dcm" and "one study is one patient" in refused["reason"]
    )
    assert series.study.patient_id == "P1"
    # Later, against the stored study: refused too, nothing stored changes.
    again = upload_ingest(sources=[(intruder / "x.dcm", "x.dcm")], owner=alice)
    assert again.series == []
    (refused,) = again.rejections
    assert "is stored for PatientID 'P1'" in refused["reason"]
    assert series.instances.count() == 6


def test_api_upload_of_a_zip(client, alice, ct_folder):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in ct_folder.iterdir():
            archive.write(path, f"scan/{path.name}")
    buffer.seek(0)
    buffer.name = "scan.zip"
    client.force_login(alice)
    response = client.post("/api/uploads", {"files": [buffer]})
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["rejected"] == []
    assert body["series"][0]["shape"] == [6, 64, 64]


def test_ingest_command_json_contract(alice, ct_folder, capsys):
    (ct_folder / "junk.bin").write_bytes(b"\x00" * 10)
    call_command("ingest", str(ct_folder), "--owner", "alice", "--json")
    data = json.loads(capsys.readouterr().out)
    (series,) = data["series"]
    assert set(series) >= {
        "id",
        "modality",
        "shape",
        "spacing",
        "instances",
        "series_instance_uid",
    }
    assert series["instances"] == 6 and series["modality"] == "CT"
    assert data["rejected"][0]["name"].endswith("junk.bin")
    assert data["rejected"][0]["reason"]


def test_ingest_command_exits_1_when_nothing_ingested(alice, tmp_path):
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"garbage")
    with pytest.raises(CommandError, match="nothing ingested"):
        call_command("ingest", str(junk), "--owner", "alice")


def test_every_pydicom_test_file_uploads_without_a_server_error(client, alice):
    from pydicom.data import get_testdata_files

    paths = [
        p
        for p in get_testdata_files("*")
        if os.path.isfile(p) and not p.endswith((".py", ".txt"))
    ]
    assert len(paths) > 50
    handles = [open(p, "rb") for p in paths]
    try:
        client.force_login(alice)
        response = client.post("/api/uploads", {"files": handles})
    finally:
        for handle in handles:
            handle.close()
    assert response.status_code == 201, response.content[:500]
    body = response.json()
    names = {r["name"] for r in body["rejected"]}
    assert all(r["reason"] for r in body["rejected"])
    assert len(body["series"]) >= 1
    assert len(names) + sum(s["instances"] for s in body["series"]) <= len(paths)


def test_the_study_keeps_the_patients_name_and_shows_iso_dates(
    client, alice, ct_folder, tmp_path
):
    (series,) = upload_ingest(sources=[(ct_folder, "ct")], owner=alice).series
    study = series.study
    assert study.patient_name == "Synthetic^Phantom" and study.patient_id == "P1"
    assert study.patient_display == "Synthetic, Phantom"
    assert study.study_date_iso == "2000-01-01"
    client.force_login(alice)
    (row,) = client.get("/api/series").json()
    assert row["study"]["patient_name"] == "Synthetic^Phantom"
    assert row["study"]["patient_display"] == "Synthetic, Phantom"
    assert row["study"]["study_date_iso"] == "2000-01-01"
    page = client.get(f"/series/{series.pk}/").content.decode()
    assert "Synthetic, Phantom" in page and "(P1)" in page and "2000-01-01" in page
    assert row["windows"] == []  # the synthetic series carries none
    # Without a name the ID stands in; odd dates are shown as written.
    study.patient_name, study.study_date = "", "2000"
    assert study.patient_display == "P1" and study.study_date_iso == "2000"


def test_scanner_derived_series_are_denoised_and_own_outputs_are_not(
    client, alice, ct_folder, tmp_path
):
    """An MPR from the scanner (ImageType DERIVED) may be denoised, and says it is
    processed already; only this app's own outputs are refused."""
    from importlib import import_module

    from django.apps import apps

    from radiology.services.jobs import denoise_job_request, not_denoised_reason

    mpr = tmp_path / "mpr"
    mpr.mkdir()
    for path in sorted(ct_folder.iterdir()):
        ds = pydicom.dcmread(path)
        ds.ImageType = ["DERIVED", "SECONDARY", "MPR"]
        ds.SeriesInstanceUID = "1.2.826.0.1.3680043.10.1.9"
        ds.save_as(mpr / path.name)
    report = upload_ingest(sources=[(mpr, "mpr")], owner=alice)
    assert report.rejections == []
    (series,) = report.series
    assert series.scanner_derived and not series.derived
    assert not_denoised_reason(series) is None
    client.force_login(alice)
    page = client.get(f"/series/{series.pk}/").content.decode()
    assert "it can be denoised, but it is processed already" in page
    assert 'id="denoise-form"' in page
    # A series stored before this distinction was "derived" (refused); the migration
    # re-reads one instance and frees it.
    Series.objects.filter(pk=series.pk).update(derived=True, scanner_derived=False)
    migration = import_module("radiology.migrations.0008_series_scanner_derived")
    migration.split_derived(apps, None)
    series.refresh_from_db()
    assert series.scanner_derived and not series.derived
    # Refused only for this app's own outputs (test_export's round trip).
    job, created = denoise_job_request(series=series, requested_by=alice)
    assert created and job.series_id == series.pk


def test_a_lossless_transcode_of_a_stored_image_is_a_duplicate_not_a_conflict(
    alice, tmp_path
):
    """pydicom-data's 693 head: the same instance uncompressed and as JPEG 2000
    lossless. After one is stored the other is reported as a duplicate of it; a
    file with the same UID but other pixels is still a conflict."""
    from training.data import bundled_dicom_files

    files = bundled_dicom_files()
    for name in ("693_UNCR.dcm", "693_J2KR.dcm"):
        if name not in files:
            pytest.fail(f"pydicom-data's {name} is missing (pip install pydicom-data)")
    first = upload_ingest(
        sources=[(files["693_UNCR.dcm"], "693_UNCR.dcm")], owner=alice
    )
    (series,) = first.series
    again = upload_ingest(
        sources=[(files["693_J2KR.dcm"], "693_J2KR.dcm")], owner=alice
    )
    (report,) = again.rejections
    assert report["duplicate"] is True and report["name"] == "693_J2KR.dcm"
    assert report["reason"].startswith(
        "duplicate of stored 693_UNCR.dcm: the same image"
    )
    assert "JPEG 2000" in report["reason"]
    assert series.instances.count() == 1  # kept once, the stored file untouched
    # Both in one upload: the second is a duplicate of the first.
    both = upload_ingest(
        sources=[
            (files["693_UNCR.dcm"], "a/693_UNCR.dcm"),
            (files["693_J2KR.dcm"], "a/693_J2KR.dcm"),
        ],
        owner=alice,
    )
    assert [r.get("duplicate") for r in both.rejections] == [True]
    # Other pixels under the same UID stay a conflict.
    ds = pydicom.dcmread(files["693_UNCR.dcm"])
    pixels = ds.pixel_array.copy()
    pixels[0, 0] += 1
    ds.PixelData = pixels.tobytes()
    changed = tmp_path / "changed.dcm"
    ds.save_as(changed)
    (conflict,) = upload_ingest(
        sources=[(changed, "changed.dcm")], owner=alice
    ).rejections
    assert "duplicate" not in conflict
    assert "already stored with different content" in conflict["reason"]


def test_a_report_never_names_a_file_that_was_itself_rejected():
    from radiology.services.ingest import _unname_rejected

    rejections = [
        {"name": "a.dcm", "reason": "invalid UID: SOPInstanceUID is empty"},
        {"name": "5", "reason": "not a DICOM file"},
        {
            "name": "c.dcm",
            "reason": "duplicate of a.dcm: the same image (...); kept once",
            "duplicate": True,
        },
        {
            "name": "d.dcm",
            "reason": "duplicate of kept.dcm: the same image; kept once",
            "duplicate": True,
        },
        {
            "name": "e.dcm",
            "reason": "duplicate SOPInstanceUID 1.2 with different content "
            "(first seen in a.dcm)",
        },
        {
            "name": "f.dcm",
            "reason": "slice at position (0, 0, 5) duplicates g.dcm "
            "(SOPInstanceUID 1.3)",
        },
    ]
    _unname_rejected(rejections)
    # A duplicate of a refused file is a rejection too: nothing of it is stored.
    assert "duplicate" not in rejections[2] and "a.dcm" not in rejections[2]["reason"]
    assert "not stored either" in rejections[2]["reason"]
    assert rejections[3]["duplicate"] is True  # kept.dcm was stored
    assert rejections[4]["reason"].endswith(
        "(first seen in another file of this upload (itself rejected, see there))"
    )
    # Only the slot that names a file is looked at: "5" in a position stays.
    assert rejections[5]["reason"].startswith(
        "slice at position (0, 0, 5) duplicates g"
    )


def test_hex_uids_a_scanner_wrote_are_stored_with_a_warning(alice, tmp_path):
    """pydicom's bad_sequence.dcm (JPEG Lossless CT) carries 64-character hex UIDs:
    stored and served as written, as Orthanc does, with a warning."""
    from pydicom.data import get_testdata_file

    source = Path(get_testdata_file("bad_sequence.dcm"))
    report = upload_ingest(sources=[(source, source.name)], owner=alice)
    assert report.rejections == []
    (series,) = report.series
    original = pydicom.dcmread(source, stop_before_pixels=True)
    assert series.series_instance_uid == original.SeriesInstanceUID
    assert any("not DICOM-conformant" in w for w in series.warnings)
    client = Client()
    client.force_login(alice)
    url = (
        f"/dicomweb/studies/{original.StudyInstanceUID}/series/"
        f"{original.SeriesInstanceUID}/metadata"
    )
    response = client.get(url)
    assert response.status_code == 200
    assert response.json()[0]["00080018"]["Value"] == [original.SOPInstanceUID]
