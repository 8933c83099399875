"""Tests for inference.metrics: structure left in the residual, noise before/after."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from inference.metrics import (
    ANATOMY_THRESHOLD,
    STRUCTURE_THRESHOLD,
    compute_metrics,
)

from .inference_fixtures import phantom


def clean_and_noisy(
    noise_hu: float = 20.0, shape: tuple[int, int, int] = (4, 192, 192)
) -> tuple[np.ndarray, np.ndarray]:
    clean = phantom(shape, seed=0, noise_hu=0.0)
    rng = np.random.default_rng(1)
    noisy = clean + rng.normal(0, noise_hu, clean.shape).astype(np.float32)
    return clean, noisy


def test_pure_noise_residual_is_not_flagged() -> None:
    clean, noisy = clean_and_noisy()
    rng = np.random.default_rng(3)
    denoised = clean + rng.normal(0, 1.0, clean.shape).astype(np.float32)
    metrics = compute_metrics(noisy, denoised)
    assert metrics["flagged_slices"] == []
    # Noise alone has the same fine-scale energy on edges as in flat tissue.
    assert 0.7 < metrics["structure_score_max"] < 1.4
    assert metrics["anatomy_correlation_max"] < 0.1
    assert metrics["noise_sd_before"] == pytest.approx(20.0, rel=0.15)
    assert metrics["noise_sd_after"] == pytest.approx(1.0, rel=0.2)
    assert metrics["residual_sd"] == pytest.approx(20.0, rel=0.05)


def test_residual_holding_a_fraction_of_the_anatomy_is_flagged() -> None:
    clean, noisy = clean_and_noisy()
    reconstruction = clean * 0.8
    reconstruction[1] = clean[1]
    metrics = compute_metrics(noisy, reconstruction)
    assert metrics["flagged_slices"] == [0, 2, 3]
    assert metrics["anatomy_correlation_max"] > ANATOMY_THRESHOLD
    assert metrics["per_slice"]["anatomy_correlation"][1] < ANATOMY_THRESHOLD


def test_blurred_away_edges_are_flagged() -> None:
    clean, noisy = clean_and_noisy(5.0)
    blurred = ndimage.gaussian_filter(noisy, sigma=(0, 1.5, 1.5))
    metrics = compute_metrics(noisy, blurred)
    assert metrics["flagged_slices"] == [0, 1, 2, 3]
    assert metrics["structure_score_max"] > STRUCTURE_THRESHOLD


def test_edges_left_alone_are_not_flagged_even_when_noise_stays() -> None:
    clean, noisy = clean_and_noisy(10.0)
    # Half the noise removed everywhere, edges untouched: a conservative denoiser.
    denoised = clean + 0.5 * (noisy - clean)
    metrics = compute_metrics(noisy, denoised)
    assert metrics["flagged_slices"] == []


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


def test_mr_series_use_a_relative_body_threshold() -> None:
    clean, noisy = clean_and_noisy(20.0)
    magnitude = np.maximum(noisy + 1000.0, 0.0)
    blurred = ndimage.gaussian_filter(magnitude, sigma=(0, 1.5, 1.5))
    metrics = compute_metrics(magnitude, blurred, body_threshold=None)
    assert metrics["flagged_slices"] == [0, 1, 2, 3]
