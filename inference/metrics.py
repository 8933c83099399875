"""Quality metrics of a denoised series: noise before/after, structure in the residual.

Noise is the SD of flat tissue (:func:`inference.noise.estimate_noise_sd`), before
and after denoising, in the series' units.

A residual (original - reconstruction) should be noise. What a radiologist sees in
the residual map of a model that removed anatomy is outlines: organ borders,
cortex, vessel walls. Per slice, the ``structure_score`` measures exactly that: the
fine-scale energy of the residual (residual minus its Gaussian blur at 1 px, which
drops the blotchy low frequencies of CT noise and keeps lines) on the strongest
edges of the reconstruction (the top :data:`EDGE_FRACTION` of its gradient inside
the body) over the same energy in the flattest half of the body, or over a tenth
of the input's own fine-scale energy there when the model removed less (so a model
that barely touches flat tissue is not judged by the little it removes at edges).
A residual of noise alone scores about 1, BM3D (which leaves edges alone) less,
and a model that erases edges far above 1; :data:`STRUCTURE_THRESHOLD` (2.0) sits
between. ``python -m bench quality`` reports these cases under ``safeguard``
(bench/results/quality.md; the figures behind the threshold are in
bench/results/validation.md).

A residual that holds a share of the image itself (an intensity scaling, whole
organs lifted out) has no special energy at edges, so the ``anatomy_correlation``,
``|r(residual, reconstruction)|`` inside the body, is checked as well: for noise it
is ``O(1/sqrt(pixels))``, and above :data:`ANATOMY_THRESHOLD` (0.3, a tenth of the
residual's variance explained by the image) the slice is flagged too.

Everything runs with NumPy and SciPy on every CPU, a slice per task.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from scipy import ndimage

from inference.noise import estimate_noise_sd

__all__ = [
    "ANATOMY_THRESHOLD",
    "EDGE_FRACTION",
    "STRUCTURE_THRESHOLD",
    "slice_statistics",
    "structure_scores",
    "summarise",
    "compute_metrics",
]

#: A slice whose structure score (edge energy ratio) exceeds this is flagged.
STRUCTURE_THRESHOLD = 2.0
#: A slice whose residual correlates with the image beyond this is flagged.
ANATOMY_THRESHOLD = 0.3
#: Share of body pixels, by gradient, that count as edges.
EDGE_FRACTION = 0.1
#: Gaussian SD (pixels) of the blur removed from the residual and of the one the
#: edges are found on.
_FINE_SCALE_PX = 1.0
#: Share of the input's fine-scale energy in flat tissue below which the residual's
#: own flat energy is not trusted as the reference of the edge energy ratio.
_FLAT_FLOOR = 0.1
#: Fewest body pixels a slice needs for a structure score.
_MIN_BODY_PIXELS = 64


def slice_statistics(
    original: np.ndarray,
    reconstruction: np.ndarray,
    residual: np.ndarray | None = None,
    *,
    noise_sd_before: np.ndarray | None = None,
    body_threshold: float | None = -500.0,
) -> dict[str, np.ndarray]:
    """Per-slice statistics of one series, in the original units.

    Works through the series a slice at a time on every CPU, so memory stays at a
    small fraction of the volume beyond the arrays passed in.

    Args:
        original: (z, y, x) or (y, x) input.
        reconstruction: model output, same shape.
        residual: ``original - reconstruction``; computed per slice when ``None``.
        noise_sd_before: the input's noise SD per slice when already measured
            (the engine measures it before inference), else measured here.
        body_threshold: pixels above it are inside the patient (default -500, CT
            in HU); ``None`` takes a tenth of the slice's 99th percentile (MR).

    Returns:
        float64 arrays of shape (z,): ``mean``, ``sd`` (of the original over pixels
        with noise), ``noise_sd_before``, ``noise_sd_after``, ``residual_mean``,
        ``residual_sd``, ``residual_rms``, ``structure_score``,
        ``anatomy_correlation`` and ``pixels``.
    """
    if original.shape != reconstruction.shape:
        raise ValueError(
            f"original and reconstruction shapes differ: {original.shape} vs "
            f"{reconstruction.shape}"
        )
    x_stack, y_stack = _as_stack(original), _as_stack(reconstruction)
    r_stack = None if residual is None else _as_stack(residual)
    depth = x_stack.shape[0]
    names = (
        "mean",
        "sd",
        "residual_mean",
        "residual_sd",
        "residual_rms",
        "structure_score",
        "anatomy_correlation",
        "pixels",
        "noise_sd_before",
        "noise_sd_after",
    )
    stats = {name: np.zeros(depth) for name in names}
    if noise_sd_before is not None:
        stats["noise_sd_before"][:] = noise_sd_before

    def run(start: int, stop: int) -> None:
        x = x_stack[start:stop].astype(np.float32, copy=False)
        y = y_stack[start:stop].astype(np.float32, copy=False)
        r = (
            x - y
            if r_stack is None
            else r_stack[start:stop].astype(np.float32, copy=False)
        )
        mask = _not_flat(x)
        # A slice with no noisy pixel at all (constant) is described by all pixels.
        mask |= ~mask.any(axis=(1, 2), keepdims=True)
        count = mask.sum(axis=(1, 2)).astype(np.float64)
        stats["pixels"][start:stop] = count
        x_mean, x_sd = _masked_mean_sd(x, mask, count)
        r_mean, r_sd = _masked_mean_sd(r, mask, count)
        stats["mean"][start:stop] = x_mean
        stats["sd"][start:stop] = x_sd
        stats["residual_mean"][start:stop] = r_mean
        stats["residual_sd"][start:stop] = r_sd
        stats["residual_rms"][start:stop] = np.sqrt(r_sd**2 + r_mean**2)
        edges, correlation = structure_scores(r, y, x, mask & _body(x, body_threshold))
        stats["structure_score"][start:stop] = edges
        stats["anatomy_correlation"][start:stop] = correlation
        if noise_sd_before is None:
            stats["noise_sd_before"][start:stop] = estimate_noise_sd(
                x, body_threshold=body_threshold
            )
        stats["noise_sd_after"][start:stop] = estimate_noise_sd(
            y, body_threshold=body_threshold
        )

    _parallel(run, depth)
    return stats


def structure_scores(
    residual: np.ndarray,
    reconstruction: np.ndarray,
    original: np.ndarray,
    body: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Edge energy ratio and anatomy correlation of each slice (module docstring).

    Args:
        residual: (z, y, x) input minus reconstruction, float32.
        reconstruction: (z, y, x) model output, float32.
        original: (z, y, x) input, float32.
        body: (z, y, x) boolean mask of the pixels inside the patient.

    Returns:
        Two float64 arrays of shape (z,); 0 for slices with fewer than
        :data:`_MIN_BODY_PIXELS` body pixels or smaller than 3x3.
    """
    depth, height, width = residual.shape
    ratio, correlation = np.zeros(depth), np.zeros(depth)
    if height < 3 or width < 3:
        return ratio, correlation
    sigma = (0, _FINE_SCALE_PX, _FINE_SCALE_PX)
    fine = residual - ndimage.gaussian_filter(residual, sigma, truncate=2.0)
    fine_input = original - ndimage.gaussian_filter(original, sigma, truncate=2.0)
    gradient = _gradient_magnitude(reconstruction)
    for index in range(depth):
        inside = body[index]
        count = int(inside.sum())
        if count < _MIN_BODY_PIXELS:
            continue
        strength = gradient[index][inside]
        energy = fine[index][inside].astype(np.float64) ** 2
        middle, top = count // 2, min(count - 1, int(count * (1 - EDGE_FRACTION)))
        ordered = np.partition(strength, (middle, top))
        flat = strength <= ordered[middle]
        # A model that removes almost nothing in flat tissue is measured against
        # a share of the input's own fine-scale energy there instead.
        floor = _FLAT_FLOOR * float(
            np.mean(fine_input[index][inside][flat].astype(np.float64) ** 2)
        )
        denominator = max(float(energy[flat].mean()), floor)
        if denominator > 0:
            ratio[index] = energy[strength >= ordered[top]].mean() / denominator
    correlation = np.abs(_masked_pearson(residual, reconstruction, body))
    correlation[body.sum(axis=(1, 2)) < _MIN_BODY_PIXELS] = 0.0
    return ratio, correlation


def _body(x: np.ndarray, threshold: float | None) -> np.ndarray:
    if threshold is not None:
        return x > threshold
    # MR: a tenth of the 99th percentile of each slice (no fixed intensity scale).
    level = np.percentile(x.reshape(x.shape[0], -1), 99, axis=1)
    return x > 0.1 * level[:, None, None]


def _gradient_magnitude(chunk: np.ndarray) -> np.ndarray:
    """Central-difference gradient magnitude of a (z, y, x) float32 stack (one-sided
    differences at the borders), as ``np.hypot(*np.gradient(chunk, axis=(1, 2)))``
    without its float64 temporaries."""
    grad_y, grad_x = np.gradient(chunk, axis=(1, 2))
    grad_y *= grad_y
    grad_y += grad_x * grad_x
    return np.sqrt(grad_y, out=grad_y)


def _masked_mean_sd(
    a: np.ndarray, mask: np.ndarray, count: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-slice mean and SD over ``mask``: mean first (float64 sum), then the SD of
    the centred values, which keeps float32 products free of cancellation."""
    safe = np.maximum(count, 1)
    masked = np.where(mask, a, np.float32(0))
    mean = masked.sum(axis=(1, 2), dtype=np.float64) / safe
    centred = np.where(mask, a - mean.astype(np.float32)[:, None, None], 0)
    flat = centred.reshape(centred.shape[0], -1)
    var = np.einsum("ij,ij->i", flat, flat, dtype=np.float64) / safe
    return mean, np.sqrt(np.maximum(var, 0))


def _masked_pearson(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> np.ndarray:
    count = np.maximum(mask.sum(axis=(1, 2)), 1).astype(np.float64)
    a = a.astype(np.float32, copy=False)
    b = b.astype(np.float32, copy=False)
    a_mean = np.where(mask, a, 0).sum(axis=(1, 2), dtype=np.float64) / count
    b_mean = np.where(mask, b, 0).sum(axis=(1, 2), dtype=np.float64) / count
    n = a.shape[0]
    a_c = np.where(mask, a - a_mean.astype(np.float32)[:, None, None], 0).reshape(n, -1)
    b_c = np.where(mask, b - b_mean.astype(np.float32)[:, None, None], 0).reshape(n, -1)
    cov = np.einsum("ij,ij->i", a_c, b_c, dtype=np.float64)
    denom = np.sqrt(
        np.einsum("ij,ij->i", a_c, a_c, dtype=np.float64)
        * np.einsum("ij,ij->i", b_c, b_c, dtype=np.float64)
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, cov / np.where(denom > 0, denom, 1), 0.0)


def _not_flat(chunk: np.ndarray) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood (clamped at the border) is not constant: the
    padding scanners store outside the field of view carries no noise.

    A window is constant exactly when no two horizontally or vertically adjacent
    pixels in it differ (its pixel grid is connected), so comparing neighbours once
    and OR-ing the comparisons over the window replaces a 3x3 max and min filter.
    """
    n, h, w = chunk.shape
    # differs_x[:, y, j]: pixels (y, j-1) and (y, j) differ, False off the image.
    differs_x = np.zeros((n, h, w + 1), dtype=bool)
    np.not_equal(chunk[:, :, 1:], chunk[:, :, :-1], out=differs_x[:, :, 1:-1])
    differs_y = np.zeros((n, h + 1, w), dtype=bool)
    np.not_equal(chunk[:, 1:], chunk[:, :-1], out=differs_y[:, 1:-1])
    # Pairs in columns x-1..x+1 of row y: pair indices x and x+1.
    row = differs_x[:, :, :-1] | differs_x[:, :, 1:]
    col = differs_y[:, :-1] | differs_y[:, 1:]
    result = row | col
    result[:, 1:] |= row[:, :-1]
    result[:, :-1] |= row[:, 1:]
    result[:, :, 1:] |= col[:, :, :-1]
    result[:, :, :-1] |= col[:, :, 1:]
    return result


def _parallel(work: Callable[[int, int], None], depth: int) -> None:
    """Run ``work`` slice by slice on every CPU: NumPy and SciPy release the GIL in
    the array kernels, and one 512x512 slice's temporaries stay in the cache."""
    chunks = [(i, i + 1) for i in range(depth)]
    workers = min(len(chunks), len(os.sched_getaffinity(0)))
    if workers <= 1:
        for start, stop in chunks:
            work(start, stop)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for future in [pool.submit(work, a, b) for a, b in chunks]:
            future.result()


def summarise(per_slice: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Series metrics from :func:`slice_statistics`, as a JSON-safe dict.

    ``noise_sd_before``/``noise_sd_after`` are medians over slices and
    ``noise_reduction_ratio`` is before / after (3.0 means a three-fold drop; null
    when the output has no measurable noise). Residual mean and SD pool all pixels
    with noise. A slice is flagged when its structure score or its anatomy
    correlation is above its threshold. ``per_slice`` repeats the per-slice values.
    """
    pixels = np.asarray(per_slice["pixels"], dtype=np.float64)
    total = float(pixels.sum())
    if total > 0:
        r_mean = float((per_slice["residual_mean"] * pixels).sum() / total)
        r_sq = float(
            (
                (per_slice["residual_sd"] ** 2 + per_slice["residual_mean"] ** 2)
                * pixels
            ).sum()
            / total
        )
        r_sd = math.sqrt(max(r_sq - r_mean**2, 0.0))
    else:
        r_mean = r_sd = 0.0
    before = _nanmedian(per_slice["noise_sd_before"])
    after = _nanmedian(per_slice["noise_sd_after"])
    scores = np.asarray(per_slice["structure_score"], dtype=np.float64)
    anatomy = np.asarray(per_slice["anatomy_correlation"], dtype=np.float64)
    flagged = [
        int(i)
        for i in np.flatnonzero(
            (scores > STRUCTURE_THRESHOLD) | (anatomy > ANATOMY_THRESHOLD)
        )
    ]
    ratio = before / after if before is not None and after else None
    return {
        "noise_sd_before": before,
        "noise_sd_after": after,
        "noise_reduction_ratio": ratio,
        "residual_mean": r_mean,
        "residual_sd": r_sd,
        "structure_score_max": _json_float(scores.max()) if scores.size else None,
        "structure_threshold": STRUCTURE_THRESHOLD,
        "anatomy_correlation_max": (
            _json_float(anatomy.max()) if anatomy.size else None
        ),
        "anatomy_threshold": ANATOMY_THRESHOLD,
        "flagged_slices": flagged,
        "n_slices": int(scores.size),
        "per_slice": {
            key: [_json_float(v) for v in per_slice[key]]
            for key in (
                "structure_score",
                "anatomy_correlation",
                "noise_sd_before",
                "noise_sd_after",
                "residual_mean",
                "residual_sd",
            )
        },
    }


def compute_metrics(
    original: np.ndarray,
    reconstruction: np.ndarray,
    residual: np.ndarray | None = None,
    *,
    body_threshold: float | None = -500.0,
) -> dict[str, Any]:
    """Series quality metrics (see :func:`summarise`) of one denoised series."""
    return summarise(
        slice_statistics(
            original, reconstruction, residual, body_threshold=body_threshold
        )
    )


def _as_stack(array: np.ndarray) -> np.ndarray:
    if array.ndim == 2:
        return array[None]
    if array.ndim != 3:
        raise ValueError(
            f"expected a (y, x) or (z, y, x) array, got shape {array.shape}"
        )
    return array


def _nanmedian(values: np.ndarray) -> float | None:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else None


def _json_float(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None
