"""read_instance on pydicom's bundled files, hostile bytes and fuzzed real files."""

from __future__ import annotations

import ast
import io
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.pixels import apply_modality_lut

from dicomio import DicomRejected, Limits, read_instance

PACKAGE = Path(__file__).resolve().parents[2] / "dicomio"
TESTDATA = sorted(f for f in get_testdata_files() if os.path.isfile(f))


def _bytes(name: str) -> bytes:
    return Path(get_testdata_file(name)).read_bytes()


def _with(name: str, **changes: object) -> bytes:
    ds = pydicom.dcmread(get_testdata_file(name))
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


def _reason(data: bytes, name: str = "x.dcm", limits: Limits | None = None) -> str:
    with pytest.raises(DicomRejected) as info:
        read_instance(data, name, limits=limits)
    assert info.value.name == name
    assert str(info.value).startswith(f"{name}: ")
    return info.value.reason


def test_package_has_no_django_imports() -> None:
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.split(".")[0] == "django" for n in names), path


def test_package_imports_without_django_settings() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    code = (
        "import sys, dicomio, dicomio.derived, dicomio.frames, dicomio.orientation\n"
        "loaded = {n.split('.')[0] for n in sys.modules}\n"
        "assert not loaded & {'django', 'celery', 'radiology', 'training'}, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)


@pytest.mark.parametrize("path", TESTDATA, ids=[Path(p).name for p in TESTDATA])
def test_every_bundled_file_reads_or_is_rejected(path: str) -> None:
    name = Path(path).name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            inst = read_instance(Path(path).read_bytes(), name)
        except DicomRejected as exc:
            assert exc.name == name and exc.reason
            return
    assert inst.pixels.dtype == (np.int16 if inst.int16_exact else np.float32)
    assert inst.pixels.ndim == 3
    assert len(inst.positions) == inst.n_frames


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",
        "MR_small.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "JPGExtended.dcm",
        "JPEG2000.dcm",
        "image_dfl.dcm",
        "693_J2KR.dcm",
        "emri_small.dcm",
        "eCT_Supplemental.dcm",
    ],
)
def test_values_match_pydicom(name: str) -> None:
    ds = pydicom.dcmread(get_testdata_file(name))
    inst = read_instance(_bytes(name), name)
    frames = int(ds.get("NumberOfFrames") or 1)
    assert inst.pixels.shape == (frames, ds.Rows, ds.Columns)
    if "PerFrameFunctionalGroupsSequence" not in ds:
        expected = apply_modality_lut(ds.pixel_array, ds).reshape(inst.pixels.shape)
        np.testing.assert_allclose(inst.pixels, expected, rtol=1e-6, atol=1e-3)
    if "PixelSpacing" in ds:
        assert inst.pixel_spacings_mm[0] == pytest.approx(
            [float(v) for v in ds.PixelSpacing]
        )
    if "ImagePositionPatient" in ds:
        expected_ipp = [float(v) for v in ds.ImagePositionPatient]
        assert inst.positions[0] == pytest.approx(expected_ipp)
    assert inst.sop_instance_uid == ds.SOPInstanceUID


def test_ct_small_is_in_hounsfield_units() -> None:
    inst = read_instance(_bytes("CT_small.dcm"), "CT_small.dcm")
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    assert inst.modality == "CT"
    stored = ds.pixel_array.astype(np.float32)
    expected = stored * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(inst.pixels[0], expected)
    assert inst.slice_thickness_mm == pytest.approx(float(ds.SliceThickness))
    assert inst.study_instance_uid == ds.StudyInstanceUID
    assert len(inst.sha256) == 64


@pytest.mark.parametrize(
    "name",
    ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"],
)
def test_lossless_syntaxes_decode_to_the_uncompressed_values(name: str) -> None:
    reference = read_instance(_bytes("MR_small.dcm"), "MR_small.dcm")
    inst = read_instance(_bytes(name), name)
    np.testing.assert_array_equal(inst.pixels, reference.pixels)


def test_enhanced_ct_reads_per_frame_geometry_and_rescale() -> None:
    ds = pydicom.dcmread(get_testdata_file("eCT_Supplemental.dcm"))
    inst = read_instance(_bytes("eCT_Supplemental.dcm"), "eCT_Supplemental.dcm")
    assert inst.n_frames == 2
    for index, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        ipp = item.PlanePositionSequence[0].ImagePositionPatient
        assert inst.positions[index] == pytest.approx([float(v) for v in ipp])
        transform = item.get("PixelValueTransformationSequence") or (
            ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence
        )
        slope = float(transform[0].RescaleSlope)
        intercept = float(transform[0].RescaleIntercept)
        raw = ds.pixel_array[index].astype(np.float32)
        np.testing.assert_allclose(inst.pixels[index], raw * slope + intercept)
    assert inst.orientations[0] is not None


def test_rt_dose_frames_are_placed_by_grid_frame_offsets() -> None:
    inst = read_instance(_bytes("rtdose.dcm"), "rtdose.dcm")
    zs = [p[2] for p in inst.positions if p is not None]
    assert len(zs) == inst.n_frames and np.all(np.diff(zs) != 0)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("rtplan.dcm", "not an image (RT Plan Storage"),
        ("test-SR.dcm", "not an image (Comprehensive SR Storage"),
        ("waveform_ecg.dcm", "not an image"),
        ("SC_rgb.dcm", "colour image (PhotometricInterpretation RGB"),
        ("OBXXXX1A.dcm", "colour image (PhotometricInterpretation PALETTE COLOR"),
        ("MR_truncated.dcm", "pixel data is 8130 bytes, expected 8192"),
        ("zipMR.gz", "gzip archive, not a DICOM file"),
        ("no_meta.dcm", "not a DICOM file"),
        ("DICOMDIR", "DICOMDIR index, not an image"),
        ("liver.dcm", "BitsAllocated 1 is not supported"),
    ],
)
def test_unusable_bundled_files_give_a_clear_reason(name: str, expected: str) -> None:
    assert expected in _reason(_bytes(name), name)


def test_empty_file_is_rejected() -> None:
    assert _reason(b"") == "empty file"


def test_random_bytes_are_rejected() -> None:
    data = np.random.default_rng(0).bytes(4096)
    assert "not a DICOM file" in _reason(data)


@pytest.mark.parametrize("fraction", [0.01, 0.05, 0.1, 0.3, 0.5, 0.9, 0.95])
def test_truncated_files_are_rejected(fraction: float) -> None:
    data = _bytes("CT_small.dcm")
    assert _reason(data[: int(len(data) * fraction)])


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.95])
def test_truncated_compressed_files_are_rejected(fraction: float) -> None:
    data = _bytes("MR_small_jp2klossless.dcm")
    assert _reason(data[: int(len(data) * fraction)])


def test_huge_declared_dimensions_are_rejected_before_decoding() -> None:
    data = _with("CT_small.dcm", Rows=60000, Columns=60000)
    reason = _reason(data)
    assert "60000 x 60000 x 1 pixels" in reason and "max_pixels" in reason


def test_frames_beyond_max_pixels_are_rejected() -> None:
    data = _with("CT_small.dcm", NumberOfFrames=200)
    assert "max_pixels 100000" in _reason(data, limits=Limits(max_pixels=100_000))


def test_element_declaring_gigabytes_is_rejected() -> None:
    data = bytearray(_bytes("CT_small.dcm"))
    tag = data.find(b"\xe0\x7f\x10\x00OW\x00\x00")
    assert tag > 0
    data[tag + 8 : tag + 12] = (0x7FFFFFF0).to_bytes(4, "little")
    assert _reason(bytes(data))


def test_file_above_max_file_bytes_is_rejected() -> None:
    assert "max_file_bytes" in _reason(
        _bytes("CT_small.dcm"), limits=Limits(max_file_bytes=100)
    )


@pytest.mark.parametrize(
    "uid",
    ["1." + "2" * 70, "1.2.3 4", "1.2/3", "1.2.\u00e9", ".."],
    ids=["too-long", "space", "slash", "non-ascii", "dots"],
)
def test_uids_that_cannot_be_stored_safely_are_rejected(uid: str) -> None:
    assert "invalid UID: SOPInstanceUID" in _reason(
        _with("CT_small.dcm", SOPInstanceUID=uid)
    )


@pytest.mark.parametrize(
    ("uid", "why"),
    [
        ("1.2.abc", "characters other than digits and dots"),
        ("1.2.840.0113619.2.55", "leading zero"),
    ],
)
def test_nonconformant_uids_are_kept_with_a_warning(uid: str, why: str) -> None:
    inst = read_instance(_with("CT_small.dcm", SOPInstanceUID=uid), "odd.dcm")
    assert inst.sop_instance_uid == uid
    (warning,) = inst.uid_warnings
    assert warning.startswith("SOPInstanceUID") and why in warning


def test_conformant_uids_carry_no_warning() -> None:
    inst = read_instance(_with("CT_small.dcm", SOPInstanceUID="1.2.0.30"), "ok.dcm")
    assert inst.uid_warnings == ()


def test_missing_series_uid_is_rejected() -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds.SeriesInstanceUID
    out = io.BytesIO()
    ds.save_as(out)
    assert _reason(out.getvalue()) == "invalid UID: SeriesInstanceUID is missing"


def test_derived_image_type_sets_the_flag() -> None:
    inst = read_instance(
        _with("CT_small.dcm", ImageType=["DERIVED", "SECONDARY", "AXIAL"]), "d.dcm"
    )
    assert inst.derived and inst.image_type == ("DERIVED", "SECONDARY", "AXIAL")


def test_compressed_frame_larger_than_header_is_rejected() -> None:
    data = _with("MR_small_jp2klossless.dcm", Rows=16, Columns=16)
    assert "compressed frame declares 64 x 64 pixels" in _reason(data)


def test_pixels_are_read_only() -> None:
    inst = read_instance(_bytes("MR_small.dcm"), "MR_small.dcm")
    with pytest.raises(ValueError):
        inst.pixels[0, 0, 0] = 1


_FUZZ_SOURCES = ["MR_small.dcm", "MR_small_RLE.dcm", "emri_small_jpeg_2k_lossless.dcm"]


@settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    source=st.sampled_from(_FUZZ_SOURCES),
    flips=st.lists(
        st.tuples(st.integers(min_value=0, max_value=10**6), st.integers(0, 255)),
        max_size=12,
    ),
    cut=st.one_of(st.none(), st.integers(min_value=0, max_value=10**6)),
)
def test_fuzzed_real_files_only_raise_dicom_rejected(
    source: str, flips: list[tuple[int, int]], cut: int | None
) -> None:
    data = bytearray(_bytes(source))
    for offset, value in flips:
        data[offset % len(data)] = value
    if cut is not None:
        del data[cut % len(data) :]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            inst = read_instance(bytes(data), source)
        except DicomRejected as exc:
            assert exc.name == source
            return
    assert inst.pixels.dtype == (np.int16 if inst.int16_exact else np.float32)


@pytest.mark.parametrize(
    ("changes", "limits", "expected"),
    [
        ({"PhotometricInterpretation": "RGB"}, None, "colour image"),
        ({}, Limits(max_pixels=1000), "above max_pixels 1000"),
    ],
)
def test_header_problems_are_named_before_a_truncated_pixel_data(
    changes: dict, limits: Limits | None, expected: str
) -> None:
    truncated = _with("CT_small.dcm", **changes)[:-1000]
    assert expected in _reason(truncated, limits=limits)


def test_truncated_pixel_data_is_named_when_the_header_is_fine() -> None:
    assert "pixel data is" in _reason(_bytes("CT_small.dcm")[:-1000])


def _ct_with_stored(stored: np.ndarray, slope: str, intercept: str) -> bytes:
    """CT_small's header over the given 16-bit stored values and rescale."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if stored.dtype == np.int16 else 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PixelData = stored.astype(stored.dtype.newbyteorder("<")).tobytes()
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


@pytest.mark.parametrize(
    ("stored", "slope", "intercept", "kept_as"),
    [
        (np.array([[-2000, 0], [1, 3071]], np.int16), "1", "-1024", np.int16),
        (np.array([[0, 1], [65534, 65535]], np.uint16), "1", "-32768", np.int16),
        (np.array([[-3, 0], [7, 16000]], np.int16), "2", "5", np.int16),
        (np.array([[0, 1], [2, 3]], np.int16), "0.5", "0", np.float32),
        (np.array([[0, 1], [2, 3]], np.int16), "1", "-1024.5", np.float32),
        (np.array([[0, 1], [2, 40000]], np.uint16), "1", "0", np.float32),
        (np.array([[-1, 0], [1, 20000]], np.int16), "2", "0", np.float32),
        # Whole but beyond 32-bit arithmetic: converted as floats, no overflow.
        (np.zeros((2, 2), np.int16), "1e10", "0", np.int16),
        (np.zeros((2, 2), np.int16), "1", "-2147483648", np.float32),
    ],
)
def test_whole_units_are_kept_as_int16_and_the_rest_as_float32(
    stored: np.ndarray, slope: str, intercept: str, kept_as: type
) -> None:
    inst = read_instance(_ct_with_stored(stored, slope, intercept), "x.dcm")
    expected = stored.astype(np.float64) * float(slope) + float(intercept)
    assert inst.pixels.dtype == kept_as
    assert inst.int16_exact == (kept_as is np.int16)
    np.testing.assert_array_equal(inst.pixels[0], expected)


def _native_cases() -> list[str]:
    """Bundled files with native pixel data that pydicom itself decodes."""
    names = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in TESTDATA:
            try:
                ds = pydicom.dcmread(path)
                native = not ds.file_meta.TransferSyntaxUID.is_encapsulated
                if native and "PixelData" in ds and ds.Rows and ds.Columns:
                    ds.pixel_array  # noqa: B018
                    names.append(path)
            except Exception:
                continue
    return names


@pytest.mark.parametrize("path", _native_cases(), ids=lambda p: Path(p).name)
def test_native_pixels_are_pydicoms_stored_values(path: str) -> None:
    from dicomio.reader import _native_pixels

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
        frames = int(ds.get("NumberOfFrames") or 1)
        count = frames * int(ds.Rows) * int(ds.Columns)
        expected = ds.pixel_array
        got = _native_pixels(ds, "PixelData", ds.file_meta.TransferSyntaxUID, count)
    if got is None:
        return  # not a case the fast path takes: pydicom decodes it
    assert got.dtype.kind == expected.dtype.kind
    assert got.dtype.itemsize == expected.dtype.itemsize
    np.testing.assert_array_equal(got.reshape(expected.shape), expected)


def test_unused_high_bits_are_shifted_out_as_pydicom_does() -> None:
    from dicomio.reader import _native_pixels

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    raw = np.array([[0x0FFF, 0xF800], [0x1234, 0x0800]], dtype="<u2")
    ds.Rows, ds.Columns = raw.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    for representation in (0, 1):
        ds.PixelRepresentation = representation
        ds.PixelData = raw.tobytes()
        expected = ds.pixel_array
        got = _native_pixels(ds, "PixelData", ds.file_meta.TransferSyntaxUID, 4)
        np.testing.assert_array_equal(got.reshape(2, 2), expected)


@pytest.mark.parametrize(
    ("center", "width", "explanation", "expected"),
    [
        ("40", "400", None, ((40.0, 400.0, ""),)),
        (
            ["40", "-600"],
            ["400", "1500"],
            ["SOFT", "LUNG"],
            ((40.0, 400.0, "SOFT"), (-600.0, 1500.0, "LUNG")),
        ),
        (["40", "300"], ["400"], None, ((40.0, 400.0, ""),)),  # unpaired dropped
        ("40", "0", None, ()),  # a zero width is no window
        (None, None, None, ()),
    ],
)
def test_the_scans_own_windows_are_read(center, width, explanation, expected):
    from pydicom.dataset import Dataset

    from dicomio.reader import _windows

    ds = Dataset()
    if center is not None:
        ds.WindowCenter = center
        ds.WindowWidth = width
    if explanation is not None:
        ds.WindowCenterWidthExplanation = explanation
    assert _windows(ds) == expected
