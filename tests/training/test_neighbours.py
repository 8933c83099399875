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


def test_held_out_slices_and_their_margin_never_reach_training(tmp_path) -> None:
    """Slice indices are the series' own: nothing is dropped without a held-out
    range, and with one no training item uses a held-out slice, a slice of its
    margin, or a neighbour from either."""
    from dicomio.synthetic import write_series
    from training.data import series_neighbours, series_slices, volume_slices

    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:160, :160]
    body = np.where(np.hypot(yy - 80, xx - 80) < 70, 40.0, -1000.0)
    # Each slice says its own index in its mean, so kept slices can be named.
    volume = np.stack([body + k for k in range(14)])
    volume = (volume + rng.normal(0, 3, volume.shape)).astype(np.float32)
    write_series(tmp_path / "s", volume, spacing_mm=(1, 0.7, 0.7))
    np.save(tmp_path / "v.npy", volume)

    def indices(slices):
        return [round(float(np.median(s.image[body > 0])) - 40) for s in slices]

    everything = list(range(14))
    assert indices(series_slices(tmp_path / "s", "CT", held_out=None)) == everything
    assert indices(volume_slices(tmp_path / "v.npy", 0.7)) == everything
    train = [0, 1, 2, 10, 11, 12, 13]  # held out 5..7, margin 3..4 and 8..9
    held = [5, 6, 7]
    assert indices(series_slices(tmp_path / "s", "CT", held_out=(5, 8))) == train
    assert indices(volume_slices(tmp_path / "v.npy", 0.7, held_out=(5, 8))) == train
    got = volume_slices(tmp_path / "v.npy", 0.7, held_out=(5, 8), split="held_out")
    assert indices(got) == held
    items = series_neighbours(tmp_path / "s", "CT", held_out=(5, 8))
    assert indices(items) == [1, 11, 12]  # both neighbours are training slices too
