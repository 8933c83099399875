"""Quality metrics of a denoised series: noise before/after, structure in the residual.

Noise is estimated per slice with a robust variant of Immerkaer's method (1996): the
image is filtered with the 3x3 Laplacian-difference kernel ``[[1,-2,1],[-2,4,-2],
[1,-2,1]]``, which cancels planar image content and multiplies white noise of SD
``sigma`` by the kernel's L2 norm, 6. Immerkaer averages ``|L|``; we take the median
of ``|L|`` instead (``sigma = 1.4826 * median|L| / 6``), so edges, which put large
values into ``L`` on a minority of pixels, barely move the estimate. Pixels whose
3x3 neighbourhood is exactly constant in the original (e.g. the padding outside a
CT field of view) carry no noise and are left out of every per-slice statistic.
Only the half of the pixels with the smallest Sobel gradient enter the median, which
drops edges (after Tai and Yang, 2008) without biasing the estimate on noise.

A residual (original - reconstruction) should be noise. When it shows anatomy the
model removed signal. The per-slice ``structure_score`` is the larger of

* ``|r(residual, reconstruction)|``: anatomy itself (or a fraction of it) subtracted;
* ``r(local SD of residual, gradient magnitude of reconstruction)``: edges and fine
  detail blurred away, which leaves residual energy along edges.

For a pure-noise residual both Pearson correlations are ``O(1/sqrt(pixels))``
(about 0.004 on a 256x256 slice) plus a small bias from signal-dependent noise, so
:data:`STRUCTURE_THRESHOLD` = 0.3, i.e. about 9% of the residual's variance
explained by the image, is far above chance yet low enough to catch a model that
removes a tenth of the anatomy. Slices above it are listed in ``flagged_slices``.

:func:`slice_statistics` computes these with NumPy, the faster choice on a CPU;
:func:`slice_statistics_tensor` computes the same numbers with PyTorch where the
tensors already are, so on a GPU the denoised series never comes back to the host
to be measured (it sorts instead of selecting, which is fast there and slow on a
CPU). Tests hold the two to float32 rounding of each other.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from scipy import ndimage

__all__ = [
    "STRUCTURE_THRESHOLD",
    "LOCAL_WINDOW",
    "estimate_noise_sd",
    "slice_statistics",
    "slice_statistics_tensor",
    "summarise",
    "compute_metrics",
]

#: A slice whose structure score exceeds this is flagged (see the module docstring).
STRUCTURE_THRESHOLD = 0.3
#: Edge of the square window (pixels) for the residual's local SD.
LOCAL_WINDOW = 5

_MAD_TO_SD = 1.4826
_KERNEL_NORM = 6.0
# One 512x512 slice per chunk: every temporary of a chunk stays in the L2 cache,
# which makes the dozens of NumPy passes per slice several times faster than over
# a multi-slice chunk that spills to memory.
_CHUNK_VOXELS = 1 << 18


def estimate_noise_sd(volume: np.ndarray) -> np.ndarray:
    """Robust per-slice noise SD of a (z, y, x) or (y, x) array, in its own units.

    Returns:
        float64 array of shape (z,); NaN for slices smaller than 3x3; 0 for slices
        that are constant everywhere.
    """
    stack = _as_stack(volume)
    result = np.full(stack.shape[0], np.nan)

    def run(start: int, stop: int) -> None:
        result[start:stop] = _noise_sd_chunk(stack[start:stop])

    _parallel(run, _chunks(stack))
    return result


def _noise_sd_chunk(chunk: np.ndarray) -> np.ndarray:
    chunk = chunk.astype(np.float32, copy=False)
    out = np.full(chunk.shape[0], np.nan)
    if chunk.shape[1] < 3 or chunk.shape[2] < 3:
        return out
    laplace = np.abs(_laplacian(chunk))
    gradient = _sobel_energy(chunk)
    valid = _not_flat(chunk)
    for i in range(chunk.shape[0]):
        out[i] = _robust_sd(laplace[i][valid[i]], gradient[i][valid[i]])
    return out


def _robust_sd(laplace: np.ndarray, gradient: np.ndarray) -> float:
    """Noise SD from the |Laplacian| of the pixels with the flattest surroundings.

    For white noise the Sobel gradient (antisymmetric kernels) and the Laplacian
    (symmetric kernel) are uncorrelated Gaussians, hence independent, so keeping
    only the pixels whose gradient is below the median does not bias the estimate,
    while it drops nearly every pixel on an edge. ``gradient`` may be the squared
    magnitude: the pixels at or below the median are the same.
    """
    if laplace.size == 0:
        return 0.0
    kept = laplace[gradient <= _median(gradient)]
    return _MAD_TO_SD * float(_median(kept)) / _KERNEL_NORM


def _median(values: np.ndarray) -> np.floating:
    """``np.median`` of a 1D float array (the mean of the two middle values for an
    even count, in its dtype; NaN when any value is NaN) with one selection instead
    of ``np.median``'s three: the lower middle value is the largest of the lower
    half once the upper one is in place, which halves the slowest step of the
    noise estimate."""
    n = values.size
    if n == 0 or np.isnan(values).any():
        return np.median(values)
    middle = n // 2
    ordered = np.partition(values, middle)
    upper = ordered[middle]
    if n % 2:
        return upper
    lower = ordered[:middle].max()
    return (lower + upper) / values.dtype.type(2)


def slice_statistics(
    original: np.ndarray, reconstruction: np.ndarray, residual: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Per-slice statistics of one series, in the original units.

    Works through the series a few slices at a time, so memory stays at a small
    fraction of the volume beyond the arrays passed in.

    Args:
        original: (z, y, x) or (y, x) input.
        reconstruction: model output, same shape.
        residual: ``original - reconstruction``; computed per chunk when ``None``.

    Returns:
        float64 arrays of shape (z,): ``mean``, ``sd`` (of the original over pixels
        with noise), ``noise_sd_before``, ``noise_sd_after``, ``residual_mean``,
        ``residual_sd``, ``residual_rms``, ``structure_score`` and ``pixels``.
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
        "pixels",
    )
    stats = {name: np.zeros(depth) for name in names}
    stats["noise_sd_before"] = np.full(depth, np.nan)
    stats["noise_sd_after"] = np.full(depth, np.nan)

    def run(start: int, stop: int) -> None:
        x = x_stack[start:stop].astype(np.float32, copy=False)
        y = y_stack[start:stop].astype(np.float32, copy=False)
        r = (
            x - y
            if r_stack is None
            else r_stack[start:stop].astype(np.float32, copy=False)
        )
        mask = _not_flat(x, pad=True)
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
        stats["structure_score"][start:stop] = _structure_scores(r, y, mask)
        stats["noise_sd_before"][start:stop] = _noise_sd_chunk(x)
        stats["noise_sd_after"][start:stop] = _noise_sd_chunk(y)

    _parallel(run, _chunks(x_stack))
    return stats


def slice_statistics_tensor(
    original: torch.Tensor, reconstruction: torch.Tensor, residual: torch.Tensor
) -> dict[str, np.ndarray]:
    """:func:`slice_statistics` of (z, y, x) float32 tensors, computed on their
    device (the engine's path on a GPU); the result comes back as NumPy arrays.

    Args:
        original: (z, y, x) input.
        reconstruction: model output, same shape and device.
        residual: ``original - reconstruction``.

    Returns:
        The same float64 arrays of shape (z,) as :func:`slice_statistics`.
    """
    if original.shape != reconstruction.shape or original.ndim != 3:
        raise ValueError(
            f"expected two (z, y, x) tensors of one shape, got {tuple(original.shape)}"
            f" and {tuple(reconstruction.shape)}"
        )
    with torch.inference_mode():
        x, y, r = (t.float() for t in (original, reconstruction, residual))
        mask = _not_flat_tensor(x, pad=True)
        mask |= ~mask.any(dim=(1, 2), keepdim=True)
        count = mask.sum(dim=(1, 2)).double()
        x_mean, x_sd = _masked_mean_sd_tensor(x, mask, count)
        r_mean, r_sd = _masked_mean_sd_tensor(r, mask, count)
        stats = {
            "mean": x_mean,
            "sd": x_sd,
            "residual_mean": r_mean,
            "residual_sd": r_sd,
            "residual_rms": torch.sqrt(r_sd**2 + r_mean**2),
            "structure_score": _structure_scores_tensor(r, y, mask),
            "pixels": count,
            "noise_sd_before": _noise_sd_tensor(x),
            "noise_sd_after": _noise_sd_tensor(y),
        }
        return {name: value.cpu().numpy() for name, value in stats.items()}


def _masked_mean_sd_tensor(
    a: torch.Tensor, mask: torch.Tensor, count: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    safe = count.clamp(min=1)
    mean = torch.where(mask, a, 0).double().sum(dim=(1, 2)) / safe
    centred = torch.where(mask, a - mean.float()[:, None, None], 0).double()
    var = centred.square().sum(dim=(1, 2)) / safe
    return mean, torch.sqrt(var.clamp(min=0))


def _masked_pearson_tensor(
    a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    count = mask.sum(dim=(1, 2)).clamp(min=1).double()
    centred = []
    for v in (a, b):
        mean = torch.where(mask, v, 0).double().sum(dim=(1, 2)) / count
        centred.append(torch.where(mask, v - mean.float()[:, None, None], 0).double())
    a_c, b_c = centred
    cov = (a_c * b_c).sum(dim=(1, 2))
    denom = torch.sqrt(a_c.square().sum(dim=(1, 2)) * b_c.square().sum(dim=(1, 2)))
    return torch.where(denom > 0, cov / torch.where(denom > 0, denom, 1), 0)


def _structure_scores_tensor(
    residual: torch.Tensor, recon: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    n, h, w = residual.shape
    if h < 3 or w < 3:
        return torch.zeros(n, dtype=torch.float64, device=residual.device)
    direct = _masked_pearson_tensor(residual, recon, mask).abs()
    centred = residual - residual.mean(dim=(1, 2), keepdim=True)
    half = LOCAL_WINDOW // 2
    # scipy's "reflect" repeats the edge pixel (d c b a | a b c d): mirror by hand.
    energy = (centred * centred)[:, None]
    energy = torch.cat(
        [energy[..., :half].flip(-1), energy, energy[..., -half:].flip(-1)], dim=-1
    )
    energy = torch.cat(
        [energy[..., :half, :].flip(-2), energy, energy[..., -half:, :].flip(-2)],
        dim=-2,
    )
    energy = torch.nn.functional.avg_pool2d(energy, LOCAL_WINDOW, stride=1)[:, 0]
    local_sd = torch.sqrt(energy.clamp(min=0))
    gradient = _gradient_magnitude(recon)
    edges = _masked_pearson_tensor(local_sd, gradient, mask)
    return torch.maximum(direct, edges)


def _noise_sd_tensor(chunk: torch.Tensor) -> torch.Tensor:
    """:func:`_noise_sd_chunk` on a tensor: masked medians by sorting each slice
    with the excluded pixels moved to the end, which needs no per-slice loop."""
    n, h, w = chunk.shape
    if h < 3 or w < 3:
        return torch.full((n,), float("nan"), dtype=torch.float64, device=chunk.device)
    laplace = _laplacian(chunk).abs().reshape(n, -1)
    gradient = _sobel_energy(chunk).reshape(n, -1)
    valid = _not_flat_tensor(chunk).reshape(n, -1)
    gradient_median = _masked_median(gradient, valid)
    kept = valid & (gradient <= gradient_median[:, None])
    sd = _MAD_TO_SD * _masked_median(laplace, kept).double() / _KERNEL_NORM
    return torch.where(valid.any(dim=1), sd, 0)


def _masked_median(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per row, ``np.median`` of the entries under ``mask`` (the mean of the two
    middle ones for an even count, in the values' dtype); 0 for an empty row."""
    ordered = torch.where(mask, values, torch.inf).sort(dim=1).values
    count = mask.sum(dim=1)
    lower = ((count - 1) // 2).clamp(min=0)
    upper = (count // 2).clamp(max=values.shape[1] - 1)
    low = ordered.gather(1, lower[:, None])[:, 0]
    high = ordered.gather(1, upper[:, None])[:, 0]
    middle = torch.where(count % 2 == 1, low, (low + high) / 2)
    return torch.where(count > 0, middle, 0)


def _not_flat_tensor(chunk: torch.Tensor, pad: bool = False) -> torch.Tensor:
    """:func:`_not_flat` on a tensor: a 3x3 window is constant exactly when its
    maximum equals its minimum; with ``pad`` the window is clamped at the border."""
    window = torch.nn.functional.pad(chunk[:, None], (1, 1, 1, 1), mode="replicate")
    high = torch.nn.functional.max_pool2d(window, 3, stride=1)
    low = -torch.nn.functional.max_pool2d(-window, 3, stride=1)
    result = (high != low)[:, 0]
    return result if pad else result[:, 1:-1, 1:-1]


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


def summarise(per_slice: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Series metrics from :func:`slice_statistics`, as a JSON-safe dict.

    ``noise_sd_before``/``noise_sd_after`` are medians over slices and
    ``noise_reduction_ratio`` is before / after (3.0 means a three-fold drop; null
    when the output has no measurable noise). Residual mean and SD pool all pixels
    with noise. ``per_slice`` repeats the per-slice values.
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
    flagged = [int(i) for i in np.flatnonzero(scores > STRUCTURE_THRESHOLD)]
    ratio = before / after if before is not None and after else None
    return {
        "noise_sd_before": before,
        "noise_sd_after": after,
        "noise_reduction_ratio": ratio,
        "residual_mean": r_mean,
        "residual_sd": r_sd,
        "structure_score_max": _json_float(scores.max()) if scores.size else None,
        "structure_threshold": STRUCTURE_THRESHOLD,
        "flagged_slices": flagged,
        "n_slices": int(scores.size),
        "per_slice": {
            key: [_json_float(v) for v in per_slice[key]]
            for key in (
                "structure_score",
                "noise_sd_before",
                "noise_sd_after",
                "residual_mean",
                "residual_sd",
            )
        },
    }


def compute_metrics(
    original: np.ndarray, reconstruction: np.ndarray, residual: np.ndarray | None = None
) -> dict[str, Any]:
    """Series quality metrics (see :func:`summarise`) of one denoised series."""
    return summarise(slice_statistics(original, reconstruction, residual))


def _structure_scores(
    residual: np.ndarray, recon: np.ndarray, mask: np.ndarray
) -> np.ndarray:
    n = residual.shape[0]
    if residual.shape[1] < 3 or residual.shape[2] < 3:
        return np.zeros(n)
    direct = np.abs(_masked_pearson(residual, recon, mask))
    centred = residual - residual.mean(axis=(1, 2), keepdims=True)
    energy = ndimage.uniform_filter(
        centred * centred, size=(1, LOCAL_WINDOW, LOCAL_WINDOW), mode="reflect"
    )
    local_sd = np.sqrt(np.maximum(energy, 0))
    gradient = _gradient_magnitude(recon)
    edges = _masked_pearson(local_sd, gradient, mask)
    return np.maximum(direct, edges)


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
        r = np.where(denom > 0, cov / np.where(denom > 0, denom, 1), 0.0)
    return r


def _laplacian(chunk: Any) -> Any:
    # The kernel [[1,-2,1],[-2,4,-2],[1,-2,1]] is the outer product of [1,-2,1] with
    # itself: two 1D passes instead of nine shifted terms.
    c = chunk
    d = c[:, :, :-2] - 2 * c[:, :, 1:-1] + c[:, :, 2:]
    return d[:, :-2] - 2 * d[:, 1:-1] + d[:, 2:]


def _sobel_energy(chunk: Any) -> Any:
    """Squared Sobel gradient magnitude of the interior (NumPy or tensor): it orders
    pixels as the magnitude does, without a square root."""
    grad_x, grad_y = _sobel(chunk)
    energy = grad_x * grad_x
    energy += grad_y * grad_y
    return energy


def _gradient_magnitude(chunk: Any) -> Any:
    """``np.hypot(*np.gradient(chunk, axis=(1, 2)))`` of a (z, y, x) float32 NumPy
    stack or tensor, a few times faster than NumPy's own: the differences by
    slicing, the magnitude as the root of the sum of squares (within float32
    rounding)."""
    grad_y, grad_x = (_central_difference(chunk, axis) for axis in (1, 2))
    grad_y *= grad_y
    grad_y += grad_x * grad_x
    grad_y **= 0.5
    return grad_y


def _central_difference(a: Any, axis: int) -> Any:
    """``np.gradient`` along ``axis`` at unit spacing, of a NumPy array or tensor:
    central differences inside, one-sided ones at the two ends (zeros along an
    axis of one point)."""

    def at(part: slice) -> tuple[slice, ...]:
        return (slice(None),) * axis + (part,)

    out = torch.empty_like(a) if isinstance(a, torch.Tensor) else np.empty_like(a)
    if a.shape[axis] < 2:
        out[...] = 0
        return out
    out[at(slice(1, -1))] = (a[at(slice(2, None))] - a[at(slice(None, -2))]) * 0.5
    out[at(slice(0, 1))] = a[at(slice(1, 2))] - a[at(slice(0, 1))]
    out[at(slice(-1, None))] = a[at(slice(-1, None))] - a[at(slice(-2, -1))]
    return out


def _sobel(chunk: Any) -> tuple[Any, Any]:
    """x and y Sobel responses of the interior of a NumPy array or tensor. Each
    kernel is separable: a [1,2,1] smoothing times a [-1,0,1] difference."""
    c = chunk
    dx = c[:, :, 2:] - c[:, :, :-2]
    grad_x = dx[:, :-2] + 2 * dx[:, 1:-1] + dx[:, 2:]
    dy = c[:, 2:] - c[:, :-2]
    grad_y = dy[:, :, :-2] + 2 * dy[:, :, 1:-1] + dy[:, :, 2:]
    return grad_x, grad_y


def _not_flat(chunk: np.ndarray, pad: bool = False) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood is not constant (interior only unless ``pad``).

    A window is constant exactly when no two horizontally or vertically adjacent
    pixels in it differ (its pixel grid is connected), so comparing neighbours once
    and OR-ing the comparisons over the window replaces a 3x3 max and min filter.
    With ``pad`` the window is clamped at the border, as a ``nearest`` filter would
    see it (repeated border pixels never differ from each other).
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
    return result if pad else result[:, 1:-1, 1:-1]


def _as_stack(array: np.ndarray) -> np.ndarray:
    if array.ndim == 2:
        return array[None]
    if array.ndim != 3:
        raise ValueError(
            f"expected a (y, x) or (z, y, x) array, got shape {array.shape}"
        )
    return array


def _chunks(stack: np.ndarray) -> list[tuple[int, int]]:
    per_slice = max(int(np.prod(stack.shape[1:])), 1)
    step = max(_CHUNK_VOXELS // per_slice, 1)
    return [(s, min(s + step, stack.shape[0])) for s in range(0, stack.shape[0], step)]


def _parallel(work: Callable[[int, int], None], chunks: list[tuple[int, int]]) -> None:
    """Run ``work`` over chunks on every CPU: NumPy and SciPy release the GIL in the
    array kernels, so threads scale without copying chunks to other processes."""
    workers = min(len(chunks), len(os.sched_getaffinity(0)))
    if workers <= 1:
        for start, stop in chunks:
            work(start, stop)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for future in [pool.submit(work, a, b) for a, b in chunks]:
            future.result()


def _nanmedian(values: np.ndarray) -> float | None:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else None


def _json_float(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None
