"""Image-quality metrics against a clean reference: PSNR, SSIM, RMSE, lesion CNR."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

__all__ = [
    "SOFT_TISSUE_WINDOW_HU",
    "psnr",
    "ssim",
    "lesion_regions",
    "lesion_stats",
    "image_metrics",
    "mean_metrics",
]

#: Soft-tissue display window (level 40, width 400): the range where the low-contrast
#: detail lives, so PSNR/SSIM here are not dominated by bone and air.
SOFT_TISSUE_WINDOW_HU = (-160.0, 240.0)


def psnr(reference: np.ndarray, image: np.ndarray, data_range: float) -> float:
    """Peak signal-to-noise ratio in dB for a given ``data_range`` (scikit-image's);
    identical images score as an error of 1e-6 would, not infinity."""
    reference = reference.astype(np.float64)
    image = np.asarray(image, dtype=np.float64)
    if np.array_equal(reference, image):
        return float(10 * np.log10(data_range**2 / 1e-12))
    return float(peak_signal_noise_ratio(reference, image, data_range=data_range))


def ssim(reference: np.ndarray, image: np.ndarray, data_range: float) -> float:
    """Structural similarity (scikit-image, 7x7 window)."""
    return float(
        structural_similarity(
            reference.astype(np.float64),
            image.astype(np.float64),
            data_range=data_range,
        )
    )


def lesion_regions(lesion_mask: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per lesion label, the (core, ring) pixel masks its contrast is measured on.

    The core is the lesion eroded by one pixel (the whole lesion when that leaves
    fewer than 4 pixels); the ring runs from 2 to 6 pixels outside the lesion,
    away from other lesions. Lesions with a ring under 8 pixels are left out.
    """
    regions = []
    for label in range(1, int(lesion_mask.max()) + 1):
        lesion = lesion_mask == label
        if not lesion.any():
            continue
        core = ndimage.binary_erosion(lesion, iterations=1)
        if core.sum() < 4:
            core = lesion
        near = ndimage.binary_dilation(lesion, iterations=2)
        far = ndimage.binary_dilation(lesion, iterations=6)
        ring = far & ~near & (lesion_mask == 0)
        if ring.sum() < 8:
            continue
        regions.append((core, ring))
    return regions


def lesion_stats(
    clean: np.ndarray, image: np.ndarray, lesion_mask: np.ndarray
) -> list[dict[str, float]]:
    """Per-lesion contrast and CNR of ``image``, with the clean contrast for reference.

    Contrast is the mean over the lesion's core minus the mean over its ring
    (:func:`lesion_regions`); CNR divides the absolute contrast by the ring's
    standard deviation.
    """
    stats = []
    for core, ring in lesion_regions(lesion_mask):
        ref = float(clean[core].mean() - clean[ring].mean())
        got = float(image[core].mean() - image[ring].mean())
        sd = float(image[ring].std())
        stats.append(
            {
                "clean_contrast": ref,
                "contrast": got,
                "retained": got / ref if abs(ref) > 1e-6 else float("nan"),
                "cnr": abs(got) / max(sd, 1e-6),
            }
        )
    return stats


def image_metrics(
    clean: np.ndarray,
    image: np.ndarray,
    noisy: np.ndarray,
    *,
    modality: str,
    body: np.ndarray,
    lesion_mask: np.ndarray | None = None,
) -> dict[str, float]:
    """Every metric of one slice.

    Args:
        clean: reference slice (HU or magnitude).
        image: the denoised (or noisy) slice to score.
        noisy: the noisy input (for the residual ``noisy - image``).
        modality: ``"CT"`` or ``"MR"``.
        body: boolean mask of the patient (RMSE and residual correlation use it).
        lesion_mask: labelled lesion mask, when the slice has known lesions.

    Returns:
        ``psnr_window``, ``ssim_window`` (soft-tissue window for CT, same as full
        range for MR), ``psnr_full``, ``ssim_full``, ``rmse`` (HU for CT),
        ``residual_clean_corr`` and, with lesions, ``lesion_contrast_retained``
        (pooled ratio) and ``lesion_cnr``.
    """
    if modality == "CT":
        low, high = SOFT_TISSUE_WINDOW_HU
        c_win, i_win = np.clip(clean, low, high), np.clip(image, low, high)
        win_range = high - low
        c_full = np.clip(clean, -1024.0, 3071.0)
        i_full = np.clip(image, -1024.0, 3071.0)
        full_range = float(c_full.max() - c_full.min())
    else:
        c_win, i_win = clean, image
        c_full, i_full = clean, image
        full_range = float(clean.max() - clean.min())
        win_range = full_range
    residual = (noisy - image)[body]
    ref = clean[body]
    if residual.std() > 1e-9 and ref.std() > 1e-9:
        corr = float(np.corrcoef(residual, ref)[0, 1])
    else:
        corr = 0.0
    out = {
        "psnr_window": psnr(c_win, i_win, win_range),
        "ssim_window": ssim(c_win, i_win, win_range),
        "psnr_full": psnr(c_full, i_full, full_range),
        "ssim_full": ssim(c_full, i_full, full_range),
        "rmse": float(np.sqrt(np.mean((clean[body] - image[body]) ** 2))),
        "residual_clean_corr": corr,
    }
    if lesion_mask is not None and lesion_mask.any():
        stats = lesion_stats(clean, image, lesion_mask)
        if stats:
            # Pooled over lesions (signed to the clean contrast): a single 5 HU
            # lesion's ratio is too noisy to average on its own.
            kept = sum(s["contrast"] * np.sign(s["clean_contrast"]) for s in stats)
            total = sum(abs(s["clean_contrast"]) for s in stats)
            out["lesion_contrast_retained"] = float(kept / max(total, 1e-6))
            out["lesion_cnr"] = float(np.mean([s["cnr"] for s in stats]))
            out["lesions"] = float(len(stats))
    return out


def mean_metrics(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over slices (lesion metrics weighted by lesion count).

    ``lesion_contrast_retained_se`` is the standard error of the contrast kept
    over slices: a handful of phantoms moves that estimate by several percent.
    """
    keys = sorted({k for row in rows for k in row} - {"lesions"})
    out: dict[str, float] = {}
    for key in keys:
        if key.startswith("lesion_"):
            pairs = [(r[key], r.get("lesions", 1.0)) for r in rows if key in r]
            weight = sum(w for _, w in pairs)
            out[key] = (
                float(sum(v * w for v, w in pairs) / weight) if weight else float("nan")
            )
        else:
            out[key] = float(np.mean([r[key] for r in rows if key in r]))
    kept = [
        r["lesion_contrast_retained"] for r in rows if "lesion_contrast_retained" in r
    ]
    if len(kept) > 1:
        out["lesion_contrast_retained_se"] = float(
            np.std(kept, ddof=1) / len(kept) ** 0.5
        )
    return out
