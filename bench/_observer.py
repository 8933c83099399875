"""Low-contrast detectability: a CCT189-like phantom and a Laguerre-Gauss CHO.

Follows the conventions of the FDA's LCD-CT tool (RST24MD08.01): four inserts
(3, 5, 7 and 10 mm at 14, 7, 5 and 3 HU) in a 20 cm water cylinder; for each
insert, square regions of interest four times the largest insert's diameter across,
centred on the insert; a channelised Hotelling observer with five Laguerre-Gauss
channels of width two thirds of the insert's diameter; ten "readers", each training
the observer's template on a random half of the images and scoring the other half;
the AUC is the readers' mean. Written from the method's description, not from the
tool's code; ``bench/results/lcd_observer_check.md`` compares the two on the tool's
own sample images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "INSERTS",
    "Cct189",
    "cct189",
    "auc",
    "laguerre_gauss_channels",
    "cho_auc",
]

#: (diameter in mm, contrast in HU) of the four low-contrast inserts.
INSERTS: tuple[tuple[float, float], ...] = (
    (3.0, 14.0),
    (5.0, 7.0),
    (7.0, 5.0),
    (10.0, 3.0),
)
#: Phantom diameter in mm.
CYLINDER_MM = 200.0
#: Distance of the inserts' centres from the phantom's centre, mm (on diagonals).
_INSERT_RING_MM = 40.0
_SUPERSAMPLE = 4


@dataclass(frozen=True)
class Cct189:
    """The phantom without (``absent``) and with (``present``) its inserts, HU, and
    each insert's mask, diameter in pixels and contrast."""

    absent: np.ndarray
    present: np.ndarray
    masks: tuple[np.ndarray, ...]
    diameters_px: tuple[float, ...]
    contrasts_hu: tuple[float, ...]
    pixel_mm: float


def cct189(size: int = 256, pixel_mm: float = 0.862) -> Cct189:
    """A MITA CCT189-like slice: water cylinder in air with four inserts, edges
    partial-volumed by 4x4 supersampling.

    Args:
        size: pixels across, default 256.
        pixel_mm: pixel spacing, default 0.862 (the cylinder spans 232 pixels, as
            in the LCD-CT tool's sample images).
    """
    fine = size * _SUPERSAMPLE
    coords = (np.arange(fine) + 0.5) / _SUPERSAMPLE * pixel_mm - size * pixel_mm / 2
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    cylinder = np.hypot(yy, xx) <= CYLINDER_MM / 2
    absent_fine = np.where(cylinder, 0.0, -1000.0)
    present_fine = absent_fine.copy()
    masks = []
    offset = _INSERT_RING_MM / math.sqrt(2)
    centres = (
        (-offset, offset),
        (-offset, -offset),
        (offset, -offset),
        (offset, offset),
    )
    for (diameter, contrast), (cy, cx) in zip(INSERTS, centres, strict=True):
        disc = np.hypot(yy - cy, xx - cx) <= diameter / 2
        present_fine[disc] += contrast
        masks.append(_down(disc.astype(np.float64)) >= 0.5)
    return Cct189(
        absent=_down(absent_fine).astype(np.float32),
        present=_down(present_fine).astype(np.float32),
        masks=tuple(masks),
        diameters_px=tuple(d / pixel_mm for d, _ in INSERTS),
        contrasts_hu=tuple(c for _, c in INSERTS),
        pixel_mm=pixel_mm,
    )


def _down(fine: np.ndarray) -> np.ndarray:
    n = fine.shape[0] // _SUPERSAMPLE
    return fine.reshape(n, _SUPERSAMPLE, n, _SUPERSAMPLE).mean(axis=(1, 3))


def laguerre_gauss_channels(size: int, width_px: float, count: int = 5) -> np.ndarray:
    """(size * size, count) Laguerre-Gauss channels centred on the ROI:
    ``sqrt(2) / a * exp(-pi r^2 / a^2) * L_j(2 pi r^2 / a^2)`` with width ``a``."""
    centre = (size - 1) / 2
    y, x = np.mgrid[:size, :size] - centre
    t = 2 * math.pi * (x * x + y * y) / (width_px * width_px)
    gauss = math.sqrt(2) / width_px * np.exp(-t / 2)
    channels = []
    for j in range(count):
        # Laguerre polynomial L_j(t) = sum_k C(j, k) (-t)^k / k!.
        poly = sum(
            math.comb(j, k) * (-t) ** k / math.factorial(k) for k in range(j + 1)
        )
        channels.append((gauss * poly).ravel())
    return np.stack(channels, axis=1)


def auc(absent: np.ndarray, present: np.ndarray) -> float:
    """Area under the ROC curve of two sets of decision values: the Mann-Whitney
    U of the present ones over the absent ones, ties counted half."""
    from scipy.stats import mannwhitneyu

    u = mannwhitneyu(present, absent, alternative="two-sided").statistic
    return float(u / (len(absent) * len(present)))


def cho_auc(
    present: np.ndarray,
    absent: np.ndarray,
    width_px: float,
    *,
    readers: int = 10,
    seed: int = 0,
    channels: int = 5,
) -> tuple[float, float]:
    """Mean and SD over readers of the LG-CHO's AUC on ROI stacks.

    Args:
        present, absent: (n, s, s) regions of interest with and without the signal.
        width_px: channel width in pixels.
        readers: random half/half train-test splits, default 10.
        seed: seeds the splits.
        channels: Laguerre-Gauss channels, default 5.
    """
    size = present.shape[-1]
    basis = laguerre_gauss_channels(size, width_px, channels)

    def project(rois: np.ndarray) -> np.ndarray:
        flat = rois.reshape(rois.shape[0], -1).astype(np.float64)
        flat = flat - flat.mean(axis=1, keepdims=True)
        return flat @ basis

    v_present, v_absent = project(present), project(absent)
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(readers):
        p = rng.permutation(len(v_present))
        a = rng.permutation(len(v_absent))
        p_train, p_test = p[: len(p) // 2], p[len(p) // 2 :]
        a_train, a_test = a[: len(a) // 2], a[len(a) // 2 :]
        signal = v_present[p_train].mean(axis=0) - v_absent[a_train].mean(axis=0)
        covariance = (
            np.cov(v_present[p_train], rowvar=False)
            + np.cov(v_absent[a_train], rowvar=False)
        ) / 2
        template = np.linalg.pinv(covariance) @ signal
        scores.append(auc(v_absent[a_test] @ template, v_present[p_test] @ template))
    return float(np.mean(scores)), float(np.std(scores))


def insert_rois(images: np.ndarray, mask: np.ndarray, size: int) -> np.ndarray:
    """(n, size, size) crops of ``images`` centred on the mask's centroid."""
    cy, cx = (int(round(float(v.mean()))) for v in np.nonzero(mask))
    half = size // 2
    return images[:, cy - half : cy - half + size, cx - half : cx - half + size]


def roi_size(diameters_px: Sequence[float]) -> int:
    """ROI edge: four times the largest insert's diameter, odd."""
    return 2 * int(round(2 * max(diameters_px))) + 1
