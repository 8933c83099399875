"""assemble_series on generated series: ordering, geometry, duplicates, gaps."""

from __future__ import annotations

import io
import random
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicomio import (
    Instance,
    assemble_series,
    iter_members,
    phantom_volume,
    read_instance,
    write_series,
)

OBLIQUE = (0.8660254, 0.5, 0.0, 0.0, 0.0, -1.0)


def _read(paths: list[Path]) -> list[Instance]:
    return [read_instance(p.read_bytes(), p.name) for p in paths]


def _edited(path: Path, name: str, **changes: object) -> Instance:
    ds = pydicom.dcmread(path)
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    out = io.BytesIO()
    ds.save_as(out)
    return read_instance(out.getvalue(), name)


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    return phantom_volume((12, 32, 24), seed=3)


def test_shuffled_slices_sort_by_position(tmp_path: Path, volume: np.ndarray) -> None:
    paths = write_series(tmp_path, volume, spacing_mm=(2.5, 0.8, 0.7))
    instances = _read(paths)
    random.Random(0).shuffle(instances)
    result = assemble_series(instances)
    assert result.rejections == []
    (series,) = result.series
    np.testing.assert_allclose(series.volume, volume, atol=0.501)
    assert series.spacing_mm == pytest.approx((2.5, 0.8, 0.7))
    assert [ref.name for ref in series.slices] == [p.name for p in paths]
    assert series.warnings == ()
    assert series.n_instances == 12 and series.shape == (12, 32, 24)


def test_negative_oblique_positions_sort_along_the_normal(
    tmp_path: Path, volume: np.ndarray
) -> None:
    origin = (-120.0, -80.5, -300.25)
    paths = write_series(
        tmp_path, volume, spacing_mm=(1.5, 1.0, 1.0), origin=origin, orientation=OBLIQUE
    )
    instances = _read(paths)[::-1]
    (series,) = assemble_series(instances).series
    np.testing.assert_allclose(series.volume, volume, atol=0.501)
    assert series.origin == pytest.approx(origin, abs=1e-4)
    assert series.orientation == pytest.approx(OBLIQUE, abs=1e-6)
    assert series.spacing_mm[0] == pytest.approx(1.5, abs=1e-4)


def test_missing_slice_is_reported(tmp_path: Path, volume: np.ndarray) -> None:
    paths = write_series(tmp_path, volume, spacing_mm=(2.0, 1.0, 1.0))
    del paths[5]
    (series,) = assemble_series(_read(paths)).series
    assert series.shape[0] == 11 and series.spacing_mm[0] == pytest.approx(2.0)
    (warning,) = series.warnings
    assert "missing slices" in warning and "1 slice(s) missing" in warning
    assert "(0, 0, 8)" in warning and "(0, 0, 12)" in warning


def test_uneven_spacing_is_reported(tmp_path: Path, volume: np.ndarray) -> None:
    paths = write_series(tmp_path, volume, spacing_mm=(2.0, 1.0, 1.0))
    instances = _read(paths)
    instances[-1] = _edited(paths[-1], "last", ImagePositionPatient=[0, 0, 23.0])
    (series,) = assemble_series(instances).series
    assert any(
        "uneven slice spacing" in w and "(0, 0, 23)" in w for w in series.warnings
    )


def test_mixed_series_in_one_zip(tmp_path: Path, volume: np.ndarray) -> None:
    a = write_series(tmp_path / "a", volume, description="A")
    b = write_series(tmp_path / "b", volume[:5] + 10, modality="MR", description="B")
    archive = tmp_path / "mixed.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in [*a, *b]:
            zf.write(path, f"{path.parent.name}/{path.name}")
    instances = [read_instance(m.read(), m.name) for m in iter_members(archive)]
    result = assemble_series(instances)
    assert sorted((s.description, s.modality, s.shape[0]) for s in result.series) == [
        ("A", "CT", 12),
        ("B", "MR", 5),
    ]


def test_multiframe_object_expands_into_slices(
    tmp_path: Path, volume: np.ndarray
) -> None:
    (path,) = write_series(tmp_path, volume, multiframe=True, spacing_mm=(3, 1, 1))
    (series,) = assemble_series(_read([path])).series
    np.testing.assert_allclose(series.volume, volume, atol=0.501)
    assert series.spacing_mm[0] == pytest.approx(3.0)
    assert [ref.frame_index for ref in series.slices] == list(range(12))
    assert series.n_instances == 1


def test_identical_reupload_is_deduplicated(tmp_path: Path, volume: np.ndarray) -> None:
    instances = _read(write_series(tmp_path, volume))
    result = assemble_series(instances + instances[:3])
    assert result.rejections == [] and result.series[0].shape[0] == 12


def test_same_sop_uid_with_different_content_is_rejected(
    tmp_path: Path, volume: np.ndarray
) -> None:
    paths = write_series(tmp_path, volume)
    instances = _read(paths)
    changed = _edited(paths[2], "changed.dcm", PatientName="Other^Name")
    result = assemble_series([*instances, changed])
    assert result.rejections == [
        (
            "changed.dcm",
            f"duplicate SOPInstanceUID {instances[2].sop_instance_uid} with "
            f"different content (first seen in {paths[2].name})",
        )
    ]


def test_duplicate_positions_with_different_uids_are_rejected(
    tmp_path: Path, volume: np.ndarray
) -> None:
    first = _read(
        write_series(tmp_path / "a", volume, series_uid="1.2.3", study_uid="1.2.4")
    )
    second = _read(
        write_series(tmp_path / "b", volume + 1, series_uid="1.2.3", study_uid="1.2.4")
    )
    result = assemble_series([*first, *second[:2]])
    assert len(result.rejections) == 2
    assert all("duplicates" in reason for _, reason in result.rejections)
    assert result.series[0].shape[0] == 12


def test_mismatched_grid_is_rejected(tmp_path: Path, volume: np.ndarray) -> None:
    main = _read(
        write_series(tmp_path / "a", volume, series_uid="1.2.3", study_uid="1.2.4")
    )
    odd = _read(
        write_series(
            tmp_path / "b", volume[:2, :16], series_uid="1.2.3", study_uid="1.2.4"
        )
    )
    result = assemble_series([*odd, *main])
    assert [name for name, _ in result.rejections] == ["IM00001.dcm", "IM00002.dcm"]
    assert "image grid 24x16" in result.rejections[0][1]
    assert result.series[0].shape == (12, 32, 24)


def test_mixed_patients_reject_the_series(tmp_path: Path, volume: np.ndarray) -> None:
    paths = write_series(tmp_path, volume[:3])
    instances = _read(paths)
    instances[1] = _edited(paths[1], "other.dcm", PatientID="SOMEONE")
    result = assemble_series(instances)
    assert result.series == [] and len(result.rejections) == 3
    assert "mixes patients" in result.rejections[0][1]


def test_missing_positions_fall_back_to_instance_number(
    tmp_path: Path, volume: np.ndarray
) -> None:
    paths = write_series(tmp_path, volume[:4], spacing_mm=(2.0, 1.0, 1.0))
    instances = [_edited(p, p.name, ImagePositionPatient=None) for p in paths][::-1]
    (series,) = assemble_series(instances).series
    np.testing.assert_allclose(series.volume, volume[:4], atol=0.501)
    assert "ordered by InstanceNumber" in series.warnings[0]
    assert series.spacing_mm[0] == pytest.approx(2.0)


def test_real_ct_slice_assembles(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    (series,) = assemble_series([read_instance(data, "CT_small.dcm")]).series
    assert series.shape == (1, 128, 128) and series.modality == "CT"
    assert series.spacing_mm[1:] == pytest.approx((0.661468, 0.661468))


def test_whole_hu_series_is_stored_as_int16_slice_by_slice(
    tmp_path: Path, volume: np.ndarray
) -> None:
    (series,) = assemble_series(_read(write_series(tmp_path, volume))).series
    assert series.storage_dtype() == np.int16
    stored = list(series.iter_stored(series.storage_dtype()))
    assert len(stored) == series.shape[0] and stored[0].dtype == np.int16
    np.testing.assert_array_equal(np.stack(stored), series.volume)


def test_fractional_values_keep_float32_storage(tmp_path: Path) -> None:
    paths = write_series(tmp_path, phantom_volume((3, 16, 16), seed=4))
    halved = [_edited(paths[0], "half.dcm", RescaleSlope=0.5)]
    halved += _read(paths[1:])
    (series,) = assemble_series(halved).series
    assert series.storage_dtype() == np.float32
    np.testing.assert_array_equal(
        np.stack(list(series.iter_stored(np.dtype(np.float32)))), series.volume
    )
