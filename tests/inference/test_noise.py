"""Tests for inference.noise: the flat-block noise estimate and the residual limit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from inference.noise import (
    block_statistics,
    estimate_noise_sd,
    limit_residual,
    noise_level_map,
)

from .inference_fixtures import FAST_UNET_NOISE, phantom


def _correlated(shape: tuple[int, ...], sd: float, seed: int) -> np.ndarray:
    """Gaussian noise blurred like a smooth CT kernel, rescaled to ``sd``."""
    white = np.random.default_rng(seed).normal(size=shape)
    noise = ndimage.gaussian_filter(white, (0, 1.0, 1.0))
    return (noise / noise.std() * sd).astype(np.float32)


@pytest.mark.parametrize("sd", [1.0, 5.0, 40.0])
def test_white_noise_sd_is_recovered_despite_edges(sd: float) -> None:
    clean = phantom((3, 128, 128), seed=0, noise_hu=0.0)
    noisy = clean + np.random.default_rng(1).normal(0, sd, clean.shape)
    np.testing.assert_allclose(estimate_noise_sd(noisy), sd, rtol=0.1)


def test_correlated_noise_sd_is_recovered() -> None:
    clean = phantom((3, 128, 128), seed=2, noise_hu=0.0)
    noisy = clean + _correlated(clean.shape, 10.0, 3)
    np.testing.assert_allclose(estimate_noise_sd(noisy), 10.0, rtol=0.15)


def test_constant_padding_does_not_bias_the_estimate() -> None:
    clean = phantom((2, 128, 128), seed=4, noise_hu=0.0)
    noisy = clean + np.random.default_rng(5).normal(0, 20.0, clean.shape)
    noisy[:, :, :40] = -3024.0
    np.testing.assert_allclose(estimate_noise_sd(noisy), 20.0, rtol=0.1)


def test_a_noiseless_image_has_no_noise_and_a_tiny_one_none_measured() -> None:
    clean = phantom((1, 256, 256), seed=6, noise_hu=0.0)
    assert estimate_noise_sd(clean)[0] == 0.0
    assert np.isnan(estimate_noise_sd(np.zeros((1, 8, 8), np.float32))[0])


def test_block_statistics_remove_each_blocks_smooth_surface() -> None:
    yy, xx = np.mgrid[:32, :32].astype(np.float32)
    ramp = 3.0 * yy - 2.0 * xx + 0.05 * yy * yy - 0.03 * xx * yy + 7.0
    sd, low, high = block_statistics(ramp[None])
    assert sd.shape == (1, 2, 2)
    np.testing.assert_allclose(sd, 0.0, atol=1e-4)
    assert low[0, 0, 0] == ramp[:16, :16].min()
    assert high[0, 1, 1] == ramp[16:, 16:].max()


def test_tensors_on_any_device_are_accepted() -> None:
    noisy = phantom((2, 64, 64), seed=7, noise_hu=8.0)
    np.testing.assert_allclose(
        estimate_noise_sd(torch.from_numpy(noisy)), estimate_noise_sd(noisy)
    )


def test_limit_residual_caps_the_local_rms_and_keeps_small_residuals() -> None:
    images = torch.zeros(2, 1, 32, 32)
    denoised = images.clone()
    denoised[0, 0, 8:24, 8:24] = 10.0  # a residual of 10 where 1.5 are allowed
    denoised[1, 0] = 0.5  # a residual well within the limit
    limited = limit_residual(
        images, denoised, torch.tensor([1.0, 1.0]), sd_multiple=1.5, window=5
    )
    residual = images - limited
    local_rms = torch.nn.functional.avg_pool2d(residual**2, 5, stride=1).sqrt()
    assert float(local_rms[0].max()) <= 1.5 + 1e-4
    assert float(residual[0].abs().max()) > 1.0  # limited, not erased
    torch.testing.assert_close(limited[1], denoised[1])


def test_limit_residual_leaves_a_noiseless_slice_unchanged() -> None:
    images = torch.randn(1, 1, 16, 16)
    limited = limit_residual(
        images, images + 1.0, torch.zeros(1), sd_multiple=1.5, window=3
    )
    torch.testing.assert_close(limited, images)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sd_multiple": 0.0, "window": 3}, "sd_multiple"),
        ({"sd_multiple": 1.0, "window": 4}, "window"),
    ],
)
def test_limit_residual_refuses_bad_arguments(kwargs: dict, message: str) -> None:
    images = torch.zeros(1, 1, 8, 8)
    with pytest.raises(ValueError, match=message):
        limit_residual(images, images, torch.ones(1), **kwargs)


def test_noise_level_map_separates_quiet_from_noisy() -> None:
    levels = noise_level_map(torch.tensor([0.0, 0.0025, 0.05, 0.5]), 0.005)
    assert float(levels[0]) == 0.0
    assert bool((levels[1:] > levels[:-1]).all())
    assert float(levels[-1]) < 1.0


_SPEC = {
    "modality": "CT",
    "spatial_dims": 2,
    "normalisation": {"kind": "linear", "offset": 0.0, "scale": 200.0},
    "batch_size": 2,
    "noise_unit": 0.005,
}


def _random_conditioned_network() -> torch.nn.Module:
    """A tiny noise-conditioned network whose output differs from its input."""
    from inference.networks import build_network

    network = build_network(FAST_UNET_NOISE).eval()
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.normal_(0.0, 0.3)
    return network


def test_a_slice_too_small_to_measure_comes_out_unchanged() -> None:
    from inference.runner import denoise_images

    network = _random_conditioned_network()
    spec = {**_SPEC, "residual_limit": {"sd_multiple": 1.5, "window": 9}}
    tiny = np.random.default_rng(0).normal(40, 10, (12, 12)).astype(np.float32)
    (out,) = denoise_images(network, [tiny], spec)
    np.testing.assert_allclose(out, tiny, atol=1e-4)  # the normalisation round trip


def test_an_empty_stack_has_no_estimates() -> None:
    from inference.noise import estimate_noise_sd

    assert estimate_noise_sd(np.zeros((0, 64, 64), np.float32)).shape == (0,)


@pytest.mark.parametrize("window", [3, 5, 9])
@pytest.mark.parametrize("shape", [(64, 64), (61, 37)])
def test_limit_residual_holds_every_window_on_random_residuals(
    window: int, shape: tuple[int, int]
) -> None:
    """Against plain 2D pooling: every window within the limit, and a pixel is
    never scaled less than it needs (the blocked minimum is only a little wider)."""
    from torch.nn import functional as F

    generator = torch.Generator().manual_seed(window)
    images = torch.randn(3, 1, *shape, generator=generator)
    denoised = (
        images
        + torch.randn(3, 1, *shape, generator=generator)
        * torch.rand(3, 1, 1, 1, generator=generator)
        * 4
    )
    sigma = torch.tensor([0.5, 1.0, 2.0])
    limited = limit_residual(images, denoised, sigma, sd_multiple=1.5, window=window)
    residual = images - limited
    local_rms = F.avg_pool2d(residual**2, window, stride=1).sqrt()
    assert bool((local_rms <= 1.5 * sigma.reshape(-1, 1, 1, 1) * (1 + 1e-5)).all())
    half = window // 2
    pad = (half,) * 4
    energy = F.avg_pool2d(
        F.pad((images - denoised) ** 2, pad, mode="replicate"), window, stride=1
    )
    exact = (1.5 * sigma.reshape(-1, 1, 1, 1) / energy.sqrt()).clamp(max=1.0)
    exact = -F.max_pool2d(F.pad(-exact, pad, mode="replicate"), window, stride=1)
    before = images - denoised
    measurable = before.abs() > 1e-2  # the ratio is rounding noise elsewhere
    kept = residual[measurable] / before[measurable]
    assert bool((kept <= exact[measurable] + 1e-4).all())
    assert float(kept.mean()) >= 0.8 * float(exact[measurable].mean())


def test_quiet_slices_run_in_fp32_whatever_precision_was_asked() -> None:
    """bf16 keeps 8 bits of a feature that carries the image's intensity: a slice
    with a few HU of noise runs in fp32 (same output as asked for fp32), a noisy one
    in the precision asked (a different rounding)."""
    from inference.runner import Normalisation, predict_slices, reduced_precision_ok

    network = _random_conditioned_network()
    spec = _SPEC
    rng = np.random.default_rng(1)
    image = torch.from_numpy(rng.normal(600, 2, (2, 64, 64)).astype(np.float32))

    def run(noise_hu: float, precision: str) -> torch.Tensor:
        return predict_slices(
            image,
            network,
            spec=spec,
            norm=Normalisation("linear", 0.0, 200.0),
            device=torch.device("cpu"),
            precision=precision,
            batch_size=2,
            noise_sd=np.full(2, noise_hu),
        )

    assert not reduced_precision_ok(torch.tensor([2.0 / 200]))
    assert reduced_precision_ok(torch.tensor([20.0 / 200, 16.0 / 200]))
    assert not reduced_precision_ok(torch.tensor([20.0 / 200, float("nan")]))
    torch.testing.assert_close(run(2.0, "bf16"), run(2.0, "fp32"))
    assert not torch.equal(run(20.0, "bf16"), run(20.0, "fp32"))


def _disc(size: int, radius_px: float, contrast: float) -> np.ndarray:
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    return np.where(x * x + y * y <= radius_px * radius_px, contrast, 0.0)


def test_keep_low_frequencies_gives_back_a_lesion_the_network_smoothed_away() -> None:
    from inference.noise import keep_low_frequencies

    # A 10 mm, 5 HU disc in 0.5 mm pixels that a "network" flattened entirely.
    lesion = torch.from_numpy(_disc(96, 10.0, 5.0)).float()[None, None]
    flat = torch.zeros_like(lesion)
    out = keep_low_frequencies(lesion, flat, sigma_mm=0.9, pixel_mm=(0.5, 0.5))
    inside = torch.from_numpy(_disc(96, 6.0, 1.0) > 0)
    assert float(out[0, 0][inside].mean()) == pytest.approx(5.0, abs=0.1)
    # The mean over the whole slice (a large ROI) is the input's exactly.
    assert float(out.mean()) == pytest.approx(float(lesion.mean()), rel=1e-4)


def test_keep_low_frequencies_leaves_fine_noise_removed() -> None:
    from inference.noise import keep_low_frequencies

    noise = torch.from_numpy(np.random.default_rng(0).normal(0, 10, (1, 1, 128, 128)))
    clean = torch.zeros_like(noise)
    out = keep_low_frequencies(noise, clean, sigma_mm=0.9, pixel_mm=(0.45, 0.45))
    # White noise through a 2-pixel Gaussian keeps 1 / (4 pi 2^2) of its variance.
    kept = float(out.var()) / float(noise.var())
    assert kept == pytest.approx(1 / (4 * np.pi * 4), rel=0.15)
    # Coarser pixels: the same 0.9 mm is fewer pixels, so more of the noise returns.
    coarse = keep_low_frequencies(noise, clean, sigma_mm=0.9, pixel_mm=(0.9, 0.9))
    assert float(coarse.var()) > 3 * float(out.var())


def test_keep_low_frequencies_handles_slices_smaller_than_its_kernel() -> None:
    from inference.noise import keep_low_frequencies

    image = torch.arange(15.0).reshape(1, 1, 3, 5)
    out = keep_low_frequencies(
        image, torch.zeros_like(image), sigma_mm=2.0, pixel_mm=(1, 1)
    )
    assert out.shape == image.shape and bool(torch.isfinite(out).all())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sigma_mm": 0.0, "pixel_mm": (1.0, 1.0)}, "sigma_mm must be > 0"),
        ({"sigma_mm": 0.9, "pixel_mm": (0.0, 1.0)}, "pixel_mm must be two"),
        ({"sigma_mm": 0.9, "pixel_mm": (1.0,)}, "pixel_mm must be two"),
    ],
)
def test_keep_low_frequencies_refuses_bad_arguments(kwargs: dict, message: str) -> None:
    from inference.noise import keep_low_frequencies

    images = torch.zeros(1, 1, 8, 8)
    with pytest.raises(ValueError, match=message):
        keep_low_frequencies(images, images, **kwargs)


def test_the_runner_keeps_low_frequencies_at_each_images_own_spacing() -> None:
    from inference.runner import denoise_images

    network = _random_conditioned_network()
    spec = {**_SPEC, "keep_low_frequencies": {"sigma_mm": 0.9}}
    rng = np.random.default_rng(1)
    image = (rng.normal(0, 20, (64, 64)) + 40).astype(np.float32)
    plain, fine, coarse = (
        denoise_images(network, [image], _SPEC)[0],
        *denoise_images(network, [image, image], spec, pixel_mm=[0.3, (1.8, 1.8)]),
    )
    # 0.9 mm is 3 px at 0.3 mm and half a pixel at 1.8 mm: there nearly all of
    # the input comes back.
    residual = {
        name: image - out
        for name, out in (("plain", plain), ("fine", fine), ("coarse", coarse))
    }
    assert not np.allclose(fine, coarse)
    assert np.abs(residual["coarse"]).mean() < np.abs(residual["fine"]).mean()
    # The residual's low frequencies are gone: its blurred version is near zero.
    blurred = ndimage.gaussian_filter(residual["fine"], 6)[8:-8, 8:-8]
    plain_blurred = ndimage.gaussian_filter(residual["plain"], 6)[8:-8, 8:-8]
    assert np.abs(blurred).mean() < 0.2 * np.abs(plain_blurred).mean()
    # A numpy number is one spacing for every image.
    (same,) = denoise_images(network, [image], spec, pixel_mm=np.float32(0.3))
    np.testing.assert_allclose(same, fine, atol=1e-4)
    with pytest.raises(ValueError, match="2 pixel spacings for 1 images"):
        denoise_images(network, [image], spec, pixel_mm=[0.5, 0.5])
