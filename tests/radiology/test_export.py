"""Derived DICOM export: identity, provenance, dicom3tools, round trip, audit."""

from __future__ import annotations

import io
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from dicomio.derived import UID_ROOT, device_uid
from dicomio.synthetic import phantom_volume, write_series
from radiology.audit import audit_verify
from radiology.models import AuditEvent, DenoiseJob
from radiology.services.export import ExportError, series_export
from radiology.services.ingest import upload_ingest
from radiology.services.jobs import (
    JobRequestError,
    denoise_job_request,
    denoise_job_run,
)
from radiology.storage import load_array
from tests.conftest import install_tiny_models, require

pytestmark = pytest.mark.django_db

SHAPE = (4, 40, 40)


@pytest.fixture
def models_root(settings, tmp_path):
    return install_tiny_models(settings, tmp_path / "models")


@pytest.fixture
def source_dir(tmp_path):
    volume = phantom_volume(SHAPE, seed=3)
    write_series(
        tmp_path / "source",
        volume,
        spacing_mm=(2.5, 0.8, 0.8),
        origin=(-16.0, -16.0, 40.0),
        patient_id="PAT-0042",
    )
    return tmp_path / "source"


@pytest.fixture
def job(alice, source_dir, models_root):
    series = upload_ingest(sources=[(source_dir, "source")], owner=alice).series[0]
    requested, _ = denoise_job_request(series=series, requested_by=alice)
    done = denoise_job_run(job_id=requested.pk, worker="test@host")
    assert done.status == DenoiseJob.Status.SUCCEEDED, done.error
    return done


def read_folder(folder: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]


def uids_in(ds: pydicom.Dataset) -> set[str]:
    found: set[str] = set()

    def visit(dataset, element):
        if element.VR == "UI" and element.value:
            values = (
                element.value if isinstance(element.value, list) else [element.value]
            )
            found.update(str(v) for v in values)

    ds.walk(visit)
    return found


def test_derived_series_keeps_geometry_and_gets_new_identity(job, alice, tmp_path):
    result = series_export(job=job, actor=alice, out_dir=tmp_path / "out")
    sources = [pydicom.dcmread(p) for p in sorted((tmp_path / "source").glob("*.dcm"))]
    derived = read_folder(tmp_path / "out" / "denoised")
    assert len(derived) == len(sources) == SHAPE[0]
    assert result.series[0].series_instance_uid == derived[0].SeriesInstanceUID
    assert derived[0].SeriesInstanceUID != sources[0].SeriesInstanceUID
    assert derived[0].SeriesInstanceUID.startswith(UID_ROOT)
    for src, ds in zip(sources, derived, strict=True):
        assert ds.SOPInstanceUID.startswith(UID_ROOT)
        assert ds.SOPInstanceUID != src.SOPInstanceUID
        assert ds.StudyInstanceUID == src.StudyInstanceUID
        assert ds.FrameOfReferenceUID == src.FrameOfReferenceUID
        assert ds.ImagePositionPatient == src.ImagePositionPatient
        assert ds.ImageOrientationPatient == src.ImageOrientationPatient
        assert ds.PixelSpacing == src.PixelSpacing
        assert list(ds.ImageType[:2]) == ["DERIVED", "SECONDARY"]
        assert ds.BurnedInAnnotation == "NO"
        reference = ds.SourceImageSequence[0]
        assert reference.ReferencedSOPInstanceUID == src.SOPInstanceUID
        assert reference.ReferencedSOPClassUID == src.SOPClassUID
        assert ds.DerivationCodeSequence[0].CodingSchemeDesignator == "DCM"
        assert "tiny 1.0.0" in ds.DerivationDescription
    first = derived[0]
    assert "tiny" in first.SeriesDescription and "1.0.0" in first.SeriesDescription
    assert first.pixel_array.dtype == np.int16 and first.PixelRepresentation == 1
    assert first.RescaleType == "HU" and float(first.RescaleSlope) == 1.0


def test_contributing_equipment_names_the_model_version(job, alice, tmp_path):
    series_export(job=job, actor=alice, out_dir=tmp_path / "out")
    item = read_folder(tmp_path / "out" / "denoised")[0].ContributingEquipmentSequence[
        -1
    ]
    assert item.PurposeOfReferenceCodeSequence[0].CodeValue == "109102"
    assert item.ManufacturerModelName == "tiny"
    assert item.SoftwareVersions[0] == "1.0.0"
    assert item.DeviceUID == device_uid(job.weights_sha256)


def test_device_uid_is_stable_per_weights_and_changes_with_them():
    assert device_uid("a" * 64) == device_uid("a" * 64)
    assert device_uid("a" * 64) != device_uid("b" * 64)
    assert device_uid("a" * 64).startswith(UID_ROOT)


def dicom3tools_errors(files: list[Path]) -> list[str]:
    require(
        shutil.which("dciodvfy") is not None and shutil.which("dcentvfy") is not None,
        "dicom3tools (dciodvfy, dcentvfy) not installed: apt-get install dicom3tools",
    )
    problems = []
    for path in files:
        run = subprocess.run(
            ["dciodvfy", str(path)], capture_output=True, text=True, timeout=60
        )
        problems += [
            f"{path.name}: {line}"
            for line in (run.stdout + run.stderr).splitlines()
            if line.startswith("Error")
        ]
    run = subprocess.run(
        ["dcentvfy", *map(str, files)], capture_output=True, text=True, timeout=60
    )
    problems += [
        f"dcentvfy: {line}"
        for line in (run.stdout + run.stderr).splitlines()
        if line.startswith(("Error", "Warning"))
    ]
    return problems


def test_dicom3tools_find_no_errors_in_denoised_and_residual(job, alice, tmp_path):
    result = series_export(
        job=job, actor=alice, out_dir=tmp_path / "out", include_residual=True
    )
    assert [s.kind for s in result.series] == ["denoised", "residual"]
    for exported in result.series:
        assert dicom3tools_errors(exported.files) == []


def test_round_trip_ingests_as_derived_within_half_hu(job, alice, tmp_path):
    series_export(job=job, actor=alice, out_dir=tmp_path / "out")
    report = upload_ingest(sources=[(tmp_path / "out", "out")], owner=alice)
    assert report.rejections == []
    (back,) = report.series
    assert back.derived
    assert back.spacing_mm == pytest.approx(job.series.spacing_mm)
    assert back.origin_mm == pytest.approx(job.series.origin_mm)
    np.testing.assert_allclose(
        load_array(back.volume_file), load_array(job.reconstruction_file), atol=0.5
    )
    with pytest.raises(JobRequestError, match="derived"):
        denoise_job_request(series=back, requested_by=alice)


def test_residual_series_round_trips_too(job, alice, tmp_path):
    series_export(job=job, actor=alice, out_dir=tmp_path / "out", include_residual=True)
    residual = read_folder(tmp_path / "out" / "residual")
    denoised = read_folder(tmp_path / "out" / "denoised")
    assert residual[0].SeriesInstanceUID != denoised[0].SeriesInstanceUID
    assert residual[0].SourceImageSequence[1].ReferencedSOPInstanceUID == (
        denoised[0].SOPInstanceUID
    )
    values = np.stack([ds.pixel_array * float(ds.RescaleSlope) for ds in residual])
    values += float(residual[0].RescaleIntercept)
    np.testing.assert_allclose(values, load_array(job.residual_file), atol=0.5)


def test_reexport_is_stable_and_never_overwrites(job, alice, tmp_path):
    first = series_export(job=job, actor=alice, out_dir=tmp_path / "a")
    with pytest.raises(ExportError, match="already exists"):
        series_export(job=job, actor=alice, out_dir=tmp_path / "a")
    again = series_export(job=job, actor=alice, out_dir=tmp_path / "b")
    assert first.series[0].series_instance_uid == again.series[0].series_instance_uid
    assert first.manifest_sha256 == again.manifest_sha256


def test_export_is_audited(job, alice, tmp_path):
    result = series_export(job=job, actor=alice, out_dir=tmp_path / "out")
    event = AuditEvent.objects.filter(action=AuditEvent.Action.EXPORT).get()
    assert event.actor_name == "alice" and event.target_id == str(job.pk)
    assert event.extra_data["manifest_sha256"] == result.manifest_sha256
    assert event.extra_data["exported"]["denoised"]["instances"] == SHAPE[0]
    assert event.extra_data["deidentified"] is False
    assert audit_verify().ok


def test_deidentified_export_replaces_identity_with_one_uid_mapping(
    job, alice, tmp_path
):
    series_export(
        job=job,
        actor=alice,
        out_dir=tmp_path / "out",
        include_residual=True,
        deidentify=True,
    )
    sources = [pydicom.dcmread(p) for p in sorted((tmp_path / "source").glob("*.dcm"))]
    source_uids = set().union(*(uids_in(s) for s in sources)) - {sources[0].SOPClassUID}
    denoised = read_folder(tmp_path / "out" / "denoised")
    residual = read_folder(tmp_path / "out" / "residual")
    for ds in denoised + residual:
        assert ds.PatientID != "PAT-0042"
        assert str(ds.PatientName) != "Synthetic^Phantom"
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
        assert not uids_in(ds) & source_uids
        assert ds.SOPInstanceUID.startswith(UID_ROOT)
    assert {ds.StudyInstanceUID for ds in denoised + residual} == {
        denoised[0].StudyInstanceUID
    }
    assert {ds.FrameOfReferenceUID for ds in denoised + residual} == {
        denoised[0].FrameOfReferenceUID
    }
    # The residual still points at the (renamed) denoised instance it came from.
    assert residual[0].SourceImageSequence[1].ReferencedSOPInstanceUID == (
        denoised[0].SOPInstanceUID
    )
    event = AuditEvent.objects.filter(action=AuditEvent.Action.EXPORT).get()
    assert event.extra_data["deidentified"] is True
    assert "Basic" in event.extra_data["deidentification_method"]
    assert dicom3tools_errors([tmp_path / "out" / "denoised" / "IM00001.dcm"]) == []


def test_unfinished_job_is_refused(job, alice, tmp_path):
    DenoiseJob.objects.filter(pk=job.pk).update(status=DenoiseJob.Status.RUNNING)
    job.refresh_from_db()
    with pytest.raises(ExportError, match="only a succeeded job"):
        series_export(job=job, actor=alice, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_command_writes_the_latest_succeeded_job(job, tmp_path, capsys):
    call_command("export", str(job.series_id), "--out", str(tmp_path / "cli"))
    assert len(list((tmp_path / "cli" / "denoised").glob("*.dcm"))) == SHAPE[0]
    assert "denoised: 4 instances" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["999999"], "no series 999999"),
        (["{series}", "--job", "999999"], "not a succeeded job"),
    ],
)
def test_export_command_refuses_bad_input(job, tmp_path, args, message):
    args = [a.format(series=job.series_id) for a in args]
    with pytest.raises(CommandError, match=message):
        call_command("export", *args, "--out", str(tmp_path / "cli"))


def test_export_command_needs_a_succeeded_job(alice, source_dir, tmp_path):
    series = upload_ingest(sources=[(source_dir, "s")], owner=alice).series[0]
    with pytest.raises(CommandError, match="no succeeded denoise job"):
        call_command("export", str(series.pk), "--out", str(tmp_path / "cli"))


def test_zip_download_holds_both_series_and_hides_other_users_jobs(job, bob):
    client = Client()
    client.force_login(job.series.study.owner)
    response = client.get(f"/api/jobs/{job.pk}/export.zip?residual=true")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))).namelist()
    assert sorted(names) == [f"denoised/IM0000{i}.dcm" for i in range(1, 5)] + [
        f"residual/IM0000{i}.dcm" for i in range(1, 5)
    ]
    other = Client()
    other.force_login(bob)
    assert other.get(f"/api/jobs/{job.pk}/export.zip").status_code == 404
