"""Where a stored series points in the patient, and how the viewer shows each plane.

A series is stored as a (z, y, x) volume: x along the row direction of Image
Orientation (Patient) (its first three cosines), y along the column direction (the
last three), z along their cross product, the order in which ingest sorts the slices
(``volume.py``). DICOM's patient axes are LPS: +x towards the patient's left, +y
posterior, +z head.

:func:`display_geometry` says, for each of the three planes the viewer cuts from the
volume (``axial``: one z slice, ``coronal``: one y row, ``sagittal``: one x column,
the viewer's names for the stored axes), what that plane is in the patient (its
``label``, from the geometry: an oblique-coronal MR acquired slice is "oblique
coronal", not "axial"), how to flip or swap its axes so that it appears in the
radiological convention (axial: patient left on screen right, anterior up; coronal:
left on the right, head up; sagittal: anterior on the left, head up), and the
letters for its four edges. It also says whether reformats can be trusted (positions
known, spacing even, enough slices) and, when not, why.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["REFORMAT_MIN_SLICES", "display_geometry", "direction_letters"]

#: Fewest slices for a coronal or sagittal reformat to be offered.
REFORMAT_MIN_SLICES = 8
#: A plane tilted more than this from the nearest anatomical plane is "oblique".
OBLIQUE_DEGREES = 10.0
#: Components at least this large (of a unit vector) name an edge (e.g. "LA").
_LETTER_MIN = 0.3
_LETTERS = (("R", "L"), ("A", "P"), ("F", "H"))  # -/+ x, y, z (LPS)
#: Screen right and screen down in the patient (LPS), per anatomical plane.
_SCREEN = {
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
}
_NAMES = ("sagittal", "coronal", "axial")  # plane whose normal is x, y, z
_VIEWER_PLANES = ("axial", "coronal", "sagittal")  # slices across stored z, y, x
#: Ingest warnings under which reformats are not geometry to measure on.
_NO_REFORMAT = (
    (
        "ImagePositionPatient or ImageOrientationPatient missing",
        "slice positions are unknown",
    ),
    ("missing slices", "slices are missing"),
    ("uneven slice spacing", "the slice spacing is uneven"),
    ("lie at the same depth", "the slices lie at one depth"),
    ("gantry tilt", "the slices are sheared (gantry tilt)"),
)


def direction_letters(vector: ArrayLike) -> str:
    """Letters of a patient direction (LPS), largest component first: (1, 0, 0) is
    "L", (0, -0.7, 0.7) "AH"; components under 0.3 are left out."""
    v = np.asarray(vector, dtype=np.float64)
    norm = float(np.linalg.norm(v))
    if norm == 0 or not math.isfinite(norm):
        return ""
    v = v / norm
    order = np.argsort(-np.abs(v), kind="stable")
    return "".join(
        _LETTERS[axis][1 if v[axis] > 0 else 0]
        for axis in order
        if abs(v[axis]) >= _LETTER_MIN
    )


def _stored_axes(orientation: Sequence[float]) -> list[np.ndarray] | None:
    """Unit directions of the stored z, y and x axes, or ``None`` when unknown."""
    if len(orientation) != 6:
        return None
    row = np.asarray(orientation[:3], dtype=np.float64)
    column = np.asarray(orientation[3:], dtype=np.float64)
    normal = np.cross(row, column)
    lengths = [float(np.linalg.norm(v)) for v in (normal, column, row)]
    if not all(math.isfinite(n) and n > 1e-6 for n in lengths):
        return None
    return [v / n for v, n in zip((normal, column, row), lengths, strict=True)]


def _patient_axes(axes: list[np.ndarray]) -> tuple[int, int, int]:
    """The patient axis (0 x, 1 y, 2 z) each stored axis is taken to run along:
    the one-to-one assignment with the largest total alignment, so even a
    double-oblique stack (about 45 degrees in two directions) gets one axial, one
    coronal and one sagittal plane, never two of the same."""
    from itertools import permutations

    best = max(
        permutations(range(3)),
        key=lambda perm: sum(abs(float(axes[k][perm[k]])) for k in range(3)),
    )
    return best[0], best[1], best[2]


def _plane(
    through: int, axes: list[np.ndarray] | None, dominant: int = 0
) -> dict[str, Any]:
    """Display of the viewer plane that slices stored axis ``through``, whose
    normal runs along patient axis ``dominant`` (:func:`_patient_axes`)."""
    others = [a for a in range(3) if a != through]
    if axes is None:
        # As stored: columns along x (or y), rows along z shown head-first as before.
        col, row = (2, 1) if through == 0 else (others[1], 0)
        return {
            "label": "as stored" if through == 0 else "reformat",
            "through_axis": through,
            "col_axis": col,
            "col_flip": False,
            "row_axis": row,
            "row_flip": through != 0,
            "markers": None,
        }
    normal = axes[through]
    name = _NAMES[dominant]
    angle = math.degrees(math.acos(min(1.0, abs(float(normal[dominant])))))
    right, down = (np.asarray(v) for v in _SCREEN[name])

    def fit(col: int, row: int) -> float:
        return abs(float(axes[col] @ right)) + abs(float(axes[row] @ down))

    col, row = max(
        ((others[0], others[1]), (others[1], others[0])), key=lambda p: fit(*p)
    )
    col_flip = float(axes[col] @ right) < 0
    row_flip = float(axes[row] @ down) < 0
    screen_right = -axes[col] if col_flip else axes[col]
    screen_down = -axes[row] if row_flip else axes[row]
    return {
        "label": f"oblique {name}" if angle > OBLIQUE_DEGREES else name,
        "plane": name,
        "tilt_degrees": round(angle, 1),
        "through_axis": through,
        "col_axis": col,
        "col_flip": col_flip,
        "row_axis": row,
        "row_flip": row_flip,
        "markers": {
            "left": direction_letters(-screen_right),
            "right": direction_letters(screen_right),
            "top": direction_letters(-screen_down),
            "bottom": direction_letters(screen_down),
        },
    }


def display_geometry(
    orientation: Sequence[float],
    shape: Sequence[int],
    warnings: Sequence[str],
    origin: Sequence[float] = (),
    spacing: Sequence[float] = (),
) -> dict[str, Any]:
    """How the viewer shows a stored series (module docstring).

    Args:
        orientation: the series' Image Orientation (Patient), six cosines, or empty.
        shape: (z, y, x) voxels.
        warnings: the series' ingest warnings (positions missing, uneven spacing).
        origin: the first slice's Image Position (Patient) in mm, or empty.
        spacing: (z, y, x) spacing in mm, or empty.

    Returns:
        ``{"orientation_known", "acquired": label of the stored slices, "planes":
        {"axial"|"coronal"|"sagittal": {"label", "plane", "tilt_degrees",
        "through_axis", "col_axis", "col_flip", "row_axis", "row_flip", "markers":
        {"left", "right", "top", "bottom"} or None}}, "reformats": {"available",
        "reason"}}``; ``plane`` and ``tilt_degrees`` only where the orientation is
        known. With an origin and spacing each plane also has ``location_axis``
        (the patient axis nearest its normal: "z" for axial), ``location_mm`` (the
        first slice's coordinate on it) and ``step_mm`` (per slice, signed), so
        slice k lies at ``location_mm + k * step_mm``.
    """
    axes = _stored_axes([float(v) for v in orientation or ()])
    patient = _patient_axes(axes) if axes is not None else (0, 0, 0)
    planes = {
        name: _plane(k, axes, patient[k]) for k, name in enumerate(_VIEWER_PLANES)
    }
    if axes is not None and len(origin) == 3 and len(spacing) == 3:
        first = np.asarray(origin, dtype=np.float64)
        for k, name in enumerate(_VIEWER_PLANES):
            # The patient coordinate the plane steps along (z for axial), as
            # scanners' Slice Location gives it.
            m = patient[k]
            planes[name]["location_axis"] = "xyz"[m]
            planes[name]["location_mm"] = round(float(first[m]), 3)
            planes[name]["step_mm"] = round(float(spacing[k]) * float(axes[k][m]), 6)
    reasons = []
    if int(shape[0]) < REFORMAT_MIN_SLICES:
        reasons.append(
            f"only {int(shape[0])} slice(s); reformats need {REFORMAT_MIN_SLICES}"
        )
    for needle, reason in _NO_REFORMAT:
        if any(needle in w for w in warnings):
            reasons.append(reason)
    return {
        "orientation_known": axes is not None,
        "acquired": planes["axial"]["label"],
        "planes": planes,
        "reformats": {
            "available": not reasons,
            "reason": "; ".join(reasons) if reasons else None,
        },
    }
