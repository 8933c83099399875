"""Group decoded instances into series and stack each into a sorted volume."""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from .reader import Instance, Orientation, Vec3

__all__ = ["Assembly", "SeriesVolume", "SliceRef", "assemble_series"]

logger = logging.getLogger(__name__)

# Orientation cosines and pixel spacings closer than these are treated as equal.
_ORIENTATION_TOL = 1e-3
_SPACING_TOL_MM = 1e-3
# Slices closer than this along the normal occupy the same position.
_POSITION_TOL_MM = 1e-3
# A spacing further than this fraction from the median is uneven.
_UNEVEN_FRACTION = 0.05
_MAX_LISTED = 5


@dataclass(frozen=True)
class SliceRef:
    """Where one slice of a volume came from.

    Args:
        sop_instance_uid: SOP Instance UID of the source instance.
        frame_index: 0-based frame within that instance (0 for single frame).
        name: member display name of the source file.
        sha256: hex digest of the source file.
        position: Image Position (Patient) of the slice in mm, or ``None``.
    """

    sop_instance_uid: str
    frame_index: int
    name: str
    sha256: str
    position: Vec3 | None


@dataclass(frozen=True, eq=False)
class SeriesVolume:
    """One series stacked into a volume, sorted along the slice normal.

    Args:
        series_instance_uid: Series Instance UID.
        study_instance_uid: Study Instance UID.
        patient_id: Patient ID shared by every slice.
        modality: Modality, e.g. ``"CT"``.
        description: Series Description, else Study Description.
        study_date: Study Date (``YYYYMMDD``) or ``""``.
        sop_class_uid: SOP Class UID of the first slice.
        frames: per slice, a read-only (y, x) view of the decoded instance, in
            original units (HU for CT), int16 or float32 as the instance keeps
            them (:attr:`Instance.pixels`); slice order is z, which
            increases along the normal (row cosines x column cosines). The slices
            are not stacked: :meth:`iter_stored` streams them to storage without
            a second copy of the series in memory.
        spacing_mm: (z, y, x) voxel spacing in mm; z is the median distance
            between slice positions.
        origin: Image Position (Patient) of slice 0 in mm, or ``None`` when
            positions are missing.
        orientation: row then column direction cosines, or ``None``.
        slice_positions: per slice, Image Position (Patient) in mm or ``None``.
        slices: per slice, its source (:class:`SliceRef`).
        warnings: human-readable notes (missing slices, uneven spacing,
            fallback ordering).
        derived: ``True`` when any source instance is this app's own output
            (never denoised again).
        scanner_derived: ``True`` when any source instance is DERIVED and not
            this app's output (a scanner's MPR, another tool's result): it may be
            denoised, and says so.
        int16_exact: every source instance is :attr:`Instance.int16_exact` (checked
            as each file is decoded, on the decoding threads).
    """

    series_instance_uid: str
    study_instance_uid: str
    patient_id: str
    modality: str
    description: str
    study_date: str
    sop_class_uid: str
    frames: tuple[np.ndarray, ...]
    spacing_mm: tuple[float, float, float]
    origin: Vec3 | None
    orientation: Orientation | None
    slice_positions: tuple[Vec3 | None, ...]
    slices: tuple[SliceRef, ...]
    warnings: tuple[str, ...]
    derived: bool
    scanner_derived: bool
    int16_exact: bool = False

    @property
    def shape(self) -> tuple[int, int, int]:
        """(z, y, x) voxels."""
        y, x = self.frames[0].shape
        return len(self.frames), int(y), int(x)

    @property
    def volume(self) -> np.ndarray:
        """The slices stacked into a new read-only float32 (z, y, x) array; this
        copies the whole series, so storage streams :meth:`iter_stored` instead."""
        volume = np.stack(self.frames, dtype=np.float32)
        volume.flags.writeable = False
        return volume

    def storage_dtype(self) -> np.dtype:
        """int16 when every voxel is a whole number in its range (CT in HU, most
        MR), which halves the stored volume losslessly; float32 otherwise."""
        return np.dtype(np.int16 if self.int16_exact else np.float32)

    def iter_stored(self, dtype: np.dtype) -> Iterator[np.ndarray]:
        """The slices in z order, each converted to ``dtype`` on its own."""
        for frame in self.frames:
            yield frame.astype(dtype, copy=False)

    @property
    def n_instances(self) -> int:
        """Number of distinct source instances (SOP Instance UIDs)."""
        return len({ref.sop_instance_uid for ref in self.slices})


@dataclass(frozen=True)
class Assembly:
    """Result of :func:`assemble_series`.

    Args:
        series: assembled volumes, in order of first appearance.
        rejections: (member name, reason) for every instance left out.
    """

    series: list[SeriesVolume] = field(default_factory=list)
    rejections: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class _Slice:
    instance: Instance
    frame: int
    rank: int
    distance: float | None = None

    @property
    def position(self) -> Vec3 | None:
        return self.instance.positions[self.frame]


def assemble_series(instances: Iterable[Instance]) -> Assembly:
    """Group instances by Series Instance UID and build one volume per series.

    Per series: identical re-uploads (same SOP Instance UID and sha256) are
    dropped silently; a different file reusing a SOP Instance UID is rejected;
    a series mixing Patient IDs is rejected whole; the largest group of
    instances sharing rows, columns, orientation and pixel spacing is kept
    and the others rejected; multi-frame instances expand into slices;
    slices are sorted by their position projected on the slice normal (by
    Instance Number, with a warning, when positions are missing); slices at
    the same position from different instances are rejected; missing slices
    and uneven spacing become warnings.

    Args:
        instances: decoded instances, in upload order.

    Returns:
        An :class:`Assembly` with the volumes and the per-file rejections.
    """
    groups: dict[str, list[Instance]] = {}
    for instance in instances:
        groups.setdefault(instance.series_instance_uid, []).append(instance)
    result = Assembly()
    for uid, members in groups.items():
        volume = _assemble_one(uid, members, result.rejections)
        if volume is not None:
            result.series.append(volume)
    return result


def _reject(rejections: list[tuple[str, str]], instance: Instance, reason: str) -> None:
    rejections.append((instance.name, reason))


#: Rejection reasons that start so are duplicates, not errors: the same image again.
DUPLICATE_PREFIX = "duplicate of "


def same_image(a: Instance, b: Instance) -> bool:
    """Whether two files hold the same image: the same identifying content (UIDs,
    patient, study, series, type, number, windows), the same decoded pixels (after
    the Modality LUT) and the same geometry, whatever their transfer syntax (a
    lossless transcode is the same image; an edited name is not)."""
    fields = (
        "sop_instance_uid",
        "series_instance_uid",
        "study_instance_uid",
        "sop_class_uid",
        "modality",
        "patient_id",
        "patient_name",
        "study_date",
        "study_description",
        "series_description",
        "image_type",
        "instance_number",
        "windows",
        "slice_thickness_mm",
        "photometric_interpretation",
    )
    return (
        all(getattr(a, f) == getattr(b, f) for f in fields)
        and a.pixels.shape == b.pixels.shape
        and bool(np.array_equal(a.pixels, b.pixels))
        and a.positions == b.positions
        and a.orientations == b.orientations
        and a.pixel_spacings_mm == b.pixel_spacings_mm
    )


def duplicate_reason(instance: Instance, first: Instance, first_name: str) -> str:
    """The report for ``instance``, which repeats ``first`` (seen in this upload or
    stored as ``first_name``)."""
    if instance.transfer_syntax_uid != first.transfer_syntax_uid:
        how = (
            f"in another transfer syntax ({_syntax(instance)}, the first "
            f"{_syntax(first)})"
        )
    else:
        how = "encoded differently"
    return (
        f"{DUPLICATE_PREFIX}{first_name}: the same image (SOPInstanceUID "
        f"{instance.sop_instance_uid}, identical pixels and geometry) {how}; kept once"
    )


def _syntax(instance: Instance) -> str:
    from pydicom.uid import UID

    uid = UID(instance.transfer_syntax_uid or "")
    return (
        uid.name if uid.is_valid and uid.name != str(uid) else (str(uid) or "unknown")
    )


def _dedupe(
    members: Sequence[Instance], rejections: list[tuple[str, str]]
) -> list[Instance]:
    seen: dict[str, Instance] = {}
    kept = []
    for instance in members:
        first = seen.get(instance.sop_instance_uid)
        if first is None:
            seen[instance.sop_instance_uid] = instance
            kept.append(instance)
        elif first.sha256 != instance.sha256:
            _reject(
                rejections,
                instance,
                duplicate_reason(instance, first, first.name)
                if same_image(first, instance)
                else f"duplicate SOPInstanceUID {instance.sop_instance_uid} with "
                f"different content (first seen in {first.name})",
            )
    return kept


def _close(a: Sequence[float] | None, b: Sequence[float] | None, tol: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def _describe_grid(instance: Instance) -> str:
    orientation = instance.orientations[0]
    spacing = instance.pixel_spacings_mm[0]
    text = f"{instance.columns}x{instance.rows}"
    text += f", orientation {_fmt(orientation)}" if orientation else ", no orientation"
    if spacing:
        text += f", pixel spacing {_fmt(spacing)} mm"
    return text


def _fmt(values: Sequence[float] | None) -> str:
    if values is None:
        return "(none)"
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def _same_grid(a: Instance, b: Instance) -> bool:
    return (
        a.rows == b.rows
        and a.columns == b.columns
        and _close(a.orientations[0], b.orientations[0], _ORIENTATION_TOL)
        and _close(a.pixel_spacings_mm[0], b.pixel_spacings_mm[0], _SPACING_TOL_MM)
    )


def _largest_grid(
    members: Sequence[Instance], rejections: list[tuple[str, str]]
) -> list[Instance]:
    consistent = []
    for instance in members:
        if any(
            not _close(o, instance.orientations[0], _ORIENTATION_TOL)
            for o in instance.orientations
        ):
            _reject(
                rejections,
                instance,
                "frames of this object have different orientations",
            )
        else:
            consistent.append(instance)
    grids: list[list[Instance]] = []
    for instance in consistent:
        for grid in grids:
            if _same_grid(grid[0], instance):
                grid.append(instance)
                break
        else:
            grids.append([instance])
    if not grids:
        return []
    keep = max(grids, key=lambda g: sum(i.n_frames for i in g))
    for grid in grids:
        if grid is keep:
            continue
        for instance in grid:
            _reject(
                rejections,
                instance,
                f"image grid {_describe_grid(instance)} does not match the series' "
                f"{_describe_grid(keep[0])}",
            )
    return keep


def _majority_study(
    uid: str, members: Sequence[Instance], rejections: list[tuple[str, str]]
) -> list[Instance]:
    """Keep the files of the study most of the series belongs to; refuse the rest.

    A SeriesInstanceUID is unique to one study; files that reuse it under another
    StudyInstanceUID come from elsewhere and must not be filed in this study.
    """
    studies = Counter(m.study_instance_uid for m in members)
    if len(studies) <= 1:
        return list(members)
    majority, _ = studies.most_common(1)[0]
    kept = []
    for instance in members:
        if instance.study_instance_uid == majority:
            kept.append(instance)
        else:
            _reject(
                rejections,
                instance,
                f"series {uid} belongs to StudyInstanceUID {majority}, but this file "
                f"says {instance.study_instance_uid}",
            )
    return kept


def _assemble_one(
    uid: str, members: Sequence[Instance], rejections: list[tuple[str, str]]
) -> SeriesVolume | None:
    members = _dedupe(members, rejections)
    patients = sorted({m.patient_id for m in members})
    if len(patients) > 1:
        for instance in members:
            _reject(
                rejections,
                instance,
                f"series {uid} mixes patients ({', '.join(map(repr, patients))}); "
                "the whole series was refused",
            )
        return None
    members = _majority_study(uid, members, rejections)
    members = _largest_grid(members, rejections)
    if not members:
        return None
    warnings: list[str] = []
    slices = [
        _Slice(m, f, rank) for rank, m in enumerate(members) for f in range(m.n_frames)
    ]
    orientation = members[0].orientations[0]
    if orientation is not None and all(s.position is not None for s in slices):
        normal = np.cross(orientation[:3], orientation[3:])
        for s in slices:
            s.distance = float(np.dot(s.position, normal))  # type: ignore[arg-type]
        slices.sort(
            key=lambda s: (s.distance, s.instance.instance_number or 0, s.frame)
        )
        slices = _drop_duplicate_positions(slices, rejections)
        if not slices:
            return None
        z_spacing = _z_spacing_from_positions(slices, warnings)
        _warn_if_sheared(slices, normal, warnings)
    else:
        missing = sum(s.position is None for s in slices)
        warnings.append(
            f"ImagePositionPatient or ImageOrientationPatient missing on {missing} of "
            f"{len(slices)} slices; slices ordered by InstanceNumber"
        )
        slices.sort(key=lambda s: (s.instance.instance_number or 0, s.frame))
        z_spacing = _z_spacing_fallback(members, warnings)
    first = slices[0].instance
    pixel_spacing = first.pixel_spacings_mm[0]
    if pixel_spacing is None or min(pixel_spacing) <= 0:
        warnings.append("PixelSpacing missing; in-plane spacing set to 1 mm")
        pixel_spacing = (1.0, 1.0)
    odd_uids = sorted({w for s in slices for w in s.instance.uid_warnings})
    if odd_uids:
        warnings.append(
            f"UIDs kept as written though not DICOM-conformant ({len(odd_uids)}, e.g. "
            f"{odd_uids[0]}); other systems may refuse them"
        )
    for note in warnings:
        logger.info("series %s: %s", uid, note)
    return SeriesVolume(
        series_instance_uid=uid,
        study_instance_uid=first.study_instance_uid,
        patient_id=first.patient_id,
        modality=first.modality,
        description=first.series_description or first.study_description,
        study_date=first.study_date,
        sop_class_uid=first.sop_class_uid,
        frames=tuple(s.instance.pixels[s.frame] for s in slices),
        spacing_mm=(z_spacing, float(pixel_spacing[0]), float(pixel_spacing[1])),
        origin=slices[0].position,
        orientation=orientation,
        slice_positions=tuple(s.position for s in slices),
        slices=tuple(
            SliceRef(
                sop_instance_uid=s.instance.sop_instance_uid,
                frame_index=s.frame,
                name=s.instance.name,
                sha256=s.instance.sha256,
                position=s.position,
            )
            for s in slices
        ),
        warnings=tuple(warnings),
        derived=any(m.own_output for m in members),
        scanner_derived=any(m.derived and not m.own_output for m in members),
        int16_exact=all(m.int16_exact for m in members),
    )


def _drop_duplicate_positions(
    slices: list[_Slice], rejections: list[tuple[str, str]]
) -> list[_Slice]:
    """Reject instances that put a slice where another instance already has one."""
    refused: set[str] = set()
    previous: _Slice | None = None
    for current in slices:
        assert current.distance is not None
        if (
            previous is not None
            and previous.distance is not None
            and (current.distance - previous.distance <= _POSITION_TOL_MM)
        ):
            keeper, later = sorted((previous, current), key=lambda s: s.rank)
            if later.instance is keeper.instance:
                reason = (
                    f"several frames at position {_fmt(current.position)}; "
                    "multi-phase or 4-D objects are not supported"
                )
            else:
                reason = (
                    f"slice at position {_fmt(current.position)} duplicates "
                    f"{keeper.instance.name} "
                    f"(SOPInstanceUID {keeper.instance.sop_instance_uid})"
                )
            if later.instance.sop_instance_uid not in refused:
                refused.add(later.instance.sop_instance_uid)
                _reject(rejections, later.instance, reason)
        previous = current
    return [s for s in slices if s.instance.sop_instance_uid not in refused]


def _z_spacing_fallback(members: Sequence[Instance], warnings: list[str]) -> float:
    thickness = next(
        (m.slice_thickness_mm for m in members if m.slice_thickness_mm), None
    )
    if thickness is None:
        warnings.append(
            "z spacing unknown (no positions, no SliceThickness); set to 1 mm"
        )
        return 1.0
    warnings.append(f"z spacing taken from SliceThickness ({thickness:.4g} mm)")
    return float(thickness)


#: Slices stepping more than this many degrees off their own normal are sheared
#: (a tilted gantry): the stored volume is not a rectangular grid.
SHEAR_DEGREES = 1.0


def _warn_if_sheared(
    slices: list[_Slice], normal: np.ndarray, warnings: list[str]
) -> None:
    """Warn when the slices step along another direction than their normal (CT
    gantry tilt): reformats of the stored grid would be sheared."""
    if len(slices) < 2:
        return
    step = np.asarray(slices[-1].position, dtype=np.float64) - np.asarray(
        slices[0].position, dtype=np.float64
    )
    length = float(np.linalg.norm(step)) * float(np.linalg.norm(normal))
    if length == 0:
        return
    cosine = abs(float(np.dot(step, normal))) / length
    angle = math.degrees(math.acos(min(1.0, cosine)))
    if angle > SHEAR_DEGREES:
        warnings.append(
            f"gantry tilt: the slices step {angle:.1f} degrees off their normal, so "
            "the volume is sheared; coronal and sagittal reformats of it would be "
            "distorted"
        )


def _z_spacing_from_positions(slices: list[_Slice], warnings: list[str]) -> float:
    if len(slices) == 1:
        thickness = slices[0].instance.slice_thickness_mm
        if thickness is None:
            warnings.append(
                "single slice without SliceThickness; z spacing set to 1 mm"
            )
        return float(thickness or 1.0)
    distances = np.array([s.distance for s in slices], dtype=np.float64)
    steps = np.diff(distances)
    median = float(np.median(steps))
    if not (math.isfinite(median) and median > 0):
        # Most slices share one depth (positions differ only within the plane):
        # no spacing can be read from them.
        thickness = slices[0].instance.slice_thickness_mm
        warnings.append(
            "most slices lie at the same depth along the slice normal; z spacing "
            + (
                f"from SliceThickness ({thickness:.4g} mm)"
                if thickness
                else "set to 1 mm"
            )
        )
        return float(thickness or 1.0)
    gaps, uneven = [], []
    for k, step in enumerate(steps):
        ratio = step / median
        if abs(ratio - 1.0) <= _UNEVEN_FRACTION:
            continue
        between = (
            f"between {_fmt(slices[k].position)} and {_fmt(slices[k + 1].position)}"
        )
        multiple = round(ratio)
        if multiple >= 2 and abs(ratio - multiple) <= _UNEVEN_FRACTION * multiple:
            gaps.append(
                f"{step:.3g} mm gap {between} ({multiple - 1} slice(s) missing)"
            )
        else:
            uneven.append(f"{step:.3g} mm {between}")
    for label, items in (("missing slices", gaps), ("uneven slice spacing", uneven)):
        if items:
            shown = "; ".join(items[:_MAX_LISTED])
            more = (
                f"; and {len(items) - _MAX_LISTED} more"
                if len(items) > _MAX_LISTED
                else ""
            )
            warnings.append(f"{label} (median spacing {median:.4g} mm): {shown}{more}")
    return median
