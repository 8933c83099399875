"""Per-slice noise level of a scan, and the bound that keeps a denoiser to it.

:func:`estimate_noise_sd` measures noise the way a radiologist does, as the SD in
flat tissue, without an ROI: each slice is cut into 16x16 blocks, each block's SD
is taken after removing its best-fitting quadratic surface (so smooth shading and
gentle gradients do not count as noise), and only blocks inside the patient count
(blocks with any pixel above ``body_threshold``, holes filled, so air inside a skull
counts as well). Blocks with edges or texture have a larger SD than noise alone, so
the estimate is the median of the blocks whose SD is at most
:data:`FLAT_BLOCK_FACTOR` times the tenth percentile of all of them: the flat part
of the body, whatever share of the slice it is. Blocks touching padding (pixels at
the slice's minimum, as scanners store outside the field of view) are left out.

How it compares with independent references (real CT, a water phantom, fine
texture) is in bench/results/validation.md.

:func:`limit_residual` scales a denoiser's residual (input - output) down wherever
its local RMS exceeds ``sd_multiple`` times the slice's estimated noise: the model
may remove noise, never more than the noise that is there.

:func:`keep_low_frequencies` gives the output the input's own content at scales
coarser than about a millimetre: ``denoised + G * (input - denoised)`` with ``G`` a
Gaussian of ``sigma_mm``. Only detail finer than that is the network's, so the mean
HU of anything a reader can measure with an ROI, and the contrast of low-contrast
lesions a few millimetres across, stay the scan's own (its effect on low-contrast
detectability: bench/results/quality.md).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage
from torch.nn import functional as F

__all__ = [
    "BLOCK",
    "FLAT_BLOCK_FACTOR",
    "block_statistics",
    "estimate_noise_sd",
    "flat_blocks",
    "gaussian_blur_2d",
    "keep_low_frequencies",
    "limit_residual",
    "noise_level_map",
]

#: Edge of the square blocks (pixels) whose SDs are compared.
BLOCK = 16
#: Blocks with an SD up to this multiple of the tenth percentile count as flat.
FLAT_BLOCK_FACTOR = 1.5
_FLAT_QUANTILE = 0.1
#: Fewest blocks inside the body for the body to be used; below it every block is.
_MIN_BODY_BLOCKS = 16


def block_statistics(
    images: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SD about the best-fitting quadratic surface, minimum and maximum of each
    :data:`BLOCK`-pixel square block (the blocks tile the slice).

    The surface (1, u, v, u^2, v^2, uv: orthogonal on a square grid, so each
    coefficient is one projection) takes smooth shading and gentle anatomy out of
    the SD, which then measures what varies from pixel to pixel.

    Args:
        images: (z, y, x) array, any real dtype.

    Returns:
        Three float64 arrays of shape (z, y // BLOCK, x // BLOCK).
    """
    k = BLOCK
    depth, height, width = images.shape
    ny, nx = height // k, width // k
    cropped = images[:, : ny * k, : nx * k]
    # Extremes over a block's rows, then over every k-th column: NumPy reduces
    # whole rows fast and short runs of a row slowly.
    rows = cropped.reshape(depth, ny, k, nx * k)
    row_low, row_high = rows.min(axis=2), rows.max(axis=2)
    low = np.minimum.reduce([row_low[..., j::k] for j in range(k)]).astype(np.float64)
    high = np.maximum.reduce([row_high[..., j::k] for j in range(k)]).astype(np.float64)
    x = cropped.astype(np.float64).reshape(depth, ny, k, nx, k)
    u = np.arange(k) - (k - 1) / 2
    across, down = np.meshgrid(u, u)
    centred = float((u * u).mean())
    basis = (
        np.ones((k, k)),
        across,
        down,
        across * across - centred,
        down * down - centred,
        across * down,
    )
    residual = np.einsum("zacbd,zacbd->zab", x, x)
    for b in basis:
        residual -= np.einsum("zacbd,cd->zab", x, b) ** 2 / float((b * b).sum())
    sd = np.sqrt(np.maximum(residual, 0) / (k * k - len(basis)))
    return sd, low, high


def estimate_noise_sd(
    images: np.ndarray | torch.Tensor, *, body_threshold: float | None = -500.0
) -> np.ndarray:
    """Noise SD of each slice, in the images' units (HU for CT).

    Args:
        images: (z, y, x) or (y, x) array (or tensor, on any device) in original
            units.
        body_threshold: a block belongs to the patient when any pixel exceeds this
            value (default -500, CT in HU); ``None`` uses every block (MR, where
            intensities have no fixed scale).

    Returns:
        float64 array of shape (z,): NaN for a slice smaller than one block, 0
        for one without any block that varies.
    """
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    stack = np.asarray(images)
    if stack.ndim == 2:
        stack = stack[None]
    if stack.ndim != 3:
        raise ValueError(
            f"estimate_noise_sd: expected a (y, x) or (z, y, x) array, got shape "
            f"{stack.shape}"
        )
    depth, height, width = stack.shape
    if depth == 0 or height < BLOCK or width < BLOCK:
        return np.full(depth, np.nan)
    result = np.zeros(depth)
    sd, low, high = block_statistics(stack)
    floor = stack.reshape(depth, -1).min(axis=1)
    for index in range(depth):
        flat = flat_blocks(
            sd[index], low[index], high[index], floor[index], body_threshold
        )
        if flat.any():
            result[index] = float(np.median(sd[index][flat]))
    return result


def flat_blocks(
    sd: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    floor: float,
    body_threshold: float | None,
) -> np.ndarray:
    """Which blocks of one slice hold noise alone (module docstring).

    Args:
        sd, low, high: (by, bx) from :func:`block_statistics`.
        floor: the slice's minimum (its padding value, if it has padding).
        body_threshold: as for :func:`estimate_noise_sd`.

    Returns:
        (by, bx) boolean mask; all False when no block varies.
    """
    # Padding (the slice's minimum, or constant air) carries no noise; a constant
    # block inside the body does: it says the image has none.
    inside_level = floor if body_threshold is None else body_threshold
    varies = (low > floor) & ((high > low) | (high > inside_level))
    candidates = varies
    if body_threshold is not None:
        inside = varies & ndimage.binary_fill_holes(high > body_threshold)
        if inside.sum() >= _MIN_BODY_BLOCKS:
            candidates = inside
    if not candidates.any():
        return candidates
    cut = FLAT_BLOCK_FACTOR * np.quantile(sd[candidates], _FLAT_QUANTILE)
    return candidates & (sd <= cut)


def noise_level_map(noise_sd: torch.Tensor, unit: float) -> torch.Tensor:
    """The value of a noise-conditioned network's second input channel:
    ``log2(1 + noise_sd / unit) / 8`` (about 0.07 at half a unit, 0.4 at ten and
    0.8 at a hundred), so quiet and noisy slices are far apart in what the network
    sees, as a linear map in normalised units would not make them.

    Args:
        noise_sd: noise SDs in normalised units (after the input spec's
            normalisation), any shape.
        unit: the input spec's ``noise_unit``, default in bundles 0.005 (1 HU
            at CT's 200 HU scale).
    """
    return torch.log2(1.0 + noise_sd.clamp(min=0) / unit) / 8.0


def limit_residual(
    images: torch.Tensor,
    denoised: torch.Tensor,
    noise_sd: torch.Tensor,
    *,
    sd_multiple: float,
    window: int,
) -> torch.Tensor:
    """``denoised`` with its residual scaled down to at most ``sd_multiple`` times
    the slice's noise SD in local RMS.

    The residual's RMS over ``window`` x ``window`` neighbourhoods is compared with
    ``sd_multiple * noise_sd``; where it is larger the residual is multiplied by
    their ratio (each pixel by the smallest ratio of the windows near it, a
    superset of those it lies in, so every window ends within the limit), and
    left as it is elsewhere. A slice with no measurable noise keeps its input.
    Both filters are separable or blocked (cumulative sums; block minima), about
    6x faster on a CPU than 2D pooling with a stride of one.

    Args:
        images: (n, 1, y, x) network input (normalised or original units).
        denoised: the network's output, same shape and units.
        noise_sd: (n,) noise SD of each slice in the same units.
        sd_multiple: local residual RMS allowed, in noise SDs (> 0).
        window: neighbourhood edge in pixels (odd, >= 3).

    Returns:
        The limited output, same shape, dtype and device as ``denoised``.
    """
    if not sd_multiple > 0:
        raise ValueError(f"limit_residual: sd_multiple must be > 0, got {sd_multiple}")
    if window < 3 or window % 2 == 0:
        raise ValueError(f"limit_residual: window must be odd and >= 3, got {window}")
    residual = images - denoised
    energy = _box_mean(residual * residual, window)
    allowed = sd_multiple * noise_sd.to(residual.dtype).reshape(-1, 1, 1, 1)
    scale = (allowed / energy.sqrt().clamp(min=1e-12)).clamp(max=1.0)
    return images - residual * _window_min(scale, window)


def _box_mean(values: torch.Tensor, window: int) -> torch.Tensor:
    """Mean over each ``window`` x ``window`` neighbourhood (edges replicated),
    from cumulative sums in float64 (exact to rounding, any window)."""
    half = window // 2
    padded = F.pad(values, (half + 1, half, half + 1, half), mode="replicate")
    sums = padded.double().cumsum(-1)
    sums = sums[..., window:] - sums[..., :-window]
    sums = sums.cumsum(-2)
    sums = sums[..., window:, :] - sums[..., :-window, :]
    return (sums / (window * window)).clamp(min=0).to(values.dtype)


def _window_min(values: torch.Tensor, window: int) -> torch.Tensor:
    """For each pixel, a minimum over a superset of its ``window`` neighbourhood:
    the minima of blocks of ``window // 2`` pixels, then of each block's 3 x 3
    blocks (a pixel's window never reaches beyond its neighbouring blocks)."""
    block = max(1, window // 2)
    height, width = values.shape[-2:]
    padded = F.pad(
        values, (0, (-width) % block, 0, (-height) % block), mode="replicate"
    )
    minima = -F.max_pool2d(-padded, block, stride=block)
    minima = -F.max_pool2d(F.pad(-minima, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    if block > 1:
        minima = F.interpolate(minima, scale_factor=block, mode="nearest")
    return minima[..., :height, :width]


def gaussian_blur_2d(
    images: torch.Tensor, sigma_px: tuple[float, float]
) -> torch.Tensor:
    """(n, c, y, x) ``images`` blurred by a separable Gaussian of ``sigma_px``
    (y, x) pixels, truncated at 4 SD, edges reflected (replicated where the slice
    is too small to reflect)."""
    out = images
    for axis, sigma in ((2, float(sigma_px[0])), (3, float(sigma_px[1]))):
        if not sigma > 0:
            continue
        radius = max(1, math.ceil(4 * sigma))
        taps = torch.arange(
            -radius, radius + 1, device=images.device, dtype=torch.float32
        )
        kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
        kernel = (kernel / kernel.sum()).to(images.dtype)
        size = out.shape[axis]
        mode = "reflect" if radius < size else "replicate"
        if axis == 2:
            padded = F.pad(out, (0, 0, radius, radius), mode=mode)
            weight = kernel.reshape(1, 1, -1, 1).expand(out.shape[1], 1, -1, 1)
        else:
            padded = F.pad(out, (radius, radius, 0, 0), mode=mode)
            weight = kernel.reshape(1, 1, 1, -1).expand(out.shape[1], 1, 1, -1)
        out = F.conv2d(padded, weight, groups=out.shape[1])
    return out


def keep_low_frequencies(
    images: torch.Tensor,
    denoised: torch.Tensor,
    *,
    sigma_mm: float,
    pixel_mm: tuple[float, float],
) -> torch.Tensor:
    """``denoised`` with the input's content coarser than ``sigma_mm`` put back:
    ``denoised + G * (images - denoised)``, ``G`` a Gaussian of ``sigma_mm``.

    The residual (input - output) becomes ``(1 - G) * (images - denoised)``: it
    holds detail finer than about ``sigma_mm`` only, and its local mean over
    anything a few ``sigma_mm`` across is zero.

    Args:
        images: (n, 1, y, x) network input.
        denoised: the network's (limited) output, same shape and units.
        sigma_mm: the Gaussian's SD in mm (> 0).
        pixel_mm: (row, column) pixel spacing in mm (> 0).

    Returns:
        The output, same shape, dtype and device as ``denoised``.
    """
    if not sigma_mm > 0:
        raise ValueError(f"keep_low_frequencies: sigma_mm must be > 0, got {sigma_mm}")
    if len(pixel_mm) != 2 or not all(float(v) > 0 for v in pixel_mm):
        raise ValueError(
            f"keep_low_frequencies: pixel_mm must be two spacings > 0, got {pixel_mm!r}"
        )
    sigma_px = (sigma_mm / float(pixel_mm[0]), sigma_mm / float(pixel_mm[1]))
    return denoised + gaussian_blur_2d(images - denoised, sigma_px)
