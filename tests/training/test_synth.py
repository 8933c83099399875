"""On-the-fly training noise: levels, textures, real scans, the conditioning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference.networks import build_network
from inference.noise import noise_level_map
from tests.inference.inference_fixtures import FAST_UNET_NOISE
from training.config import complete_config, default_input_spec
from training.content import textured_slice
from training.data import Slice
from training.errors import ConfigError
from training.nps import measure_nps, parametric_nps, synthesise_noise
from training.synth import NOISE_DEFAULTS, SynthPool, projection_noise, validation_pairs

NETWORK = FAST_UNET_NOISE


def _slices() -> list[Slice]:
    synthetic = textured_slice(128, seed=1)
    real = textured_slice(128, seed=2)
    own = np.random.default_rng(3).normal(0, 3.0, real.image.shape).astype(np.float32)
    return [
        Slice(
            synthetic.image,
            synthetic.pixel_mm,
            "texture:1",
            False,
            synthetic.lesion_mask,
        ),
        Slice(real.image + own, real.pixel_mm, "dicom:real", True, None, [], 3.0),
    ]


def _pool(noise: dict | None = None) -> SynthPool:
    slices = _slices()
    network = build_network(NETWORK)
    spec = default_input_spec(
        "CT", network, 4, {"kind": "linear", "offset": 0.0, "scale": 200.0}
    )
    return SynthPool(
        slices,
        projection_noise(slices, seeds=[0, 1]),
        np.zeros((0, 33)),
        spec,
        noise or {},
        torch.device("cpu"),
    )


def _ac(noise: np.ndarray, lag: int) -> float:
    a = noise - noise.mean()
    return float(np.mean(a[:, :-lag] * a[:, lag:]) / a.var())


def test_synthesised_noise_has_unit_sd_and_the_texture_asked_for() -> None:
    generator = torch.Generator().manual_seed(0)
    smooth = synthesise_noise(
        torch.from_numpy(parametric_nps(1.0, 0.1))[None],
        (128, 128),
        generator=generator,
    )
    sharp = synthesise_noise(
        torch.from_numpy(parametric_nps(1.0, 0.45))[None],
        (128, 128),
        generator=generator,
    )
    assert float(smooth.std()) == pytest.approx(1.0, rel=1e-3)
    assert _ac(smooth[0].numpy(), 1) > 0.8 > 0.2 > _ac(sharp[0].numpy(), 1)


def test_measured_nps_reproduces_the_correlation_of_real_like_noise() -> None:
    from scipy import ndimage

    rng = np.random.default_rng(4)
    noise = ndimage.gaussian_filter(rng.normal(size=(256, 256)), 1.2)
    image = np.where(np.hypot(*np.mgrid[-128:128, -128:128]) < 120, 40.0, -1000.0)
    profile = measure_nps((image + noise / noise.std() * 10).astype(np.float32))
    assert profile is not None and profile.sum() == pytest.approx(1.0)
    again = synthesise_noise(torch.from_numpy(profile)[None], (256, 256))[0].numpy()
    assert _ac(again, 1) == pytest.approx(_ac(noise, 1), abs=0.1)


def test_textured_slices_are_reproducible_and_ct_like() -> None:
    first, again = textured_slice(128, seed=5), textured_slice(128, seed=5)
    np.testing.assert_array_equal(first.image, again.image)
    assert first.image.min() >= -1000.5 and (first.image > -500).mean() > 0.2
    assert first.lesion_mask.max() >= 1


def test_batches_carry_the_noise_sd_map_and_loss_weights_in_noise_units() -> None:
    pool = _pool()
    batch = pool.batch(
        np.random.default_rng(0), torch.Generator().manual_seed(0), 8, 64
    )
    assert batch.noisy.shape == (8, 2, 64, 64) and batch.clean.shape == (8, 1, 64, 64)
    level = batch.noisy[:, 1, 0, 0]
    assert bool((batch.noisy[:, 1] == level[:, None, None]).all())
    # The map follows the true SD give or take the estimate's jitter.
    told = (2 ** (8 * level) - 1) * 0.005 * 200
    ratio = told / batch.noise_sd.clamp(min=1e-6)
    assert bool(((ratio > 0.4) & (ratio < 2.5))[batch.noise_sd > 1].all())
    unit = batch.weight.amin(dim=(1, 2, 3))
    expected = (200.0 / batch.noise_sd.clamp(min=NOISE_DEFAULTS["loss_floor_hu"])) ** 2
    torch.testing.assert_close(unit, expected)


def test_real_scans_get_at_least_real_ratio_times_their_own_noise() -> None:
    pool = _pool({"clean_fraction": 0.0})
    rng = np.random.default_rng(1)
    draws = [pool._draw(rng, 64) for _ in range(200)]
    real = [d.sd_added for d in draws if d.index == 1]
    assert real and min(real) >= NOISE_DEFAULTS["real_ratio"] * 3.0


def test_clean_crops_are_identity_targets() -> None:
    pool = _pool({"clean_fraction": 1.0})
    batch = pool.batch(
        np.random.default_rng(2), torch.Generator().manual_seed(2), 4, 64
    )
    synthetic = [i for i in range(4) if float(batch.noise_sd[i]) == 0.0]
    assert synthetic
    for i in synthetic:
        torch.testing.assert_close(batch.noisy[i, 0], batch.clean[i, 0])


def test_a_real_slice_that_is_its_own_target_always_gets_noise_added() -> None:
    pool = _pool({"clean_fraction": 1.0})
    rng = np.random.default_rng(5)
    draws = [pool._draw(rng, 64) for _ in range(100)]
    assert all(d.sd_added > 0 for d in draws if d.index == 1)


def test_validation_pairs_are_fixed_and_at_the_levels_asked() -> None:
    slices = _slices()[:1]
    pairs = validation_pairs(slices, [2.0, 20.0], seed=3)
    again = validation_pairs(slices, [2.0, 20.0], seed=3)
    np.testing.assert_array_equal(pairs[1].noisy, again[1].noisy)
    sd = float(np.std(pairs[1].noisy - slices[0].image))
    assert [p.level for p in pairs] == [2.0, 20.0] and sd == pytest.approx(
        20.0, rel=0.05
    )


def test_noise_conditioned_network_leaves_a_noiseless_slice_unchanged() -> None:
    network = build_network(NETWORK).eval()
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.normal_(0.0, 0.3)
        image = torch.randn(1, 1, 32, 32)
        level = noise_level_map(torch.zeros(1), 0.005).reshape(1, 1, 1, 1)
        out = network(torch.cat([image, level.expand_as(image)], dim=1))
    torch.testing.assert_close(out, image)


@pytest.mark.parametrize(
    ("noise", "message"),
    [({"sd_hu": [5.0, 1.0]}, "sd_hu"), ({"colour": "pink"}, "unknown data.noise")],
)
def test_bad_noise_settings_are_refused(noise: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        complete_config(
            {"name": "x", "network": NETWORK, "data": {"noise": noise, "levels": [2.0]}}
        )


def test_neighbour_items_are_cropped_where_their_target_is_trusted() -> None:
    slices = _slices()
    image = slices[1].image
    mask = np.zeros(image.shape, bool)
    mask[10:40, 70:100] = True
    slices.append(
        Slice(
            image, 0.7, "dicom:real+neighbours", True, None, [], 3.0, image + 1.0, mask
        )
    )
    network = build_network(NETWORK)
    spec = default_input_spec(
        "CT", network, 4, {"kind": "linear", "offset": 0.0, "scale": 200.0}
    )
    pool = SynthPool(
        slices,
        projection_noise(slices, seeds=[0, 1, 2]),
        np.zeros((0, 33)),
        spec,
        {"neighbour_fraction": 1.0},
        torch.device("cpu"),
    )
    batch = pool.batch(
        np.random.default_rng(3), torch.Generator().manual_seed(3), 6, 64
    )
    for b in range(6):
        trusted = batch.weight[b, 0] > 0
        assert bool(trusted.any()) and not bool(trusted.all())
        # A mean over the trusted pixels: the weights sum to a whole crop's.
        total = float(batch.weight[b, 0].sum() / batch.unit[b, 0, 0, 0] ** 2)
        assert total == pytest.approx(64 * 64, rel=1e-4)
    # Taken at its own noise level, a crop's target is the neighbours' mean: here
    # the slice plus one HU.
    own = [b for b in range(6) if float(batch.noise_sd[b]) == pytest.approx(3.0)]
    assert own
    for b in own:
        difference = (batch.clean[b, 0] - batch.noisy[b, 0]) * 200.0
        torch.testing.assert_close(
            difference, torch.ones_like(difference), atol=1e-3, rtol=0
        )


def _flat_real_pool(noise: dict) -> SynthPool:
    own = np.random.default_rng(7).normal(0, 3.0, (160, 160)).astype(np.float32)
    body = Slice(40.0 + own, 0.7, "dicom:flat", True, None, [], 3.0)
    network = build_network(NETWORK)
    spec = default_input_spec(
        "CT", network, 4, {"kind": "linear", "offset": 0.0, "scale": 200.0}
    )
    return SynthPool(
        [body],
        projection_noise([body], seeds=[0]),
        np.zeros((0, 33)),
        spec,
        {"clean_fraction": 0.0, "sd_hu": [0.5, 8.0], **noise},
        torch.device("cpu"),
    )


def _input_target_noise_correlation(pool: SynthPool) -> tuple[float, float]:
    batch = pool.batch(
        np.random.default_rng(3), torch.Generator().manual_seed(3), 16, 64
    )
    noisy = batch.noisy[:, 0] * 200.0 - 40.0  # the input's noise, HU
    target = batch.clean[:, 0] * 200.0 - 40.0  # the target's noise, HU
    a, b = noisy.flatten(), target.flatten()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1]), float(b.std())


def test_recorrupted_real_crops_have_independent_input_and_target_noise() -> None:
    """A real slice as its own target shares its noise with the input (the model
    learns to keep it); recorrupted, the two noises are uncorrelated and the
    target still centres on the anatomy."""
    plain, _ = _input_target_noise_correlation(_flat_real_pool({}))
    assert plain > 0.2
    r2r, target_sd = _input_target_noise_correlation(
        _flat_real_pool({"recorrupted_fraction": 1.0, "recorrupted_alpha": [0.5, 1.0]})
    )
    assert abs(r2r) < 0.05
    assert 3.0 * np.sqrt(2.0) * 0.8 < target_sd < 3.0 * np.sqrt(5.0) * 1.2
