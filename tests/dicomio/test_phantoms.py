"""Phantoms: anatomy in realistic HU, lesions with the requested contrast."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from dicomio.phantoms import TISSUE_HU, ct_phantom, mr_phantom, tissue_map
from dicomio.synthetic import phantom_volume


def _measured_contrast(image: np.ndarray, mask: np.ndarray, label: int) -> float:
    lesion = mask == label
    core = ndimage.binary_erosion(lesion)
    ring = ndimage.binary_dilation(lesion, iterations=6) & ~ndimage.binary_dilation(
        lesion, iterations=2
    )
    return float(image[core].mean() - image[ring].mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ct_lesions_have_the_requested_contrast(seed):
    phantom = ct_phantom((256, 256), seed=seed, lesion_contrast_hu=(5.0, 15.0))
    assert phantom.lesions, "every phantom gets lesions"
    for label, lesion in enumerate(phantom.lesions, start=1):
        assert 5.0 <= abs(lesion.contrast) <= 15.0
        measured = _measured_contrast(phantom.image, phantom.lesion_mask, label)
        # Texture under the lesion and its ring adds a little; sign and size hold.
        assert measured == pytest.approx(lesion.contrast, abs=3.0)


def test_ct_phantom_uses_realistic_hounsfield_units():
    phantom = ct_phantom((256, 256), seed=3, region="abdomen")
    image, labels = phantom.image, phantom.labels
    assert image.min() < -950  # air around the patient
    liver = ndimage.binary_erosion(
        labels == phantom.tissues.index("liver"), iterations=3
    )
    assert abs(float(np.median(image[liver])) - TISSUE_HU["liver"]) < 10
    assert image.max() > 500  # bone


def test_same_seed_gives_the_same_phantom_and_other_seeds_differ():
    a, b, c = (ct_phantom((128, 128), seed=s) for s in (5, 5, 6))
    np.testing.assert_array_equal(a.image, b.image)
    assert not np.array_equal(a.image, c.image)


def test_3d_phantom_is_a_volume_with_lesions():
    phantom = ct_phantom((32, 160, 160), seed=4, lesion_count=3)
    assert phantom.image.shape == phantom.lesion_mask.shape == (32, 160, 160)
    assert phantom.lesion_mask.max() == len(phantom.lesions) >= 1


def test_mr_phantom_is_a_non_negative_magnitude_with_relative_lesions():
    phantom = mr_phantom((128, 128), seed=2, lesion_contrast_percent=(5.0, 15.0))
    assert phantom.image.min() >= 0
    for lesion in phantom.lesions:
        from dicomio.phantoms import TISSUE_MR

        relative = abs(lesion.contrast) / TISSUE_MR[lesion.organ]
        assert 0.05 <= relative <= 0.15


def test_bad_shape_fails_early():
    with pytest.raises(ValueError, match="shape"):
        ct_phantom((8, 8))


@pytest.mark.parametrize(
    ("make", "shape", "seed"),
    [
        (ct_phantom, (96, 80), 7),
        (mr_phantom, (64, 64), 900123),
        (ct_phantom, (16, 48, 40), 3),
    ],
)
def test_tissue_map_is_the_phantoms_anatomy(make, shape, seed):
    labels, tissues = tissue_map(shape, seed=seed)
    phantom = make(shape, seed=seed)
    assert tissues == phantom.tissues
    np.testing.assert_array_equal(labels, phantom.labels)


def test_phantom_volume_is_the_ct_phantoms_anatomy_plus_white_noise():
    """One phantom generator: the volumes of the tests, benchmarks and the demo's
    series writer have the organs of the training phantoms of the same seed."""
    shape, seed = (16, 64, 64), 12
    volume = phantom_volume(shape, seed=seed)
    phantom = ct_phantom(shape, seed=seed)
    clean = np.array([TISSUE_HU[t] for t in phantom.tissues])[phantom.labels]
    residual = volume - clean
    assert abs(float(residual.mean())) < 1.0
    assert float(residual.std()) == pytest.approx(20.0, rel=0.05)


def test_tissue_map_takes_sizes_below_the_phantoms_minimum():
    labels, tissues = tissue_map((4, 8, 8), seed=1)
    assert labels.shape == (4, 8, 8) and labels.dtype == np.uint8
    assert tissues[0] == "air" and labels.max() < len(tissues)
    with pytest.raises(ValueError, match="positive sizes"):
        tissue_map((0, 8, 8))
