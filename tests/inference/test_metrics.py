"""Tests for inference.metrics: noise estimates and structure left in the residual."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from inference.metrics import STRUCTURE_THRESHOLD, compute_metrics, estimate_noise_sd

from .inference_fixtures import phantom


def clean_and_noisy(noise_hu: float = 20.0) -> tuple[np.ndarray, np.ndarray]:
    clean = phantom((4, 64, 64), seed=0, noise_hu=0.0)
    rng = np.random.default_rng(1)
    noisy = clean + rng.normal(0, noise_hu, clean.shape).astype(np.float32)
    return clean, noisy


@pytest.mark.parametrize("noise_hu", [5.0, 20.0, 80.0])
def test_noise_estimate_recovers_white_noise_sd_despite_edges(noise_hu: float) -> None:
    _, noisy = clean_and_noisy(noise_hu)
    estimate = estimate_noise_sd(noisy)
    np.testing.assert_allclose(estimate, noise_hu, rtol=0.1)


def test_constant_padding_does_not_bias_the_noise_estimate() -> None:
    _, noisy = clean_and_noisy(20.0)
    noisy[:, :, :24] = -3024.0
    np.testing.assert_allclose(estimate_noise_sd(noisy), 20.0, rtol=0.1)


def test_pure_noise_residual_is_not_flagged() -> None:
    clean, noisy = clean_and_noisy()
    rng = np.random.default_rng(3)
    denoised = clean + rng.normal(0, 1.0, clean.shape).astype(np.float32)
    metrics = compute_metrics(noisy, denoised)
    assert metrics["flagged_slices"] == []
    assert metrics["structure_score_max"] < 0.1
    assert metrics["noise_sd_before"] == pytest.approx(20.0, rel=0.1)
    assert metrics["noise_sd_after"] == pytest.approx(1.0, rel=0.15)
    assert metrics["residual_sd"] == pytest.approx(20.0, rel=0.05)


def test_residual_holding_a_fraction_of_the_anatomy_is_flagged() -> None:
    clean, noisy = clean_and_noisy()
    reconstruction = clean * 0.9
    reconstruction[1] = clean[1]
    metrics = compute_metrics(noisy, reconstruction)
    assert metrics["flagged_slices"] == [0, 2, 3]
    assert metrics["structure_score_max"] > STRUCTURE_THRESHOLD
    assert metrics["per_slice"]["structure_score"][1] < STRUCTURE_THRESHOLD


def test_blurred_away_edges_are_flagged() -> None:
    clean, noisy = clean_and_noisy(5.0)
    blurred = ndimage.gaussian_filter(clean, sigma=(0, 2, 2))
    metrics = compute_metrics(noisy, blurred)
    assert metrics["flagged_slices"] == [0, 1, 2, 3]


def test_denoised_output_reports_noise_reduction() -> None:
    clean, noisy = clean_and_noisy(20.0)
    rng = np.random.default_rng(2)
    denoised = clean + rng.normal(0, 5.0, clean.shape).astype(np.float32)
    metrics = compute_metrics(noisy, denoised)
    assert metrics["noise_reduction_ratio"] == pytest.approx(4.0, rel=0.15)
    assert len(metrics["per_slice"]["noise_sd_after"]) == 4
    json.dumps(metrics, allow_nan=False)


def test_tiny_slices_give_json_safe_metrics() -> None:
    metrics = compute_metrics(
        np.ones((2, 2, 2), np.float32), np.ones((2, 2, 2), np.float32)
    )
    assert metrics["noise_sd_before"] is None
    json.dumps(metrics, allow_nan=False)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 1000, 1001, 130050])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_median_equals_numpy_median(size: int, dtype: type) -> None:
    from inference.metrics import _median

    rng = np.random.default_rng(size)
    for values in (
        np.abs(rng.normal(0, 5, size)),
        rng.integers(0, 4, size).astype(float),  # ties around the middle
        np.full(size, 7.25),
    ):
        values = values.astype(dtype)
        fast, reference = _median(values), np.median(values)
        assert fast == reference and fast.dtype == reference.dtype


def test_fast_median_is_nan_when_a_value_is_nan() -> None:
    from inference.metrics import _median

    assert np.isnan(_median(np.array([1.0, np.nan, 2.0, 3.0], dtype=np.float32)))


@pytest.mark.parametrize("as_tensor", [False, True])
@pytest.mark.parametrize("shape", [(1, 2, 2), (2, 3, 5), (1, 7, 2), (3, 64, 48)])
def test_gradient_magnitude_is_numpys_within_rounding(
    shape: tuple, as_tensor: bool
) -> None:
    import torch

    from inference.metrics import _gradient_magnitude

    values = np.random.default_rng(7).normal(0, 50, shape).astype(np.float32)
    expected = np.hypot(*np.gradient(values, axis=(1, 2)))
    got = _gradient_magnitude(torch.from_numpy(values) if as_tensor else values)
    got = got.numpy() if as_tensor else got
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
