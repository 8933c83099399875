"""Training reads DICOM through the app's own reader (dicomio), with the same pixels."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from dicomio.synthetic import write_series
from training.data import folder_slices, read_dicom_slices, series_slices
from training.errors import DataError


def _pydicom_frames(path: str) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
    pixels = ds.pixel_array.astype(np.float32)
    pixels = pixels * float(ds.get("RescaleSlope", 1)) + float(
        ds.get("RescaleIntercept", 0)
    )
    floor = -1024.0 if ds.Modality == "CT" else 0.0
    return np.maximum(pixels if pixels.ndim == 3 else pixels[None], floor)


@pytest.mark.parametrize(
    ("name", "pixel_mm"),
    [("CT_small.dcm", 0.661468), ("MR_small.dcm", 0.3125), ("emri_small.dcm", 1.0)],
)
def test_a_bundled_file_reads_as_pydicom_decodes_it(name, pixel_mm):
    path = get_testdata_file(name)
    slices = read_dicom_slices(path)
    expected = _pydicom_frames(path)
    assert len(slices) == len(expected)
    for i, (item, frame) in enumerate(zip(slices, expected, strict=True)):
        assert item.image.dtype == np.float32
        np.testing.assert_array_equal(item.image, frame)
        assert item.pixel_mm == pytest.approx(pixel_mm)
        assert item.source == f"dicom:{name}#{i}" and item.full_dose


def test_training_refuses_a_file_the_app_refuses(tmp_path):
    """One reader: a file ingest would reject is no training data either."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds.SOPInstanceUID
    ds.save_as(tmp_path / "no-uid.dcm")
    with pytest.raises(DataError, match="no-uid.dcm: invalid UID: SOPInstanceUID"):
        read_dicom_slices(tmp_path / "no-uid.dcm")
    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "good.dcm")
    (tmp_path / "README.txt").write_text("not DICOM")
    assert [s.source for s in folder_slices(tmp_path, "CT")] == ["dicom:good.dcm#0"]


def test_a_series_folder_gives_its_largest_series_in_position_order(tmp_path):
    """Files of another series in the same folder are left out, and slices count in
    position order whatever the file names say."""
    volume = np.stack([np.full((32, 32), 10.0 * k) for k in range(6)])
    written = write_series(
        tmp_path / "main", volume, origin=(0, 0, 50), description="main"
    )
    other = write_series(tmp_path / "other", volume[:3] + 500, description="other")
    folder = tmp_path / "mixed"
    folder.mkdir()
    for k, path in enumerate(reversed(written)):
        shutil.copy(path, folder / f"a{k}.dcm")
    for k, path in enumerate(other):
        shutil.copy(path, folder / f"b{k}.dcm")
    slices = series_slices(folder, "CT")
    assert [float(s.image.mean()) for s in slices] == [10.0 * k for k in range(6)]
    assert [s.source for s in slices] == [f"dicom:a{5 - k}.dcm#0" for k in range(6)]
