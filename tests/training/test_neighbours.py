"""Real-data measures without a clean reference (training/neighbours.py), on series
whose truth is known: the same smooth anatomy in every slice with independent noise."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from training.neighbours import neighbour_noise_sd, neighbour_test


@pytest.fixture(scope="module")
def series() -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:192, :192]
    body = np.hypot(yy - 96, xx - 96) < 85
    anatomy = np.where(body, 40.0, -1000.0)
    for cy, cx, r, v in (
        (70, 70, 14, 300.0),
        (120, 110, 20, -60.0),
        (90, 130, 8, 150.0),
    ):
        anatomy[np.hypot(yy - cy, xx - cx) < r] = v
    anatomy = ndimage.gaussian_filter(anatomy, 0.7)
    rng = np.random.default_rng(0)
    noise = ndimage.gaussian_filter(rng.normal(size=(7, 192, 192)), (0, 0.8, 0.8))
    noise *= 5.0 / noise.std()
    clean = np.repeat(anatomy[None], 7, axis=0).astype(np.float32)
    return clean, (clean + noise).astype(np.float32)


def test_ideal_denoiser_removes_all_noise_and_no_structure(series) -> None:
    clean, noisy = series
    result = neighbour_test(noisy, clean, [2, 3, 4])
    assert result["noise_removed"] == pytest.approx(1.0, abs=0.1)
    assert abs(result["structure"]) < 0.05
    assert result["noise_sd"] == pytest.approx(5.0, rel=0.15)
    assert result["residual_to_noise"] == pytest.approx(1.0, rel=0.2)


def test_identity_removes_nothing(series) -> None:
    _, noisy = series
    result = neighbour_test(noisy, noisy, [2, 3, 4])
    assert abs(result["noise_removed"]) < 0.05 and result["residual_sd"] == 0.0


def test_blur_shows_structure_in_the_residual(series) -> None:
    _, noisy = series
    blurred = ndimage.gaussian_filter(noisy, (0, 1.5, 1.5))
    result = neighbour_test(noisy, blurred, [2, 3, 4])
    assert result["structure"] > 0.3
    assert result["residual_to_noise"] > 2.0


def test_slices_need_two_neighbours(series) -> None:
    _, noisy = series
    with pytest.raises(ValueError, match="neighbours"):
        neighbour_test(noisy, noisy, [0])
    assert neighbour_noise_sd(noisy, 3) == pytest.approx(5.0, rel=0.15)


def test_agreement_mask_keeps_flat_blocks_where_only_noise_differs(series) -> None:
    from training.neighbours import agreement_mask

    clean, noisy = series
    reference = 0.5 * (noisy[2] + noisy[4])
    mask = agreement_mask(noisy[3], reference)
    assert mask.sum() > 16 * 16 * 8
    # A change of anatomy between the slices is never trusted.
    changed = noisy[3].copy()
    changed[60:100, 60:100] += 80.0
    assert not agreement_mask(changed, reference)[64:96, 64:96].any()
