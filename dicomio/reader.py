"""Decode one DICOM instance into float32 frames in original units, or reject it."""

from __future__ import annotations

import hashlib
import io
import math
import re
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import generate_fragments
from pydicom.errors import InvalidDicomError
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.multival import MultiValue
from pydicom.pixels.processing import apply_modality_lut
from pydicom.pixels.utils import _get_jpg_parameters, get_expected_length
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from .errors import DicomRejected
from .sandbox import decode_isolated
from .sources import Limits, archive_kind

__all__ = [
    "Instance",
    "Orientation",
    "Vec3",
    "read_instance",
    "uid_nonconformance",
    "validate_uid",
]

Vec3 = tuple[float, float, float]
Orientation = tuple[float, float, float, float, float, float]

_UID_RE = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
# What is stored and served as written, as Orthanc and dcm4chee do: safe in a URL
# path, HTML and a database column. Anything else cannot be kept safely.
_STORABLE_UID_RE = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]*")
_GREYSCALE = ("MONOCHROME1", "MONOCHROME2")
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_PIXEL_DATA_TAG = 0x7FE00010
_MAX_REASON_CHARS = 300
_INT16_MIN, _INT16_MAX = -32768, 32767


@dataclass(frozen=True, eq=False)
class Instance:
    """A decoded greyscale DICOM instance with its identity and per-frame geometry.

    Args:
        name: display name of the source (member name).
        sha256: hex digest of the file's bytes.
        size_bytes: length of the file in bytes.
        sop_class_uid: SOP Class UID (``""`` when absent).
        sop_instance_uid: validated SOP Instance UID.
        series_instance_uid: validated Series Instance UID.
        study_instance_uid: validated Study Instance UID.
        modality: Modality, e.g. ``"CT"`` (``""`` when absent).
        patient_id: Patient ID (``""`` when absent).
        study_description: Study Description.
        series_description: Series Description.
        study_date: Study Date as ``YYYYMMDD`` text (``""`` when absent).
        image_type: Image Type values, e.g. ``("ORIGINAL", "PRIMARY", "AXIAL")``.
        derived: ``True`` when the first Image Type value is ``DERIVED``.
        own_output: ``True`` for this app's own denoised or residual output (a
            Contributing Equipment item of :data:`OWN_MANUFACTURER` describing AI
            denoising): never denoised again. Other DERIVED images (a scanner's
            MPRs, another tool's output) may be.
        instance_number: Instance Number, or ``None``.
        transfer_syntax_uid: transfer syntax the file was stored with.
        photometric_interpretation: ``MONOCHROME1`` or ``MONOCHROME2``.
        pixels: read-only array of shape (frames, rows, columns) after the
            Modality LUT, in original units (HU for CT): int16 when
            ``int16_exact``, float32 otherwise.
        positions: per frame, Image Position (Patient) in mm, or ``None``.
        orientations: per frame, Image Orientation (Patient) direction
            cosines (row then column), or ``None``.
        pixel_spacings_mm: per frame, (between rows, between columns) in mm,
            or ``None``.
        slice_thickness_mm: Slice Thickness in mm, or ``None``.
        int16_exact: every pixel is a whole number within int16 (CT in HU, most
            MR), so the pixels are kept (and stored) as int16 without loss: half
            the memory of float32 and no conversion on the way to storage.
        patient_name: Patient's Name as written, ``^`` between its parts (``""``
            when absent).
        windows: the scan's own display windows, ``(center, width, explanation)``
            for each Window Center/Width pair (multi-valued allowed), in output
            units (HU for CT); empty when absent or malformed.
        uid_warnings: UIDs kept as written though they break PS3.5 9.1 (letters,
            leading zeros), each with why.
    """

    name: str
    sha256: str
    size_bytes: int
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    modality: str
    patient_id: str
    study_description: str
    series_description: str
    study_date: str
    image_type: tuple[str, ...]
    derived: bool
    instance_number: int | None
    transfer_syntax_uid: str
    photometric_interpretation: str
    pixels: np.ndarray
    positions: tuple[Vec3 | None, ...]
    orientations: tuple[Orientation | None, ...]
    pixel_spacings_mm: tuple[tuple[float, float] | None, ...]
    slice_thickness_mm: float | None
    int16_exact: bool = False
    patient_name: str = ""
    windows: tuple[tuple[float, float, str], ...] = ()
    own_output: bool = False
    uid_warnings: tuple[str, ...] = ()

    @property
    def n_frames(self) -> int:
        """Number of frames (1 for a single-frame image)."""
        return int(self.pixels.shape[0])

    @property
    def rows(self) -> int:
        """Rows per frame."""
        return int(self.pixels.shape[1])

    @property
    def columns(self) -> int:
        """Columns per frame."""
        return int(self.pixels.shape[2])


def validate_uid(value: object) -> str | None:
    """Return why ``value`` cannot be stored as a UID, or ``None`` when it can.

    Only what cannot be kept safely is refused: a missing or empty UID, one over
    64 characters, or one with characters outside letters, digits, ``.``, ``-``
    and ``_`` (spaces, slashes, control characters) or starting with ``.``. A UID
    that breaks PS3.5 9.1 otherwise is kept with a warning
    (:func:`uid_nonconformance`).

    Args:
        value: the UID as read (``None`` when the element is missing).

    Returns:
        A short reason such as ``"is missing"`` or ``None``.
    """
    text = "" if value is None else str(value)
    if not text:
        return "is missing"
    if len(text) > 64:
        return f"is {len(text)} characters long (at most 64)"
    if not _STORABLE_UID_RE.fullmatch(text):
        return (
            f"{_clip(text, 80)!r} is not letters, digits, '.', '-' and '_' "
            "starting with a letter or digit"
        )
    return None


def uid_nonconformance(value: object) -> str | None:
    """Why a storable UID breaks PS3.5 9.1 (digits and dots, no leading zero in a
    component), or ``None`` when it conforms."""
    text = "" if value is None else str(value)
    if _UID_RE.fullmatch(text):
        return None
    if re.fullmatch(r"[0-9]+(\.[0-9]+)*", text):
        return f"{_clip(text, 80)!r} has a component with a leading zero"
    return f"{_clip(text, 80)!r} has characters other than digits and dots"


def read_instance(data: bytes, name: str, *, limits: Limits | None = None) -> Instance:
    """Parse, check and decode one DICOM file.

    The file is parsed once, with the pixel data kept as undecoded bytes, and the
    header checked first, so that non-images, colour images, invalid UIDs and
    dimensions beyond ``limits.max_pixels`` are refused before any pixel data is
    decoded; compressed frames whose
    codestream declares more pixels than the header are refused too.

    Args:
        data: the whole file.
        name: display name used in every rejection message.
        limits: resource caps; defaults to :class:`Limits` ().

    Returns:
        The decoded :class:`Instance`.

    Raises:
        DicomRejected: for every input that cannot be used; no other exception
            escapes for bad input.
    """
    limits = limits or Limits()
    try:
        return _read(data, name, limits)
    except DicomRejected:
        raise
    except Exception as exc:
        # pydicom converts values lazily, so corrupt elements surface anywhere.
        raise DicomRejected(name, f"unreadable DICOM data ({_describe(exc)})") from exc


def _read(data: bytes, name: str, limits: Limits) -> Instance:
    if not data:
        raise DicomRejected(name, "empty file")
    if len(data) > limits.max_file_bytes:
        raise DicomRejected(
            name,
            f"file is {len(data)} bytes, above max_file_bytes {limits.max_file_bytes}",
        )
    kind = archive_kind(data[:262])
    if kind is not None:
        raise DicomRejected(
            name, f"{kind} archive, not a DICOM file (only ZIP archives are opened)"
        )
    ds = _parse(data, name, limits)
    identity = _identity(ds, name)
    n_frames = _check_image_header(ds, name, limits)
    _check_declared_lengths(ds, name, pixel_data=True)
    pixels = _decode(ds, name, n_frames, data)
    geometry = [_frame_geometry(ds, i, n_frames) for i in range(n_frames)]
    thickness = _slice_thickness(ds)
    pixels.flags.writeable = False
    return Instance(
        name=name,
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        pixels=pixels,
        positions=tuple(g[0] for g in geometry),
        orientations=tuple(g[1] for g in geometry),
        pixel_spacings_mm=tuple(g[2] for g in geometry),
        slice_thickness_mm=thickness,
        int16_exact=pixels.dtype == np.int16,
        transfer_syntax_uid=str(ds.file_meta.get("TransferSyntaxUID", "")),
        photometric_interpretation=str(ds.PhotometricInterpretation),
        **identity,
    )


def _int16_exact(pixels: np.ndarray) -> bool:
    if float(pixels.min()) < _INT16_MIN or float(pixels.max()) > _INT16_MAX:
        return False
    return bool(np.array_equal(pixels.astype(np.int16), pixels))


def _clip(text: str, limit: int = _MAX_REASON_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _describe(exc: BaseException) -> str:
    message = _clip(str(exc))
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _parse(data: bytes, name: str, limits: Limits) -> Dataset:
    _check_deflate_bound(data, name, limits)
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=False)
    except InvalidDicomError as exc:
        raise DicomRejected(
            name,
            "not a DICOM file (no 128-byte preamble with 'DICM' prefix and "
            "File Meta Information)",
        ) from exc
    except Exception as exc:
        raise DicomRejected(
            name, f"unreadable DICOM header ({_describe(exc)})"
        ) from exc
    if not isinstance(ds, Dataset) or "DirectoryRecordSequence" in ds:
        raise DicomRejected(name, "DICOMDIR index, not an image")
    _check_declared_lengths(ds, name, pixel_data=False)
    return ds


def _check_declared_lengths(ds: Dataset, name: str, *, pixel_data: bool) -> None:
    """Refuse elements that declare more bytes than the file holds: the pixel data
    element alone with ``pixel_data``, every other element without (so the header
    checks can speak first about a file that is also truncated).

    pydicom reads what is there and carries on, so a length field claiming
    gigabytes would otherwise pass as a short (or padded) value.
    """
    for tag in ds.keys():
        if (tag == _PIXEL_DATA_TAG) != pixel_data:
            continue
        raw = ds.get_item(tag)
        declared = getattr(raw, "length", None)
        value = getattr(raw, "value", None)
        if (
            isinstance(declared, int)
            and declared != 0xFFFFFFFF
            and isinstance(value, bytes)
            and declared > len(value)
        ):
            if tag == _PIXEL_DATA_TAG:
                reason = f"pixel data is {len(value)} bytes, expected {declared}"
            else:
                reason = (
                    f"element {tag} declares {declared} bytes but only "
                    f"{len(value)} remain"
                )
            raise DicomRejected(name, f"{reason} (truncated or corrupt file)")


def _check_deflate_bound(data: bytes, name: str, limits: Limits) -> None:
    """Inflate a deflated dataset with a cap before pydicom inflates it unbounded."""
    if b"1.2.840.10008.1.2.1.99" not in data[:4096]:
        return
    try:
        fp = io.BytesIO(data)
        read_preamble(fp, False)
        meta = _read_file_meta_info(fp)
    except Exception as exc:
        raise DicomRejected(name, f"unreadable file meta ({_describe(exc)})") from exc
    if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        return
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    pending = data[fp.tell() :]
    produced = 0
    try:
        while pending:
            produced += len(inflater.decompress(pending, limits.chunk_bytes))
            if produced > limits.max_file_bytes:
                raise DicomRejected(
                    name,
                    "deflated dataset expands beyond max_file_bytes "
                    f"{limits.max_file_bytes}",
                )
            pending = inflater.unconsumed_tail
    except zlib.error as exc:
        raise DicomRejected(name, f"corrupt deflated dataset ({exc})") from exc


def _windows(ds: Dataset) -> tuple[tuple[float, float, str], ...]:
    """Window Center/Width pairs with their explanations; () when absent or bad."""

    def values(keyword: str) -> list[Any]:
        value = ds.get(keyword)
        if value is None:
            return []
        return list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]

    try:
        centers = [float(v) for v in values("WindowCenter")]
        widths = [float(v) for v in values("WindowWidth")]
    except (TypeError, ValueError):
        return ()
    explanations = [str(v).strip() for v in values("WindowCenterWidthExplanation")]
    return tuple(
        (c, w, explanations[i] if i < len(explanations) else "")
        for i, (c, w) in enumerate(zip(centers, widths, strict=False))
        if math.isfinite(c) and math.isfinite(w) and w > 0
    )


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _identity(ds: Dataset, name: str) -> dict[str, Any]:
    uids: dict[str, str] = {}
    uid_warnings: list[str] = []
    for keyword, field_name in (
        ("SOPInstanceUID", "sop_instance_uid"),
        ("SeriesInstanceUID", "series_instance_uid"),
        ("StudyInstanceUID", "study_instance_uid"),
    ):
        value = ds.get(keyword)
        problem = validate_uid(value)
        if problem is not None:
            raise DicomRejected(name, f"invalid UID: {keyword} {problem}")
        if (note := uid_nonconformance(value)) is not None:
            uid_warnings.append(f"{keyword} {note}")
        uids[field_name] = str(value)
    sop_class = ds.get("SOPClassUID") or ds.get("file_meta", Dataset()).get(
        "MediaStorageSOPClassUID"
    )
    if sop_class and (problem := validate_uid(sop_class)) is not None:
        raise DicomRejected(name, f"invalid UID: SOPClassUID {problem}")
    raw_type = ds.get("ImageType") or ()
    image_type = (raw_type,) if isinstance(raw_type, str) else tuple(raw_type)
    image_type = tuple(str(v).strip().upper() for v in image_type)
    try:
        instance_number: int | None = int(ds.get("InstanceNumber"))
    except (TypeError, ValueError):
        instance_number = None
    return {
        **uids,
        "sop_class_uid": str(sop_class or ""),
        "modality": _text(ds, "Modality").upper(),
        "patient_id": _text(ds, "PatientID"),
        "patient_name": _text(ds, "PatientName"),
        "windows": _windows(ds),
        "study_description": _text(ds, "StudyDescription"),
        "series_description": _text(ds, "SeriesDescription"),
        "study_date": _text(ds, "StudyDate"),
        "image_type": image_type,
        "derived": bool(image_type) and image_type[0] == "DERIVED",
        "own_output": is_own_output(ds),
        "instance_number": instance_number,
        "uid_warnings": tuple(uid_warnings),
    }


#: The Manufacturer this app writes in its outputs' Contributing Equipment
#: (``derived.MANUFACTURER``).
OWN_MANUFACTURER = "radiology-denoise"


def is_own_output(ds: Dataset) -> bool:
    """Whether ``ds`` is this app's denoised or residual output."""
    try:
        items = list(ds.get("ContributingEquipmentSequence") or ())
    except (TypeError, ValueError):
        return False
    return any(
        str(item.get("Manufacturer", "")).strip() == OWN_MANUFACTURER
        and str(item.get("ContributionDescription", "")).startswith("AI denoising")
        for item in items
    )


def _sop_class_label(ds: Dataset) -> str:
    uid = ds.get("SOPClassUID") or ds.get("file_meta", Dataset()).get(
        "MediaStorageSOPClassUID"
    )
    if not uid:
        return "unknown SOP class"
    label = UID(str(uid)).name
    return label if label != str(uid) else f"SOP class {uid}"


def _int(ds: Dataset, keyword: str, name: str) -> int | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise DicomRejected(name, f"invalid {keyword} {value!r}") from exc


def _check_image_header(ds: Dataset, name: str, limits: Limits) -> int:
    """Refuse non-images, colour and oversized images; return the frame count."""
    rows = _int(ds, "Rows", name)
    columns = _int(ds, "Columns", name)
    if rows is None or columns is None:
        raise DicomRejected(
            name, f"not an image ({_sop_class_label(ds)} without Rows/Columns)"
        )
    if rows <= 0 or columns <= 0:
        raise DicomRejected(name, f"image is {rows} x {columns} pixels (zero size)")
    n_frames = _int(ds, "NumberOfFrames", name) or 1
    if n_frames < 0:
        raise DicomRejected(name, f"invalid NumberOfFrames {n_frames}")
    pixels = rows * columns * n_frames
    if pixels > limits.max_pixels:
        raise DicomRejected(
            name,
            f"image is {columns} x {rows} x {n_frames} pixels ({pixels}), above "
            f"max_pixels {limits.max_pixels}",
        )
    photometric = _text(ds, "PhotometricInterpretation").upper()
    samples = _int(ds, "SamplesPerPixel", name) or 1
    if samples != 1 or photometric not in _GREYSCALE:
        raise DicomRejected(
            name,
            f"colour image (PhotometricInterpretation {photometric or 'missing'}, "
            f"{samples} samples per pixel); only greyscale images are accepted",
        )
    bits = _int(ds, "BitsAllocated", name)
    if bits not in (8, 16, 32, 64):
        raise DicomRejected(
            name, f"BitsAllocated {bits} is not supported (expected 8, 16, 32 or 64)"
        )
    return n_frames


def _check_codestreams(ds: Dataset, name: str, rows: int, columns: int) -> None:
    """Refuse compressed frames that declare more pixels than the header."""
    for fragment in generate_fragments(ds.PixelData):
        height, width = _codestream_size(fragment)
        if height > rows or width > columns:
            raise DicomRejected(
                name,
                f"compressed frame declares {width} x {height} pixels but the header "
                f"says {columns} x {rows}",
            )


def _codestream_size(fragment: bytes) -> tuple[int, int]:
    """(height, width) declared by a JPEG, JPEG-LS or JPEG 2000 codestream start."""
    if fragment[:2] == b"\xff\xd8":
        info = _get_jpg_parameters(fragment)
        return int(info.get("height", 0)), int(info.get("width", 0))
    offset = 0
    if fragment.startswith(b"\x00\x00\x00\x0cjP  "):
        found = fragment.find(b"jp2c")
        offset = found + 4 if found >= 0 else len(fragment)
    if (
        fragment[offset : offset + 4] == b"\xff\x4f\xff\x51"
        and len(fragment) >= offset + 24
    ):
        xsiz, ysiz, xosiz, yosiz = struct.unpack(
            ">4I", fragment[offset + 8 : offset + 24]
        )
        return max(ysiz - yosiz, 0), max(xsiz - xosiz, 0)
    return 0, 0


def _decode(ds: Dataset, name: str, n_frames: int, data: bytes) -> np.ndarray:
    keyword = next((k for k in _PIXEL_KEYWORDS if k in ds), None)
    if keyword is None:
        raise DicomRejected(
            name, f"not an image: no pixel data ({_sop_class_label(ds)})"
        )
    rows, columns = int(ds.Rows), int(ds.Columns)
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax is None:
        raise DicomRejected(name, "file meta has no TransferSyntaxUID")
    syntax = UID(str(syntax))
    if keyword == "PixelData" and syntax.is_encapsulated:
        try:
            _check_codestreams(ds, name, rows, columns)
        except DicomRejected:
            raise
        except Exception as exc:
            raise DicomRejected(
                name, f"corrupt encapsulated pixel data ({_describe(exc)})"
            ) from exc
    elif keyword == "PixelData":
        expected = get_expected_length(ds, "bytes")
        actual = len(ds.PixelData or b"")
        if actual < expected:
            raise DicomRejected(
                name, f"pixel data is {actual} bytes, expected {expected}"
            )
    try:
        # Compressed data goes to third-party C/C++/Rust decoders: isolate them.
        native = None
        if not syntax.is_encapsulated:
            native = _native_pixels(ds, keyword, syntax, n_frames * rows * columns)
        if native is not None:
            stored = native
        elif syntax.is_encapsulated:
            stored = decode_isolated(data)
        else:
            stored = ds.pixel_array
    except Exception as exc:
        label = syntax.name if syntax.is_encapsulated else "native"
        raise DicomRejected(
            name, f"cannot decode {label} pixel data ({_describe(exc)})"
        ) from exc
    if stored.size != n_frames * rows * columns:
        raise DicomRejected(
            name,
            f"decoded pixel data has shape {stored.shape}, expected "
            f"{n_frames} x {rows} x {columns}",
        )
    stored = stored.reshape(n_frames, rows, columns)
    return _apply_modality_lut(ds, stored, name)


def _native_pixels(
    ds: Dataset, keyword: str, syntax: UID, count: int
) -> np.ndarray | None:
    """The stored values of little-endian native 8/16/32-bit greyscale pixel data
    (one sample per pixel), read straight from the bytes (a read-only array), as
    ``pixel_array`` gives them, unused high bits included (shifted out and
    sign-extended the same way); ``None`` for anything else, which pydicom decodes.
    ``pixel_array``'s general machinery costs several times the reading itself on a
    512 x 512 slice."""
    bits = ds.get("BitsAllocated")
    stored_bits = ds.get("BitsStored")
    representation = ds.get("PixelRepresentation")
    if (
        keyword != "PixelData"
        or (ds.get("SamplesPerPixel") or 1) != 1
        or _text(ds, "PhotometricInterpretation").upper() not in _GREYSCALE
        or not syntax.is_little_endian
        or bits not in (8, 16, 32)
        or representation not in (0, 1)
        or not isinstance(stored_bits, int)
        or not 0 < stored_bits <= bits
    ):
        return None
    kind = "i" if representation == 1 else "u"
    dtype = np.dtype(f"<{kind}{bits // 8}")
    values = np.frombuffer(ds.PixelData, dtype=dtype, count=count)
    if stored_bits < bits:
        shift = bits - stored_bits
        values = np.left_shift(values, shift)
        np.right_shift(values, shift, out=values)
    return values


def _first_item(container: Dataset | None, keyword: str) -> Dataset | None:
    if container is None:
        return None
    seq = container.get(keyword)
    return seq[0] if seq else None


def _functional_groups(
    ds: Dataset, index: int
) -> tuple[Dataset | None, Dataset | None]:
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared = ds.get("SharedFunctionalGroupsSequence")
    frame_item = per_frame[index] if per_frame and index < len(per_frame) else None
    return frame_item, (shared[0] if shared else None)


def _group_value(ds: Dataset, index: int, macro: str, keyword: str) -> Any:
    """A value from the per-frame, then shared functional groups, then top level."""
    for container in _functional_groups(ds, index):
        item = _first_item(container, macro)
        if item is not None and item.get(keyword) not in (None, ""):
            return item.get(keyword)
    return ds.get(keyword)


def _rescale(ds: Dataset, index: int, name: str) -> tuple[float, float] | None:
    for container in (*_functional_groups(ds, index), ds):
        item = (
            container
            if container is ds
            else _first_item(container, "PixelValueTransformationSequence")
        )
        if item is None:
            continue
        slope, intercept = item.get("RescaleSlope"), item.get("RescaleIntercept")
        if slope in (None, "") or intercept in (None, ""):
            continue
        try:
            values = float(slope), float(intercept)
        except (TypeError, ValueError) as exc:
            raise DicomRejected(
                name, f"invalid RescaleSlope/RescaleIntercept {slope!r}/{intercept!r}"
            ) from exc
        if not all(math.isfinite(v) for v in values) or values[0] == 0:
            raise DicomRejected(
                name, f"invalid RescaleSlope/RescaleIntercept {slope!r}/{intercept!r}"
            )
        return values
    return None


def _apply_modality_lut(ds: Dataset, stored: np.ndarray, name: str) -> np.ndarray:
    """Stored values to original units: int16 when every result is a whole number
    within int16 (for integer data with whole rescales decided from each frame's
    extremes, without a float copy), float32 otherwise."""
    rescales = [_rescale(ds, i, name) for i in range(stored.shape[0])]
    if all(r is None for r in rescales) and ds.get("ModalityLUTSequence"):
        out = np.asarray(apply_modality_lut(stored, ds), dtype=np.float32)
    else:
        whole = _whole_units(stored, rescales)
        if whole is not None:
            return whole
        out = stored.astype(np.float32)
        for index, pair in enumerate(rescales):
            if pair is not None and pair != (1.0, 0.0):
                out[index] *= np.float32(pair[0])
                out[index] += np.float32(pair[1])
    return out.astype(np.int16) if _int16_exact(out) else out


def _whole_units(
    stored: np.ndarray, rescales: list[tuple[float, float] | None]
) -> np.ndarray | None:
    """``stored * slope + intercept`` per frame as int16, or ``None`` unless the
    stored values are integers, every slope and intercept a whole number and every
    result within int16. A frame's extremes map to the extremes of its result, so
    two reductions decide it before anything is converted."""
    if stored.dtype.kind not in "iu":
        return None
    pairs = []
    for index, pair in enumerate(rescales):
        slope, intercept = pair or (1.0, 0.0)
        if not (slope.is_integer() and intercept.is_integer()):
            return None
        if max(abs(slope), abs(intercept)) >= 2**31:  # beyond the arithmetic below
            return None
        frame = stored[index]
        low, high = int(frame.min()), int(frame.max())
        ends = (low * int(slope) + int(intercept), high * int(slope) + int(intercept))
        if min(ends) < _INT16_MIN or max(ends) > _INT16_MAX:
            return None
        pairs.append((int(slope), int(intercept)))
    # 8- and 16-bit stored values with such a slope and intercept fit int32 on the
    # way; wider stored values take int64.
    work = np.int32 if stored.dtype.itemsize <= 2 else np.int64
    out = np.empty(stored.shape, dtype=np.int16)
    for index, (slope, intercept) in enumerate(pairs):
        frame = stored[index]
        if slope != 1:
            frame = np.multiply(frame, slope, dtype=work)
        np.add(frame, intercept, out=out[index], dtype=work, casting="unsafe")
    return out


def _floats(value: Any, count: int) -> tuple[float, ...] | None:
    if value is None or isinstance(value, str | bytes):
        return None
    try:
        items = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if len(items) != count or not all(math.isfinite(v) for v in items):
        return None
    return items


def _frame_geometry(
    ds: Dataset, index: int, n_frames: int
) -> tuple[Vec3 | None, Orientation | None, tuple[float, float] | None]:
    orientation = _floats(
        _group_value(ds, index, "PlaneOrientationSequence", "ImageOrientationPatient"),
        6,
    )
    spacing = _floats(
        _group_value(ds, index, "PixelMeasuresSequence", "PixelSpacing"), 2
    )
    per_frame, _ = _functional_groups(ds, index)
    position = _floats(
        _group_value(ds, index, "PlanePositionSequence", "ImagePositionPatient"), 3
    )
    if n_frames > 1 and per_frame is None:
        # Classic multi-frame: only a Grid Frame Offset Vector (RT Dose) places
        # frames other than the first.
        offsets = _floats(ds.get("GridFrameOffsetVector"), n_frames)
        if position is not None and orientation is not None and offsets is not None:
            normal = np.cross(orientation[:3], orientation[3:])
            position = tuple(
                float(v) for v in np.add(position, offsets[index] * normal)
            )
        elif index > 0:
            position = None
    # Lengths are checked by _floats(…, n) above; mypy cannot see them.
    return position, orientation, spacing  # type: ignore[return-value]


def _slice_thickness(ds: Dataset) -> float | None:
    value = _floats([_group_value(ds, 0, "PixelMeasuresSequence", "SliceThickness")], 1)
    return value[0] if value and value[0] > 0 else None
