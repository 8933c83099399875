"""write_series writes valid, deterministic DICOM; phantom_volume looks like CT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

from dicomio import phantom_volume, read_instance, write_series

TYPE_1_AND_2 = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "Modality",
    "SeriesNumber",
    "InstanceNumber",
    "PositionReferenceIndicator",
    "ImageType",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PixelData",
)


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_files_are_valid_image_storage(tmp_path: Path, modality: str) -> None:
    volume = phantom_volume((3, 16, 16), seed=0)
    paths = write_series(tmp_path, volume, modality=modality)
    ds = pydicom.dcmread(paths[0])
    assert ds.preamble is not None and ds.file_meta.TransferSyntaxUID
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    for keyword in (
        *TYPE_1_AND_2,
        "ImagePositionPatient",
        "ImageOrientationPatient",
        "PixelSpacing",
        "RescaleSlope",
        "RescaleIntercept",
    ):
        assert keyword in ds, keyword
    assert ds.SOPClassUID.name == f"{modality} Image Storage"
    assert ds.pixel_array.dtype == np.int16


@pytest.mark.parametrize(
    "syntax",
    [
        ImplicitVRLittleEndian,
        DeflatedExplicitVRLittleEndian,
        RLELossless,
        JPEG2000Lossless,
    ],
    ids=lambda uid: uid.name,
)
def test_transfer_syntaxes_round_trip(tmp_path: Path, syntax: str) -> None:
    volume = phantom_volume((2, 64, 64), seed=1)
    for multiframe in (False, True):
        paths = write_series(
            tmp_path / str(multiframe),
            volume,
            transfer_syntax=syntax,
            multiframe=multiframe,
        )
        pixels = np.concatenate(
            [read_instance(p.read_bytes(), p.name).pixels for p in paths]
        )
        np.testing.assert_allclose(pixels, volume, atol=0.501)
        assert pydicom.dcmread(paths[0]).file_meta.TransferSyntaxUID == syntax


def test_enhanced_object_has_functional_groups(tmp_path: Path) -> None:
    (path,) = write_series(tmp_path, phantom_volume((4, 8, 8)), multiframe=True)
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID.name == "Enhanced CT Image Storage"
    assert ds.NumberOfFrames == 4 and len(ds.PerFrameFunctionalGroupsSequence) == 4
    shared = ds.SharedFunctionalGroupsSequence[0]
    assert (
        "PixelMeasuresSequence" in shared
        and "PixelValueTransformationSequence" in shared
    )


def test_large_range_uses_a_rescale_slope(tmp_path: Path) -> None:
    volume = np.linspace(-50000, 90000, 2 * 8 * 8, dtype=np.float32).reshape(2, 8, 8)
    paths = write_series(tmp_path, volume, modality="MR")
    slope = float(pydicom.dcmread(paths[0]).RescaleSlope)
    assert slope > 1
    pixels = np.concatenate(
        [read_instance(p.read_bytes(), p.name).pixels for p in paths]
    )
    np.testing.assert_allclose(pixels, volume, atol=slope)


def test_output_is_deterministic(tmp_path: Path) -> None:
    volume = phantom_volume((3, 8, 8), seed=2)
    a = write_series(tmp_path / "a", volume)
    b = write_series(tmp_path / "b", volume)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]


def test_existing_files_are_not_overwritten(tmp_path: Path) -> None:
    volume = phantom_volume((2, 8, 8))
    write_series(tmp_path, volume)
    with pytest.raises(FileExistsError):
        write_series(tmp_path, volume)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"volume_hu": np.zeros((4, 4))}, "volume_hu"),
        ({"volume_hu": np.full((1, 2, 2), np.nan)}, "finite"),
        ({"modality": "US"}, "modality"),
        ({"spacing_mm": (0, 1, 1)}, "spacing_mm"),
        ({"orientation": (1, 0, 0, 1, 0, 0)}, "orthogonal"),
    ],
)
def test_bad_arguments_raise_value_error(
    tmp_path: Path, kwargs: dict, match: str
) -> None:
    args = {"volume_hu": np.zeros((1, 2, 2)), **kwargs}
    with pytest.raises(ValueError, match=match):
        write_series(tmp_path, **args)


def test_three_hundred_slices_write_one_file_each(tmp_path: Path) -> None:
    """(How fast a full-size series writes is ``python -m bench ingest``'s job.)"""
    paths = write_series(tmp_path, np.zeros((300, 16, 16), dtype=np.float32))
    assert len(paths) == len(set(paths)) == 300
    assert all(path.exists() for path in paths)


def test_phantom_is_deterministic_and_ct_like() -> None:
    a = phantom_volume((8, 64, 64), seed=5)
    assert a.dtype == np.float32 and a.shape == (8, 64, 64)
    np.testing.assert_array_equal(a, phantom_volume((8, 64, 64), seed=5))
    assert a[:, 0, 0].mean() < -900
    assert -100 < np.median(a[:, 32, 32]) < 200
    assert a.max() > 500
    with pytest.raises(ValueError, match="shape"):
        phantom_volume((0, 4, 4))
