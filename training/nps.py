"""Noise texture: the noise power spectrum of real scans, and noise synthesised with it.

Real CT noise is not white: the reconstruction kernel shapes it (a smooth brain
kernel gives blotches several pixels wide, a sharp bone kernel fine grain), and a
denoiser trained on the wrong texture either leaves real noise in or takes fine
anatomy for noise. :func:`measure_nps` estimates the radial noise power spectrum
(NPS) of a slice from its flat blocks, the ones :func:`inference.noise.
estimate_noise_sd` counts as noise; :func:`parametric_nps` gives the textures of
kernels not in the data (ramp times a smooth cut-off); :func:`synthesise_noise`
draws stationary Gaussian noise of a given spectrum and SD on any device, fast
enough to make every training batch anew.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from inference.noise import BLOCK, block_statistics, flat_blocks

__all__ = ["NPS_BINS", "measure_nps", "parametric_nps", "synthesise_noise"]

#: Radial frequency bins of an NPS profile, from 0 to the Nyquist frequency (0.5
#: cycles per pixel).
NPS_BINS = 33
#: Edge of the blocks the NPS is measured on (pixels).
_NPS_BLOCK = 32


def measure_nps(
    image: np.ndarray, *, body_threshold: float | None = -500.0
) -> np.ndarray | None:
    """Radial NPS of a slice's noise, normalised to unit total power.

    The flat 32x32 blocks of the slice (every 16x16 block inside them flat by the
    rule of :mod:`inference.noise`) are detrended (best plane), windowed (Hann) and
    Fourier transformed; their power spectra are averaged and reduced to
    :data:`NPS_BINS` radial bins.

    Args:
        image: (y, x) slice in original units.
        body_threshold: as for :func:`inference.noise.estimate_noise_sd`.

    Returns:
        float64 array of :data:`NPS_BINS` values summing to 1, or ``None`` when the
        slice has fewer than 8 flat 32x32 blocks.
    """
    pixels = np.asarray(image, np.float32)
    sd, low, high = block_statistics(pixels[None])
    flat = flat_blocks(sd[0], low[0], high[0], float(pixels.min()), body_threshold)
    # A 32-pixel block at (i, j) is flat when the 16-pixel blocks it contains are.
    span = _NPS_BLOCK // BLOCK - 1
    ny, nx = flat.shape
    corners = [
        (i, j)
        for i in range(0, ny - span, span + 1)
        for j in range(0, nx - span, span + 1)
        if flat[i : i + span + 1, j : j + span + 1].all()
    ]
    if len(corners) < 8:
        return None
    n = _NPS_BLOCK
    window = np.outer(np.hanning(n), np.hanning(n))
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    design = np.stack([np.ones(n * n), yy.ravel(), xx.ravel()], axis=1)
    power = np.zeros((n, n))
    for i, j in corners:
        y0, x0 = i * BLOCK, j * BLOCK
        block = np.asarray(image[y0 : y0 + n, x0 : x0 + n], np.float64).ravel()
        coef, *_ = np.linalg.lstsq(design, block, rcond=None)
        detrended = (block - design @ coef).reshape(n, n) * window
        power += np.abs(np.fft.fft2(detrended)) ** 2
    return _radial(power / len(corners))


def parametric_nps(peak: float, cutoff: float, order: float = 4.0) -> np.ndarray:
    """An FBP-like NPS profile: ramp ``f**peak`` times ``exp(-(f / cutoff)**order)``.

    Args:
        peak: exponent of the ramp (1 for filtered back-projection).
        cutoff: frequency of the kernel's roll-off, cycles per pixel (0.1 for a
            very smooth kernel, 0.5 for a sharp one).
        order: steepness of the roll-off, default 4.

    Returns:
        :data:`NPS_BINS` values summing to 1.
    """
    if not cutoff > 0 or peak < 0:
        raise ValueError(
            f"parametric_nps: need cutoff > 0 and peak >= 0, got {cutoff}, {peak}"
        )
    f = np.linspace(0.0, 0.5, NPS_BINS)
    profile = np.power(np.maximum(f, 1e-3), peak) * np.exp(-((f / cutoff) ** order))
    return profile / profile.sum()


def synthesise_noise(
    profiles: torch.Tensor,
    shape: Sequence[int],
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Stationary Gaussian noise with unit SD and the given radial spectra.

    Args:
        profiles: (n, :data:`NPS_BINS`) radial NPS profiles, one per image, on the
            device the noise is wanted on.
        shape: (y, x) of each noise image.
        generator: random generator on that device.

    Returns:
        (n, y, x) float32 tensor, each image with zero mean and unit SD.
    """
    count = profiles.shape[0]
    height, width = (int(v) for v in shape)
    device = profiles.device
    white = torch.randn(count, height, width, generator=generator, device=device)
    fy = torch.fft.fftfreq(height, device=device)[:, None]
    fx = torch.fft.fftfreq(width, device=device)[None, :]
    radius = torch.sqrt(fy * fy + fx * fx).clamp(max=0.5)
    position = radius / 0.5 * (NPS_BINS - 1)
    lower = position.floor().long().clamp(max=NPS_BINS - 2)
    weight = (position - lower).float()
    profile = profiles.float()
    amplitude = (
        (profile[:, lower] * (1 - weight) + profile[:, lower + 1] * weight)
        .clamp(min=0)
        .sqrt()
    )
    noise = torch.fft.ifft2(torch.fft.fft2(white) * amplitude).real
    noise = noise - noise.mean(dim=(1, 2), keepdim=True)
    return noise / noise.std(dim=(1, 2), keepdim=True).clamp(min=1e-12)


def _radial(power: np.ndarray) -> np.ndarray:
    """Average a 2D power spectrum (FFT order) over rings into NPS_BINS bins."""
    n = power.shape[0]
    f = np.fft.fftfreq(n)
    radius = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    bins = np.minimum(np.round(radius / 0.5 * (NPS_BINS - 1)).astype(int), NPS_BINS - 1)
    totals = np.bincount(bins.ravel(), power.ravel(), minlength=NPS_BINS)
    counts = np.bincount(bins.ravel(), minlength=NPS_BINS)
    profile = np.divide(totals, counts, out=np.zeros(NPS_BINS), where=counts > 0)
    # Bins no ring reached take their neighbours' value.
    empty = counts == 0
    if empty.any():
        profile[empty] = np.interp(
            np.flatnonzero(empty), np.flatnonzero(~empty), profile[~empty]
        )
    total = profile.sum()
    return profile / total if total > 0 else np.full(NPS_BINS, 1.0 / NPS_BINS)
