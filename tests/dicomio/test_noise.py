"""Noise models: CT noise SD follows 1/sqrt(dose); Rician is biased at low SNR."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from dicomio.noise import CTNoiseModel, add_rician_noise
from dicomio.phantoms import ct_phantom


@pytest.fixture(scope="module")
def phantom():
    return ct_phantom((192, 192), seed=11, region="abdomen", pixel_mm=1.8)


def _soft_tissue(phantom):
    soft = np.isin(
        phantom.labels,
        [
            phantom.tissues.index(t)
            for t in ("muscle", "liver", "spleen")
            if t in phantom.tissues
        ],
    )
    return ndimage.binary_erosion(soft, iterations=3)


def test_ct_noise_sd_grows_as_inverse_square_root_of_dose(phantom):
    model = CTNoiseModel(electronic_sd=0.0)
    region = _soft_tissue(phantom)
    sds = {}
    for dose in (1.0, 0.25, 0.1):
        noise = model.noise(
            phantom.image, dose, pixel_mm=phantom.pixel_mm, rng=np.random.default_rng(0)
        )
        sds[dose] = float(noise[region].std())
    assert sds[0.25] / sds[1.0] == pytest.approx(2.0, rel=0.1)
    assert sds[0.1] / sds[1.0] == pytest.approx(np.sqrt(10), rel=0.1)


def test_ct_noise_is_zero_mean_and_spatially_correlated(phantom):
    noise = CTNoiseModel().noise(
        phantom.image, 0.25, pixel_mm=phantom.pixel_mm, rng=np.random.default_rng(1)
    )
    region = _soft_tissue(phantom)
    assert abs(float(noise[region].mean())) < 0.1 * float(noise[region].std())
    # FBP noise is not white: neighbouring pixels are correlated (negatively at
    # lag 1 for a ramp filter), unlike independent pixel noise.
    a, b = noise[:, :-1][region[:, :-1]], noise[:, 1:][region[:, :-1]]
    assert abs(float(np.corrcoef(a, b)[0, 1])) > 0.1


def test_full_dose_input_gets_only_the_extra_variance(phantom):
    model = CTNoiseModel(electronic_sd=0.0)
    region = _soft_tissue(phantom)
    kwargs = {"pixel_mm": phantom.pixel_mm}
    plain = model.noise(phantom.image, 0.25, rng=np.random.default_rng(2), **kwargs)
    extra = model.noise(
        phantom.image,
        0.25,
        rng=np.random.default_rng(2),
        full_dose_input=True,
        **kwargs,
    )
    # Var(extra) = Var(dose 0.25) - Var(dose 1) = (4 - 1) / 4 of Var(dose 0.25).
    ratio = float(extra[region].std() / plain[region].std())
    assert ratio == pytest.approx(np.sqrt(3 / 4), rel=0.1)


def test_rician_noise_is_biased_at_low_snr_and_unbiased_at_high_snr():
    rng = np.random.default_rng(3)
    sigma = 10.0
    dark = add_rician_noise(np.zeros((200, 200)), sigma, rng=rng)
    bright = add_rician_noise(np.full((200, 200), 50 * sigma), sigma, rng=rng)
    assert float(dark.mean()) == pytest.approx(sigma * np.sqrt(np.pi / 2), rel=0.03)
    assert float(bright.mean()) == pytest.approx(50 * sigma, rel=0.01)
    assert float(bright.std()) == pytest.approx(sigma, rel=0.05)


@pytest.mark.parametrize("dose", [0.0, -0.5, 1.5])
def test_bad_dose_fails_early(phantom, dose):
    with pytest.raises(ValueError, match="dose"):
        CTNoiseModel().noise(
            phantom.image, dose, pixel_mm=1.0, rng=np.random.default_rng(0)
        )
