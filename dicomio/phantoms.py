"""Anthropomorphic CT and MR phantoms (2D slices, 3D volumes) with known lesions: what
training, evaluation, the benchmarks and the demo scan are made of."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = [
    "TISSUE_HU",
    "TISSUE_MR",
    "Lesion",
    "Phantom",
    "ct_phantom",
    "mr_phantom",
    "tissue_map",
]

#: Mean attenuation of each tissue class in Hounsfield units (unenhanced values,
#: vessels with arterial contrast).
TISSUE_HU: dict[str, float] = {
    "air": -1000.0,
    "lung": -850.0,
    "fat": -100.0,
    "muscle": 45.0,
    "liver": 60.0,
    "spleen": 50.0,
    "kidney": 35.0,
    "vessel": 180.0,
    "bowel_gas": -900.0,
    "bowel": 20.0,
    "marrow": 250.0,
    "cortical_bone": 900.0,
}

#: T1-weighted-like magnitude of each tissue class, arbitrary units (fat brightest).
TISSUE_MR: dict[str, float] = {
    "air": 0.0,
    "lung": 20.0,
    "fat": 900.0,
    "muscle": 300.0,
    "liver": 450.0,
    "spleen": 350.0,
    "kidney": 400.0,
    "vessel": 120.0,
    "bowel_gas": 0.0,
    "bowel": 250.0,
    "marrow": 650.0,
    "cortical_bone": 40.0,
}

#: Standard deviation of the smooth intra-organ texture, as a fraction of the
#: organ's contrast scale: CT in HU, MR relative to the tissue value.
_TEXTURE_HU = 4.0
_TEXTURE_MR = 0.03


@dataclass(frozen=True)
class Lesion:
    """A low-contrast lesion placed in a phantom.

    Attributes:
        center: voxel coordinates, ``(y, x)`` or ``(z, y, x)``.
        radius_px: radius in pixels.
        contrast: value added to the background (HU for CT, magnitude units for MR).
        organ: tissue class it sits in.
    """

    center: tuple[float, ...]
    radius_px: float
    contrast: float
    organ: str


@dataclass
class Phantom:
    """A clean phantom image with its ground truth.

    Attributes:
        image: float32 array, ``(y, x)`` or ``(z, y, x)``, HU (CT) or magnitude (MR).
        lesion_mask: int16 array of the same shape: 0 background, ``i + 1`` inside
            lesion ``i``.
        lesions: the lesions, in label order.
        labels: uint8 tissue-class map (index into ``tissues``).
        tissues: tissue class names, index 0 is air.
        modality: ``"CT"`` or ``"MR"``.
        pixel_mm: in-plane pixel spacing in millimetres.
        seed: the seed it was generated from.
    """

    image: np.ndarray
    lesion_mask: np.ndarray
    lesions: list[Lesion]
    labels: np.ndarray
    tissues: list[str]
    modality: str
    pixel_mm: float
    seed: int
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Ellipsoid:
    tissue: str
    center: tuple[float, float, float]  # (z, y, x) in units of the half field of view
    axes: tuple[float, float, float]  # semi-axes (z, y, x), same units
    angle: float = 0.0  # in-plane rotation, radians


def _anatomy(rng: np.random.Generator, region: str) -> list[_Ellipsoid]:
    """A random abdomen or thorax as ellipsoids painted in order (later wins)."""
    u = rng.uniform
    body_x, body_y = u(0.72, 0.88), u(0.52, 0.66)
    cy = u(-0.05, 0.05)
    fat = u(0.05, 0.11)
    shapes = [
        _Ellipsoid("fat", (0, cy, 0), (4.0, body_y, body_x)),
        _Ellipsoid("muscle", (0, cy, 0), (4.0, body_y - fat, body_x - fat)),
    ]
    spine_y = cy + body_y - fat - u(0.20, 0.26)
    if region == "thorax":
        for side in (-1, 1):
            shapes.append(
                _Ellipsoid(
                    "lung",
                    (0, cy - 0.02, side * u(0.30, 0.38)),
                    (u(0.9, 1.4), u(0.34, 0.42), u(0.20, 0.26)),
                    u(-0.2, 0.2),
                )
            )
        shapes.append(
            _Ellipsoid("muscle", (0, cy - 0.10, u(0.02, 0.08)), (0.8, 0.2, 0.17))
        )
        shapes.append(_Ellipsoid("vessel", (0, cy - 0.05, 0.02), (3, 0.06, 0.06)))
    else:
        shapes += [
            _Ellipsoid(
                "liver",
                (u(-0.2, 0.2), cy - u(0.0, 0.1), -u(0.25, 0.35)),
                (u(0.6, 1.0), u(0.30, 0.38), u(0.28, 0.36)),
                u(-0.4, 0.4),
            ),
            _Ellipsoid(
                "spleen",
                (u(-0.2, 0.2), cy + u(0.05, 0.15), u(0.42, 0.5)),
                (u(0.3, 0.5), u(0.14, 0.2), u(0.09, 0.13)),
                u(-0.6, 0.6),
            ),
        ]
        for side in (-1, 1):
            shapes.append(
                _Ellipsoid(
                    "kidney",
                    (u(-0.1, 0.1), spine_y - 0.02, side * u(0.22, 0.28)),
                    (u(0.3, 0.5), u(0.09, 0.12), u(0.06, 0.08)),
                    side * u(0.3, 0.7),
                )
            )
        for _ in range(rng.integers(2, 6)):
            center = (0, cy + u(-0.25, 0.15), u(-0.05, 0.35))
            shapes.append(
                _Ellipsoid("bowel", center, (0.5, u(0.05, 0.1), u(0.05, 0.1)))
            )
            if rng.random() < 0.6:
                shapes.append(
                    _Ellipsoid("bowel_gas", center, (0.3, u(0.02, 0.04), u(0.02, 0.05)))
                )
        shapes.append(
            _Ellipsoid("vessel", (0, spine_y - 0.11, -0.04), (3, 0.025, 0.03))
        )
        shapes.append(_Ellipsoid("vessel", (0, spine_y - 0.10, 0.06), (3, 0.03, 0.035)))
    shapes += [
        _Ellipsoid("cortical_bone", (0, spine_y, 0), (3, 0.085, 0.09)),
        _Ellipsoid("marrow", (0, spine_y, 0), (3, 0.07, 0.075)),
        _Ellipsoid("cortical_bone", (0, spine_y + 0.12, 0), (3, 0.04, 0.022)),
    ]
    for _ in range(rng.integers(2, 5)):  # small vessels crossing the organs
        shapes.append(
            _Ellipsoid(
                "vessel",
                (u(-1, 1), cy + u(-0.3, 0.2), u(-0.5, 0.5)),
                (u(0.5, 2.0), u(0.008, 0.018), u(0.008, 0.018)),
            )
        )
    return shapes


def _axes(shape: tuple[int, ...], z_offset: float) -> tuple[np.ndarray, ...]:
    """The z, y and x coordinates of the voxel centres, in half fields of view."""
    ny, nx = shape[-2:]
    half = max(ny, nx) / 2.0
    y = (np.arange(ny) - (ny - 1) / 2.0) / half
    x = (np.arange(nx) - (nx - 1) / 2.0) / half
    if len(shape) == 2:
        z = np.array([z_offset])
    else:
        z = z_offset + (np.arange(shape[0]) - (shape[0] - 1) / 2.0) / half
    return z, y, x


def _paint(
    shapes: list[_Ellipsoid], shape: tuple[int, ...], z_offset: float
) -> tuple[np.ndarray, list[str]]:
    z, y, x = _axes(shape, z_offset)
    tissues = ["air"] + sorted({s.tissue for s in shapes})
    labels = np.zeros((len(z), len(y), len(x)), dtype=np.uint8)
    for s in shapes:
        cos, sin = np.cos(s.angle), np.sin(s.angle)
        dy, dx = y[:, None] - s.center[1], x[None, :] - s.center[2]
        ry = cos * dy + sin * dx
        rx = -sin * dy + cos * dx
        across = ((z - s.center[0]) / s.axes[0]) ** 2
        down, along = (ry / s.axes[1]) ** 2, (rx / s.axes[2]) ** 2
        # Slice by slice within the ellipse's in-plane box, so a 300 x 512 x 512
        # volume needs no full-size float grids; every term is >= 0, so voxels
        # outside the box or the slab are outside the ellipsoid exactly.
        rows = np.flatnonzero((down <= 1.0).any(axis=1))
        cols = np.flatnonzero((along <= 1.0).any(axis=0))
        if not len(rows) or not len(cols):
            continue
        box = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        down, along = down[box], along[box]
        label = tissues.index(s.tissue)
        for k in np.flatnonzero(across <= 1.0):
            labels[k][box][(across[k] + down) + along <= 1.0] = label
    return labels.reshape(shape), tissues


def _smooth_field(
    rng: np.random.Generator, shape: tuple[int, ...], sigma_px: float
) -> np.ndarray:
    noise = rng.standard_normal(shape).astype(np.float32)
    field_ = ndimage.gaussian_filter(noise, sigma_px)
    return field_ / max(float(field_.std()), 1e-6)


def _place_lesions(
    rng: np.random.Generator,
    labels: np.ndarray,
    tissues: list[str],
    count: int,
    radius_px: tuple[float, float],
    contrast: tuple[float, float],
    hosts: tuple[str, ...],
) -> tuple[np.ndarray, list[Lesion]]:
    mask = np.zeros(labels.shape, dtype=np.int16)
    lesions: list[Lesion] = []
    host_ids = [tissues.index(t) for t in hosts if t in tissues]
    if not host_ids or count <= 0:
        return mask, lesions
    coords = np.indices(labels.shape, dtype=np.float32)
    for _ in range(count * 40):
        if len(lesions) == count:
            break
        radius = float(rng.uniform(*radius_px))
        margin = int(np.ceil(radius + 10))
        # A lesion must sit wholly inside one host organ, with a 7-pixel ring of
        # that organ around it, so its contrast against the local background (the
        # ring the metrics measure) is well defined.
        center = tuple(
            float(rng.integers(min(margin, n // 2), max(n - margin, n // 2 + 1)))
            for n in labels.shape
        )
        index = tuple(int(c) for c in center)
        host = int(labels[index])
        if host not in host_ids:
            continue
        dist2 = sum((coords[i] - center[i]) ** 2 for i in range(labels.ndim))
        ring = dist2 <= (radius + 7.0) ** 2
        if np.any(labels[ring] != host) or np.any(mask[ring] > 0):
            continue
        sign = 1.0 if rng.random() < 0.5 else -1.0
        lesions.append(
            Lesion(center, radius, sign * float(rng.uniform(*contrast)), tissues[host])
        )
        mask[dist2 <= radius**2] = len(lesions)
    return mask, lesions


def _layout(
    rng: np.random.Generator, shape: tuple[int, ...], region: str | None
) -> tuple[np.ndarray, list[str], str]:
    """The tissue map of a phantom: the first draws from its seed's generator."""
    region = region or ("thorax" if rng.random() < 0.3 else "abdomen")
    if region not in ("abdomen", "thorax"):
        raise ValueError(f"region must be 'abdomen' or 'thorax', got {region!r}")
    shapes = _anatomy(rng, region)
    z_offset = float(rng.uniform(-0.3, 0.3))
    labels, tissues = _paint(shapes, shape, z_offset)
    return labels, tissues, region


def tissue_map(
    shape: tuple[int, ...], *, seed: int = 0, region: str | None = None
) -> tuple[np.ndarray, list[str]]:
    """The anatomy of :func:`ct_phantom` and :func:`mr_phantom` alone.

    The same seed and region give the same organs as those phantoms, without
    their texture, blur and lesions, so a tissue map is cheap at any size (a
    300 x 512 x 512 volume in seconds).

    Args:
        shape: ``(y, x)`` or ``(z, y, x)``, every size >= 1.
        seed: random seed, default 0.
        region: ``"abdomen"`` or ``"thorax"``; default picks one from the seed.

    Returns:
        ``(labels, tissues)``: a uint8 map of ``shape`` indexing ``tissues``
        (index 0 is air), as :attr:`Phantom.labels` and :attr:`Phantom.tissues`.

    Raises:
        ValueError: on a shape that is not 2 or 3 positive sizes, or an unknown
            region.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ValueError(
            f"shape must be (y, x) or (z, y, x) of positive sizes, got {shape}"
        )
    labels, tissues, _ = _layout(np.random.default_rng(seed), shape, region)
    return labels, tissues


def _phantom(
    modality: str,
    shape: tuple[int, ...],
    seed: int,
    region: str | None,
    lesion_count: int,
    lesion_radius_px: tuple[float, float] | None,
    lesion_contrast: tuple[float, float],
    pixel_mm: float | None,
) -> Phantom:
    if len(shape) not in (2, 3) or min(shape) < 16:
        raise ValueError(
            f"shape must be (y, x) or (z, y, x) with every size >= 16, got {shape}"
        )
    if lesion_contrast[0] < 0 or lesion_contrast[0] > lesion_contrast[1]:
        raise ValueError(
            f"lesion_contrast must be (low, high) with 0 <= low <= high, got "
            f"{lesion_contrast}"
        )
    rng = np.random.default_rng(seed)
    labels, tissues, region = _layout(rng, shape, region)
    n = max(shape[-2:])
    pixel_mm = pixel_mm if pixel_mm is not None else 360.0 / n
    values = TISSUE_HU if modality == "CT" else TISSUE_MR
    table = np.array([values[t] for t in tissues], dtype=np.float32)
    image = table[labels]
    # Smooth texture inside soft tissue at two scales, scaled per tissue; then a
    # slight blur for the partial-volume edges a scanner's point spread gives.
    texture = 0.5 * _smooth_field(rng, labels.shape, n / 24) + 0.6 * _smooth_field(
        rng, labels.shape, max(1.0, n / 512)
    )
    if modality == "CT":
        texture *= _TEXTURE_HU
        texture[np.isin(labels, [tissues.index(t) for t in ("air",)])] = 0.0
    else:
        texture *= _TEXTURE_MR * image
    image = image + texture
    image = ndimage.gaussian_filter(image, 0.6)
    if lesion_radius_px is None:
        lesion_radius_px = (max(2.0, n / 100), max(3.0, n / 40))
    mask, lesions = _place_lesions(
        rng,
        labels,
        tissues,
        lesion_count,
        lesion_radius_px,
        lesion_contrast,
        ("liver", "spleen", "muscle", "kidney"),
    )
    if modality == "MR":
        # MR lesion contrast is relative: lesion_contrast is read as percent.
        lesions = [
            Lesion(
                les.center,
                les.radius_px,
                les.contrast / 100.0 * values[les.organ],
                les.organ,
            )
            for les in lesions
        ]
    if lesions:
        offsets = np.zeros(len(lesions) + 1, dtype=np.float32)
        offsets[1:] = [les.contrast for les in lesions]
        # Soft edge (0.5 px) so the lesion is not aliased, centre at full contrast.
        dist_field = np.zeros(mask.shape, dtype=np.float32)
        coords = np.indices(mask.shape, dtype=np.float32)
        for i, les in enumerate(lesions, start=1):
            dist = np.sqrt(
                sum((coords[k] - les.center[k]) ** 2 for k in range(mask.ndim))
            )
            weight = np.clip(les.radius_px + 0.5 - dist, 0.0, 1.0)
            dist_field += weight * offsets[i]
        image = image + dist_field
    if modality == "MR":
        image = np.maximum(image, 0.0)
    return Phantom(
        image=image.astype(np.float32),
        lesion_mask=mask,
        lesions=lesions,
        labels=labels,
        tissues=tissues,
        modality=modality,
        pixel_mm=float(pixel_mm),
        seed=seed,
        extra={"region": region},
    )


def ct_phantom(
    shape: tuple[int, ...] = (512, 512),
    *,
    seed: int = 0,
    region: str | None = None,
    lesion_count: int = 4,
    lesion_radius_px: tuple[float, float] | None = None,
    lesion_contrast_hu: tuple[float, float] = (5.0, 15.0),
    pixel_mm: float | None = None,
) -> Phantom:
    """An anthropomorphic CT phantom in HU with low-contrast lesions.

    Args:
        shape: ``(y, x)`` for a slice or ``(z, y, x)`` for a volume, default 512x512.
        seed: random seed; the same seed gives the same phantom.
        region: ``"abdomen"`` or ``"thorax"``; default picks one from the seed.
        lesion_count: lesions to place (fewer when the organs lack room), default 4.
        lesion_radius_px: range of lesion radii in pixels, default scales with size
            (about 2.5-7 mm at a 360 mm field of view).
        lesion_contrast_hu: range of absolute lesion contrast, default 5-15 HU; the
            sign is random (hypo- or hyper-dense).
        pixel_mm: pixel spacing, default a 360 mm field of view.

    Returns:
        The phantom; ``image`` in HU (air -1000).
    """
    return _phantom(
        "CT",
        tuple(shape),
        seed,
        region,
        lesion_count,
        lesion_radius_px,
        lesion_contrast_hu,
        pixel_mm,
    )


def mr_phantom(
    shape: tuple[int, ...] = (256, 256),
    *,
    seed: int = 0,
    region: str | None = None,
    lesion_count: int = 4,
    lesion_radius_px: tuple[float, float] | None = None,
    lesion_contrast_percent: tuple[float, float] = (5.0, 15.0),
    pixel_mm: float | None = None,
) -> Phantom:
    """An anthropomorphic T1-weighted-like MR phantom in magnitude units (0-1000).

    Args:
        shape: ``(y, x)`` or ``(z, y, x)``, default 256x256.
        seed: random seed.
        region: ``"abdomen"`` or ``"thorax"``; default from the seed.
        lesion_count: lesions to place, default 4.
        lesion_radius_px: range of lesion radii in pixels, default scales with size.
        lesion_contrast_percent: range of absolute lesion contrast relative to the
            host tissue, in percent, default 5-15.
        pixel_mm: pixel spacing, default a 360 mm field of view.

    Returns:
        The phantom; ``image`` is a non-negative magnitude (fat about 900).
    """
    return _phantom(
        "MR",
        tuple(shape),
        seed,
        region,
        lesion_count,
        lesion_radius_px,
        lesion_contrast_percent,
        pixel_mm,
    )
