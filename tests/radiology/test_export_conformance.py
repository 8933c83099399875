"""Exports satisfy the CT and MR Image IODs whatever the source lacks (dciodvfy and
dcentvfy find no errors): complete, sparse and enhanced multi-frame sources."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from dicomio.derived import MANUFACTURER
from dicomio.synthetic import phantom_volume, write_series
from radiology.models import DenoiseJob
from radiology.services.export import ExportError, series_export
from radiology.services.ingest import upload_ingest
from radiology.services.jobs import denoise_job_request, denoise_job_run
from tests.conftest import install_tiny_models

from .test_export import dicom3tools_errors, read_folder

pytestmark = pytest.mark.django_db

SPARSE_REMOVED = (
    "PatientBirthDate",
    "PatientSex",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "PositionReferenceIndicator",
    "Manufacturer",
    "KVP",
    "AcquisitionNumber",
    "SliceThickness",
    "MRAcquisitionType",
    "ScanOptions",
    "EchoTime",
    "EchoTrainLength",
    "RepetitionTime",
)


@pytest.fixture(autouse=True)
def models_root(settings, tmp_path):
    return install_tiny_models(settings, tmp_path / "models")


def _rewrite(folder: Path, change: Callable[[pydicom.Dataset], None]) -> None:
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        change(ds)
        ds.save_as(path, enforce_file_format=True)


def _sparse(ds: pydicom.Dataset) -> None:
    for keyword in SPARSE_REMOVED:
        if keyword in ds:
            del ds[keyword]
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    # A source that says its identity was removed, but not how (Type 1C).
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = ""


def _job(owner, folder: Path, modality: str) -> DenoiseJob:
    series = upload_ingest(sources=[(folder, "source")], owner=owner).series[0]
    params = {"allow_modality_mismatch": True} if modality == "MR" else None
    requested, _ = denoise_job_request(series=series, requested_by=owner, params=params)
    done = denoise_job_run(job_id=requested.pk, worker="test@host")
    assert done.status == DenoiseJob.Status.SUCCEEDED, done.error
    return done


def _source(tmp_path, modality: str, *, multiframe: bool = False) -> Path:
    volume = phantom_volume((4, 32, 32), seed=5)
    if modality == "MR":
        volume = volume + 1024.0
    folder = tmp_path / f"{modality}-{'mf' if multiframe else 'sf'}"
    write_series(
        folder,
        volume,
        spacing_mm=(3.0, 0.9, 0.9),
        origin=(-14.0, -14.0, 20.0),
        modality=modality,
        multiframe=multiframe,
    )
    return folder


@pytest.mark.parametrize("modality", ["CT", "MR"])
@pytest.mark.parametrize("form", ["complete", "sparse"])
def test_export_of_classic_sources_has_no_dciodvfy_errors(
    alice, tmp_path, modality, form
):
    folder = _source(tmp_path, modality)
    if form == "sparse":
        _rewrite(folder, _sparse)
    job = _job(alice, folder, modality)
    result = series_export(
        job=job, actor=alice, out_dir=tmp_path / "out", include_residual=True
    )
    for exported in result.series:
        assert dicom3tools_errors(exported.files) == [], exported.kind
    first = read_folder(tmp_path / "out" / "denoised")[0]
    for keyword in SPARSE_REMOVED[:7]:
        assert keyword in first, keyword
    if modality == "CT":
        assert list(first.ImageType) == ["DERIVED", "SECONDARY", "AXIAL"]
        assert "KVP" in first and "AcquisitionNumber" in first
    if form == "sparse":
        assert first.DeidentificationMethod.startswith("removed before import")


def test_general_equipment_names_this_app_and_keeps_the_scanner(alice, tmp_path):
    folder = _source(tmp_path, "CT")

    def scanner(ds):
        ds.Manufacturer = "ACME Medical"
        ds.ManufacturerModelName = "Scanner 9"
        ds.StationName = "CT-ROOM-2"

    _rewrite(folder, scanner)
    series_export(job=_job(alice, folder, "CT"), actor=alice, out_dir=tmp_path / "o")
    first = read_folder(tmp_path / "o" / "denoised")[0]
    assert first.Manufacturer == MANUFACTURER
    assert first.ManufacturerModelName == "tiny"
    assert "StationName" not in first
    acquisition, processing = first.ContributingEquipmentSequence
    assert acquisition.PurposeOfReferenceCodeSequence[0].CodeValue == "109101"
    assert acquisition.Manufacturer == "ACME Medical"
    assert acquisition.ManufacturerModelName == "Scanner 9"
    assert acquisition.StationName == "CT-ROOM-2"
    assert processing.PurposeOfReferenceCodeSequence[0].CodeValue == "109102"


def test_enhanced_ct_exports_one_classic_image_per_frame(alice, tmp_path):
    folder = _source(tmp_path, "CT", multiframe=True)
    (source_file,) = folder.iterdir()
    source = pydicom.dcmread(source_file, stop_before_pixels=True)
    job = _job(alice, folder, "CT")
    result = series_export(
        job=job, actor=alice, out_dir=tmp_path / "out", include_residual=True
    )
    for exported in result.series:
        assert len(exported.files) == 4
        assert dicom3tools_errors(exported.files) == [], exported.kind
    out = read_folder(tmp_path / "out" / "denoised")
    assert {ds.SOPClassUID for ds in out} == {"1.2.840.10008.5.1.4.1.1.2"}
    frames = source.PerFrameFunctionalGroupsSequence
    by_frame = {int(ds.SourceImageSequence[0].ReferencedFrameNumber): ds for ds in out}
    assert sorted(by_frame) == [1, 2, 3, 4]
    for number, ds in by_frame.items():
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == (
            source.SOPInstanceUID
        )
        expected = frames[number - 1].PlanePositionSequence[0].ImagePositionPatient
        np.testing.assert_allclose(
            [float(v) for v in ds.ImagePositionPatient], [float(v) for v in expected]
        )
    # Exported back in, it is the same volume, as a derived series.
    back = upload_ingest(sources=[(tmp_path / "out", "out")], owner=alice).series
    denoised = next(s for s in back if "Denoised" in s.description)
    assert denoised.derived and denoised.shape == job.series.shape
    assert denoised.origin_mm == pytest.approx(job.series.origin_mm)


def test_enhanced_mr_without_echo_pulse_sequence_is_refused_by_name(alice, tmp_path):
    folder = _source(tmp_path, "MR", multiframe=True)
    job = _job(alice, folder, "MR")
    with pytest.raises(ExportError, match=r"Echo Pulse Sequence \(0018,9008\)"):
        series_export(job=job, actor=alice, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_enhanced_mr_with_its_pulse_sequence_exports_clean(alice, tmp_path):
    folder = _source(tmp_path, "MR", multiframe=True)

    def gradient_echo(ds):
        ds.EchoPulseSequence = "GRADIENT"

    _rewrite(folder, gradient_echo)
    job = _job(alice, folder, "MR")
    result = series_export(job=job, actor=alice, out_dir=tmp_path / "out")
    assert dicom3tools_errors(result.series[0].files) == []
    first = read_folder(tmp_path / "out" / "denoised")[0]
    assert first.ScanningSequence == "GR" and first.SequenceVariant == "NONE"


def test_classic_mr_without_scanning_sequence_is_refused_by_name(alice, tmp_path):
    folder = _source(tmp_path, "MR")

    def drop(ds):
        del ds.ScanningSequence

    _rewrite(folder, drop)
    job = _job(alice, folder, "MR")
    with pytest.raises(ExportError, match="has no ScanningSequence.*Type 1"):
        series_export(job=job, actor=alice, out_dir=tmp_path / "out")


def test_real_enhanced_ct_from_pydicom_exports_clean(alice, tmp_path):
    """eCT_Supplemental.dcm: a vendor's Enhanced CT that nobody here wrote."""
    folder = tmp_path / "ect"
    folder.mkdir()
    (folder / "ect.dcm").write_bytes(
        Path(get_testdata_file("eCT_Supplemental.dcm")).read_bytes()
    )
    job = _job(alice, folder, "CT")
    result = series_export(
        job=job, actor=alice, out_dir=tmp_path / "out", include_residual=True
    )
    for exported in result.series:
        assert dicom3tools_errors(exported.files) == [], exported.kind


def test_multi_frame_instance_stored_before_frame_order_exports_the_same(
    alice, tmp_path
):
    folder = _source(tmp_path, "CT", multiframe=True)
    job = _job(alice, folder, "CT")
    recorded = series_export(job=job, actor=alice, out_dir=tmp_path / "a")
    job.series.instances.update(frame_slices=None)
    guessed = series_export(job=job, actor=alice, out_dir=tmp_path / "b")
    assert guessed.manifest_sha256 == recorded.manifest_sha256


def _geometry_source(tmp_path, case: str) -> Path:
    """Eight axial CT slices 3 mm apart, then repositioned as ``case`` has them."""
    folder = tmp_path / case
    write_series(
        folder, phantom_volume((8, 24, 24), seed=9), spacing_mm=(3.0, 1.0, 1.0)
    )
    depth = {
        "uneven": [0, 4, 11, 15, 19, 23, 27, 31],
        "missing-slice": [0, 3, 6, 12, 15, 18, 21, 24],
    }.get(case, [3.0 * k for k in range(8)])

    def place(ds):
        k = int(ds.InstanceNumber) - 1
        z = float(depth[k])
        if case.startswith("tilt"):
            degrees = 18.0 if case == "tilt+18" else -18.0
            ds.GantryDetectorTilt = degrees
            ds.ImagePositionPatient = [0.0, z * np.tan(np.radians(degrees)), z]
        elif case == "flipped":
            ds.ImageOrientationPatient = [-1, 0, 0, 0, -1, 0]
            ds.ImagePositionPatient = [23.0, 23.0, -z]
        else:
            ds.ImagePositionPatient = [0.0, 0.0, z]

    _rewrite(folder, place)
    return folder


@pytest.mark.parametrize(
    ("case", "warning", "reformats"),
    [
        ("tilt+18", "gantry tilt: the slices step 18.0 degrees", False),
        ("tilt-18", "gantry tilt: the slices step 18.0 degrees", False),
        ("uneven", "uneven slice spacing", False),
        ("missing-slice", "missing slices", False),
        ("flipped", None, True),
    ],
)
def test_real_world_geometry_is_reported_kept_and_exported_clean(
    alice, tmp_path, case, warning, reformats
):
    folder = _geometry_source(tmp_path, case)
    sources = {
        ds.SOPInstanceUID: [float(v) for v in ds.ImagePositionPatient]
        for ds in (pydicom.dcmread(p) for p in folder.iterdir())
    }
    job = _job(alice, folder, "CT")
    series = job.series
    if warning is None:
        assert not series.warnings
    else:
        assert any(warning in w for w in series.warnings), series.warnings
    from dicomio.orientation import display_geometry

    display = display_geometry(series.orientation, series.shape, series.warnings)[
        "reformats"
    ]
    assert display["available"] is reformats, display
    result = series_export(
        job=job, actor=alice, out_dir=tmp_path / "out", include_residual=True
    )
    for exported in result.series:
        assert dicom3tools_errors(exported.files) == [], exported.kind
    # The output keeps each source slice's own position: nothing resampled.
    for ds in read_folder(tmp_path / "out" / "denoised"):
        source_uid = ds.SourceImageSequence[0].ReferencedSOPInstanceUID
        np.testing.assert_allclose(
            [float(v) for v in ds.ImagePositionPatient], sources[source_uid]
        )
