"""The LG-CHO and the CCT189-like phantom of the LCD study (bench/_observer.py)."""

from __future__ import annotations

import numpy as np
import pytest

from bench._observer import (
    INSERTS,
    auc,
    cct189,
    cho_auc,
    insert_rois,
    laguerre_gauss_channels,
    roi_size,
)


def test_auc_counts_pairs_and_ties_half() -> None:
    absent = np.array([0.0, 1.0, 2.0])
    present = np.array([1.0, 3.0])
    # Pairs (present > absent): 3 -> 3, 1 -> 1 win and 1 tie: (3 + 1 + 0.5) / 6.
    assert auc(absent, present) == pytest.approx(4.5 / 6)
    assert auc(present, present) == pytest.approx(0.5)


def test_channels_are_orthonormal_over_the_plane() -> None:
    basis = laguerre_gauss_channels(65, width_px=8.0)
    gram = basis.T @ basis
    np.testing.assert_allclose(gram, np.eye(5), atol=1e-3)


def test_phantom_has_the_four_inserts_at_their_contrast() -> None:
    phantom = cct189()
    assert len(phantom.masks) == 4
    for mask, (diameter, contrast), px in zip(
        phantom.masks, INSERTS, phantom.diameters_px, strict=True
    ):
        area_mm2 = mask.sum() * phantom.pixel_mm**2
        assert area_mm2 == pytest.approx(np.pi * diameter**2 / 4, rel=0.3)
        inside = (phantom.present - phantom.absent)[mask]
        assert float(inside.max()) == pytest.approx(contrast, rel=0.05)
        assert px == pytest.approx(diameter / phantom.pixel_mm)
    assert float(phantom.absent[128, 128]) == 0.0
    assert float(phantom.absent[2, 2]) == -1000.0


def _study(contrast: float, n: int = 60, seed: int = 0) -> tuple[float, float]:
    phantom = cct189()
    rng = np.random.default_rng(seed)
    mask, diameter = phantom.masks[3], phantom.diameters_px[3]
    signal = (phantom.present - phantom.absent) * contrast / INSERTS[3][1]
    present = phantom.absent + signal + rng.normal(0, 10, (n, 256, 256))
    absent = phantom.absent + rng.normal(0, 10, (n, 256, 256))
    size = roi_size(phantom.diameters_px)
    return cho_auc(
        insert_rois(present, mask, size),
        insert_rois(absent, mask, size),
        2 / 3 * diameter,
    )


def test_observer_detects_a_clear_signal_and_not_an_absent_one() -> None:
    strong, _ = _study(6.0)
    none, spread = _study(0.0)
    assert strong > 0.95
    assert abs(none - 0.5) < 0.15 and spread > 0


def test_rois_are_centred_on_the_insert() -> None:
    phantom = cct189()
    size = roi_size(phantom.diameters_px)
    rois = insert_rois(phantom.present[None], phantom.masks[3], size)
    assert rois.shape == (1, size, size) and size % 2 == 1
    centre = rois[0, size // 2 - 2 : size // 2 + 3, size // 2 - 2 : size // 2 + 3]
    assert float(centre.mean()) == pytest.approx(INSERTS[3][1], abs=0.5)
