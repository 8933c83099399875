"""Denoiser quality on real scans without a clean reference (bench, fine-tuning).

A thin contiguous real series gives each slice two neighbours that show nearly
the same anatomy with independent noise. For slice ``s`` with neighbours averaged
into ``r`` and a denoised slice ``d`` (each slice denoised alone):

* **noise removed**: in flat 16x16 blocks of the body (the half of the blocks
  where the smoothed reference varies least), ``s - r`` has variance
  ``A + 1.5 sigma^2`` (``A`` the small anatomy change, ``sigma^2`` the slice's
  noise variance) and ``d - r`` has ``A + rho sigma^2 + 0.5 sigma^2`` where
  ``rho`` is the share of noise variance left; so ``1 - rho = (var(s - r) -
  var(d - r)) / (var(s - r) / 1.5)``, taken per block and its median over blocks
  (blocks where the anatomy changes from slice to slice fall out as outliers);
* **structure**: the Pearson correlation, over the body, of the residual ``s - d``
  with the anatomy's band-pass (a difference of Gaussians at 0.7 and 3 px of
  ``r``, whose noise is independent of the residual's). A denoiser that removes
  only noise scores about 0; one that blurs scores up to about 0.7.

On any real slice, the **residual's spectrum** shows what was removed: noise has
the scan's noise power spectrum (measured on ``s - r`` in flat blocks), anatomy
piles power at low frequencies. ``spectrum_distance`` is the mean absolute log
ratio of the two radially averaged spectra, each normalised to unit power (0 when
the residual is noise-like). A quiet scan's **residual SD** over the whole body,
edges included, is compared with its noise SD: a model that takes structure has a
residual far above the noise there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = [
    "NEIGHBOUR_BLOCK",
    "agreement_mask",
    "denoise_each",
    "neighbour_noise_sd",
    "neighbour_test",
]

NEIGHBOUR_BLOCK = 16
_BAND = (0.7, 3.0)
_SPECTRUM_BINS = 16


def _body(image: np.ndarray) -> np.ndarray:
    return ndimage.binary_fill_holes(image > -500.0)


def _tiles(values: np.ndarray) -> np.ndarray:
    """(by, bx, k * k) view of the image's k x k tiles."""
    k = NEIGHBOUR_BLOCK
    ny, nx = (n - n % k for n in values.shape)
    v = values[:ny, :nx].reshape(ny // k, k, nx // k, k).transpose(0, 2, 1, 3)
    return v.reshape(ny // k, nx // k, -1)


def _blocks(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The tiles of ``values`` that lie wholly inside ``mask``."""
    return _tiles(values)[_tiles(mask).all(axis=2)]


def _flat(reference: np.ndarray, body: np.ndarray) -> np.ndarray:
    """Tiles wholly inside ``body`` whose anatomy (the reference smoothed at 2 px)
    varies less than the median such tile's, as a pixel mask."""
    gradient = np.hypot(*np.gradient(ndimage.gaussian_filter(reference, 2.0)))
    inside = _tiles(body).all(axis=2)
    strength = _tiles(gradient).mean(axis=2)
    if not inside.any():
        return np.zeros_like(body)
    keep = inside & (strength <= np.median(strength[inside]))
    k = NEIGHBOUR_BLOCK
    mask = np.zeros_like(body)
    ny, nx = keep.shape
    mask[: ny * k, : nx * k] = np.kron(keep, np.ones((k, k), bool))
    return mask


def _radial_spectrum(blocks: np.ndarray) -> np.ndarray:
    """Radially averaged power spectrum of detrended blocks, unit total."""
    k = NEIGHBOUR_BLOCK
    centred = blocks.reshape(-1, k, k) - blocks.reshape(-1, k, k).mean(
        axis=(1, 2), keepdims=True
    )
    window = np.outer(np.hanning(k), np.hanning(k))
    power = (np.abs(np.fft.fft2(centred * window)) ** 2).mean(axis=0)
    f = np.fft.fftfreq(k)
    radius = np.hypot(f[:, None], f[None, :])
    bins = np.minimum(
        (radius / 0.5 * (_SPECTRUM_BINS - 1)).round().astype(int), _SPECTRUM_BINS - 1
    )
    totals = np.bincount(bins.ravel(), power.ravel(), minlength=_SPECTRUM_BINS)
    counts = np.maximum(np.bincount(bins.ravel(), minlength=_SPECTRUM_BINS), 1)
    spectrum = totals / counts
    return spectrum / max(spectrum.sum(), 1e-30)


def agreement_mask(image: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Pixels of the flat blocks (:func:`_flat`) where ``image`` and its
    neighbours' mean ``reference`` differ by noise alone: blocks whose variance
    of the difference is at most 1.5 times the median block's."""
    body = ndimage.binary_erosion(_body(image) & _body(reference), iterations=3)
    flat = _flat(reference.astype(np.float64), body)
    tiles = _tiles((image - reference).astype(np.float64))
    variance = tiles.var(axis=2)
    inside = _tiles(flat).all(axis=2)
    if not inside.any():
        return np.zeros(image.shape, bool)
    # Within half again the median block's variance: noise, not a change of anatomy
    # (the spread of a 16x16 block's variance of noise alone is about that).
    keep = inside & (variance <= 1.5 * np.median(variance[inside]))
    k = NEIGHBOUR_BLOCK
    mask = np.zeros(image.shape, bool)
    ny, nx = keep.shape
    mask[: ny * k, : nx * k] = np.kron(keep, np.ones((k, k), bool))
    return mask


def neighbour_noise_sd(volume: np.ndarray, i: int) -> float:
    """Noise SD of slice ``i`` (HU) from its neighbours: flat blocks of ``s - r``,
    variance over 1.5, median over blocks; NaN without enough flat body."""
    s = volume[i].astype(np.float64)
    r = 0.5 * (volume[i - 1] + volume[i + 1]).astype(np.float64)
    body = ndimage.binary_erosion(_body(s) & _body(r), iterations=3)
    if body.sum() < 2000:
        return float("nan")
    blocks = _blocks(s - r, _flat(r, body))
    if len(blocks) < 8:
        return float("nan")
    variance = blocks.var(axis=1)
    return float(
        np.sqrt(np.median(variance[variance <= 3 * np.median(variance)]) / 1.5)
    )


def neighbour_test(
    volume: np.ndarray,
    denoised: np.ndarray,
    slices: Sequence[int],
) -> dict[str, Any]:
    """The neighbour-slice measures of one denoised series (module docstring).

    Args:
        volume: (z, y, x) original series in HU, slices in position order.
        denoised: the same series, each slice denoised alone.
        slices: indices to score; each needs both neighbours.

    Returns:
        ``{"structure", "noise_removed", "spectrum_distance", "residual_sd",
        "noise_sd", "residual_to_noise", "slices"}``: the correlation pooled over
        slices, the median of the per-slice medians of noise removed, the mean
        spectrum distance, the body residual SD and the noise SD (medians over
        slices, HU) and their ratio.
    """
    cov = var_res = var_band = 0.0
    removed, distances, residual_sd, noise_sd, used = [], [], [], [], []
    for i in slices:
        if i < 1 or i + 1 >= volume.shape[0]:
            raise ValueError(f"neighbour_test: slice {i} has no two neighbours")
        s = volume[i].astype(np.float64)
        d = denoised[i].astype(np.float64)
        r = 0.5 * (volume[i - 1] + volume[i + 1]).astype(np.float64)
        body = ndimage.binary_erosion(_body(s) & _body(r), iterations=3)
        if body.sum() < 2000:
            continue
        flat = _flat(r, body)
        vs = _blocks(s - r, flat)
        vd = _blocks(d - r, flat)
        if len(vs) < 8:
            continue
        var_s, var_d = vs.var(axis=1), vd.var(axis=1)
        # Blocks without noise (padding, constant fill) say nothing about it.
        keep = (var_s > 0) & (var_s <= 3 * np.median(var_s))
        if keep.sum() < 8:
            continue
        sigma2 = var_s[keep] / 1.5
        removed.append(float(np.median((var_s[keep] - var_d[keep]) / sigma2)))
        noise_sd.append(float(np.sqrt(np.median(sigma2))))
        residual = s - d
        band = ndimage.gaussian_filter(r, _BAND[0]) - ndimage.gaussian_filter(
            r, _BAND[1]
        )
        a = residual[body] - residual[body].mean()
        b = band[body] - band[body].mean()
        cov += float(a @ b)
        var_res += float(a @ a)
        var_band += float(b @ b)
        residual_sd.append(float(residual[_body(s)].std()))
        noise_spectrum = _radial_spectrum(vs[keep])
        residual_spectrum = _radial_spectrum(_blocks(residual, body))
        distances.append(
            float(
                np.mean(
                    np.abs(
                        np.log(
                            np.maximum(residual_spectrum, 1e-12)
                            / np.maximum(noise_spectrum, 1e-12)
                        )
                    )
                )
            )
        )
        used.append(int(i))
    if not used:
        raise ValueError("neighbour_test: no slice had enough body and flat area")
    structure = cov / np.sqrt(var_res * var_band) if var_res * var_band > 0 else 0.0
    noise = float(np.median(noise_sd))
    residual = float(np.median(residual_sd))
    return {
        "structure": round(float(structure), 4),
        "noise_removed": round(float(np.median(removed)), 4),
        "spectrum_distance": round(float(np.mean(distances)), 4),
        "residual_sd": round(residual, 3),
        "noise_sd": round(noise, 3),
        "residual_to_noise": round(residual / noise, 3) if noise > 0 else None,
        "slices": used,
    }


def denoise_each(
    volume: np.ndarray,
    method: Callable[[np.ndarray, float], np.ndarray],
    noise_sd: Sequence[float],
    slices: Sequence[int],
) -> np.ndarray:
    """A copy of ``volume`` with ``slices`` replaced by ``method(slice, noise SD)``."""
    out = volume.astype(np.float32).copy()
    for i in slices:
        out[i] = method(volume[i].astype(np.float32), float(noise_sd[i]))
    return out
