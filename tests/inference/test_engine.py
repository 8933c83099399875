"""Tests for inference.engine.denoise_volume on tiny bundles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inference import DenoiseResult, denoise_volume, load_model
from inference import warm_up as inference_warm_up
from inference.registry import LoadedModel

from .inference_fixtures import CT_SPEC, BundleFactory, phantom

SPACING_3D = (2.5, 0.7, 0.7)


@pytest.fixture
def identity_model(make_bundle: BundleFactory, models_root: Path) -> LoadedModel:
    make_bundle()
    return load_model("tiny", models_root=models_root, device="cpu")


def load_variant(
    make_bundle: BundleFactory, models_root: Path, **kwargs: Any
) -> LoadedModel:
    make_bundle("variant", **kwargs)
    return load_model("variant", models_root=models_root, device="cpu")


def test_output_has_input_shape_and_float32(identity_model: LoadedModel) -> None:
    volume = phantom((3, 24, 20), seed=1).astype(np.int16)
    result = denoise_volume(volume, identity_model, spacing=SPACING_3D)
    assert isinstance(result, DenoiseResult)
    assert result.reconstruction.shape == volume.shape
    assert result.residual.shape == volume.shape
    assert result.reconstruction.dtype == np.float32
    assert result.residual.dtype == np.float32


def test_identity_network_returns_the_input_in_hounsfield_units(
    identity_model: LoadedModel,
) -> None:
    volume = phantom((5, 32, 32), seed=2)
    result = denoise_volume(volume, identity_model, spacing=SPACING_3D)
    np.testing.assert_allclose(result.reconstruction, volume, atol=1e-3)
    assert result.metrics["flagged_slices"] == []


def test_residual_is_exactly_input_minus_reconstruction(
    make_bundle: BundleFactory, models_root: Path
) -> None:
    model = load_variant(
        make_bundle,
        models_root,
        network_def={
            "kind": "autoencoder",
            "args": {"channels": [4, 8], "strides": [2, 2]},
        },
    )
    volume = phantom((2, 32, 32), seed=3)
    result = denoise_volume(volume, model, spacing=SPACING_3D)
    np.testing.assert_array_equal(result.residual, volume - result.reconstruction)
    magnitude = np.maximum.reduce(
        [np.abs(volume), np.abs(result.reconstruction), np.abs(result.residual)]
    )
    eps = np.finfo(np.float32).eps * np.maximum(magnitude, 1.0)
    assert np.all(np.abs(result.reconstruction + result.residual - volume) <= 2 * eps)


@pytest.mark.parametrize(
    ("network_def", "shape"),
    [
        ({"kind": "unet_noise", "args": {"features": [4, 4, 4, 4, 4, 4]}}, (2, 37, 29)),
        (
            {"kind": "autoencoder", "args": {"channels": [4, 8], "strides": [2, 2]}},
            (1, 13, 30),
        ),
    ],
)
def test_odd_sizes_are_padded_and_cropped_back(
    make_bundle: BundleFactory,
    models_root: Path,
    network_def: dict[str, Any],
    shape: tuple[int, int, int],
) -> None:
    model = load_variant(make_bundle, models_root, network_def=network_def)
    volume = phantom(shape, seed=4)
    result = denoise_volume(volume, model, spacing=SPACING_3D)
    assert result.reconstruction.shape == shape
    assert np.isfinite(result.reconstruction).all()


def test_fixed_windows_stitch_back_to_the_input(
    make_bundle: BundleFactory, models_root: Path
) -> None:
    spec = dict(CT_SPEC, roi_size=[16, 16])
    model = load_variant(make_bundle, models_root, input_spec=spec)
    volume = phantom((2, 40, 27), seed=5)
    result = denoise_volume(volume, model, spacing=SPACING_3D)
    np.testing.assert_allclose(result.reconstruction, volume, atol=1e-2)
    assert result.provenance["parameters"]["roi_size"] == [16, 16]


@pytest.fixture
def volumetric_model(make_bundle: BundleFactory, models_root: Path) -> LoadedModel:
    network_def = {
        "kind": "redcnn",
        "args": {"spatial_dims": 3, "features": 2, "depth": 2, "kernel_size": 3},
    }
    spec = dict(CT_SPEC, spatial_dims=3, roi_size=[8, 16, 16], batch_size=2)
    return load_variant(
        make_bundle, models_root, network_def=network_def, input_spec=spec
    )


def test_volumetric_network_uses_sliding_windows(
    volumetric_model: LoadedModel,
) -> None:
    model = volumetric_model
    volume = phantom((10, 24, 20), seed=6)
    fractions: list[float] = []
    result = denoise_volume(
        volume, model, spacing=SPACING_3D, progress=lambda f, _: fractions.append(f)
    )
    np.testing.assert_allclose(result.reconstruction, volume, atol=1e-2)
    assert fractions[-1] == 1.0 and len(fractions) > 3


def test_percentile_normalisation_round_trips_magnitude_units(
    make_bundle: BundleFactory, models_root: Path
) -> None:
    spec = dict(
        CT_SPEC,
        modality="MR",
        units="arbitrary",
        normalisation={"kind": "percentile", "upper": 99.5},
    )
    model = load_variant(make_bundle, models_root, input_spec=spec)
    volume = np.abs(phantom((2, 32, 32), seed=7)) * 3.0
    result = denoise_volume(volume, model, spacing=SPACING_3D, modality="MR")
    np.testing.assert_allclose(result.reconstruction, volume, rtol=1e-5, atol=1e-2)
    normalisation = result.provenance["parameters"]["normalisation"]
    assert normalisation["kind"] == "percentile"
    assert normalisation["scale"] == pytest.approx(
        np.percentile(volume, 99.5), rel=1e-5
    )


def test_progress_increases_and_ends_at_one(identity_model: LoadedModel) -> None:
    calls: list[tuple[float, str]] = []
    denoise_volume(
        phantom((9, 16, 16), seed=8),
        identity_model,
        spacing=SPACING_3D,
        batch_size=2,
        progress=lambda fraction, stage: calls.append((fraction, stage)),
    )
    fractions = [fraction for fraction, _ in calls]
    assert all(b > a for a, b in zip(fractions, fractions[1:], strict=False))
    assert fractions[-1] == 1.0
    assert sum(stage.startswith("infer") for _, stage in calls) == 5


def test_single_slice_input_gives_a_single_slice_output(
    identity_model: LoadedModel,
) -> None:
    image = phantom((32, 28), seed=9)
    result = denoise_volume(image, identity_model, spacing=(0.7, 0.7))
    assert result.reconstruction.shape == (32, 28)
    np.testing.assert_allclose(result.reconstruction, image, atol=1e-3)
    assert result.metrics["n_slices"] == 1


def test_bf16_precision_runs_on_cpu(identity_model: LoadedModel) -> None:
    volume = phantom((2, 16, 16), seed=10)
    result = denoise_volume(
        volume, identity_model, spacing=SPACING_3D, precision="bf16"
    )
    assert result.provenance["precision"] == "bf16"
    assert result.reconstruction.dtype == np.float32
    # bf16 keeps 8 bits of mantissa: about 0.4% of the normalised value
    np.testing.assert_allclose(result.reconstruction, volume, atol=0.01 * 4096)


@pytest.mark.parametrize(
    ("volume", "spacing", "options", "match"),
    [
        (np.zeros(8, np.float32), (1.0,), {}, "got shape"),
        (np.zeros((2, 2, 4, 4), np.float32), (1.0,) * 4, {}, "got shape"),
        (np.zeros((0, 4, 4), np.float32), SPACING_3D, {}, "empty"),
        (np.array([[[np.nan, 0.0], [0.0, 0.0]]]), SPACING_3D, {}, "NaN or inf"),
        (np.array([[[np.inf, 0.0], [0.0, 0.0]]]), SPACING_3D, {}, "NaN or inf"),
        (np.zeros((2, 4, 4), np.complex64), SPACING_3D, {}, "real numbers"),
        (np.zeros((2, 4, 4), np.float32), (1.0, 1.0), {}, "spacing"),
        (np.zeros((2, 4, 4), np.float32), (1.0, -1.0, 1.0), {}, "spacing"),
        (np.zeros((2, 4, 4), np.float32), SPACING_3D, {"batch_size": 0}, "batch_size"),
        (
            np.zeros((2, 4, 4), np.float32),
            SPACING_3D,
            {"precision": "fp8"},
            "precision",
        ),
    ],
)
def test_bad_input_raises_value_error(
    identity_model: LoadedModel,
    volume: np.ndarray,
    spacing: tuple[float, ...],
    options: dict[str, Any],
    match: str,
) -> None:
    with pytest.raises(ValueError, match=match):
        denoise_volume(volume, identity_model, spacing=spacing, **options)


def test_provenance_records_model_code_hardware_and_hashes(
    identity_model: LoadedModel,
) -> None:
    volume = phantom((2, 16, 16), seed=11)
    result = denoise_volume(volume, identity_model, spacing=SPACING_3D, modality="CT")
    provenance = result.provenance
    assert provenance["model"]["name"] == "tiny"
    assert provenance["model"]["version"] == "1.0.0"
    assert provenance["model"]["weights_sha256"] == identity_model.sha256
    assert provenance["model"]["network_def"]["kind"] == "redcnn"
    assert provenance["model"]["input_spec"]["units"] == "HU"
    assert "training_parent" in provenance["model"]
    code = provenance["code"]
    for key in (
        "git_commit",
        "radiology_denoise",
        "torch",
        "monai",
        "numpy",
        "pydicom",
        "cuda",
    ):
        assert key in code
    assert provenance["hardware"]["device"] == "cpu"
    assert provenance["hardware"]["device_name"] and provenance["hardware"]["host"]
    assert provenance["precision"] == "fp32"
    assert provenance["parameters"]["spacing_mm"] == list(SPACING_3D)
    assert provenance["parameters"]["batch_size"] == CT_SPEC["batch_size"]
    import hashlib

    assert provenance["input_sha256"] == hashlib.sha256(volume.tobytes()).hexdigest()
    assert (
        provenance["output_sha256"]
        == hashlib.sha256(result.reconstruction.tobytes()).hexdigest()
    )
    assert provenance["started_at"] <= provenance["finished_at"]
    json.dumps(provenance, allow_nan=False)
    json.dumps(result.metrics, allow_nan=False)


def test_timings_cover_every_stage(identity_model: LoadedModel) -> None:
    result = denoise_volume(
        phantom((2, 16, 16), seed=12), identity_model, spacing=SPACING_3D
    )
    assert set(result.timings_s) == {
        "load",
        "preprocess",
        "infer",
        "postprocess",
        "total",
    }
    assert all(value >= 0 for value in result.timings_s.values())


def test_warm_up_runs_a_batch_and_skips_volumetric_models(
    identity_model: LoadedModel, make_bundle: BundleFactory, models_root: Path
) -> None:
    assert inference_warm_up(identity_model, slice_shape=(32, 32)) > 0
    volumetric = load_variant(
        make_bundle,
        models_root,
        network_def={
            "kind": "redcnn",
            "args": {"spatial_dims": 3, "features": 2, "depth": 2, "kernel_size": 3},
        },
        input_spec=dict(CT_SPEC, spatial_dims=3, roi_size=[8, 16, 16]),
    )
    assert inference_warm_up(volumetric) == 0.0


def test_finished_slices_are_reported_in_order_with_their_final_values(
    identity_model: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    import inference.engine as engine

    monkeypatch.setattr(engine, "CHUNK_SLICES", 2)  # several chunks
    volume = phantom((5, 24, 20), seed=3)
    recon = np.full(volume.shape, np.nan, dtype=np.float32)
    residual = np.full(volume.shape, np.nan, dtype=np.float32)
    seen: list[tuple[int, int, np.ndarray, np.ndarray]] = []
    denoise_volume(
        volume,
        identity_model,
        spacing=SPACING_3D,
        batch_size=1,
        reconstruction_out=recon,
        residual_out=residual,
        on_slices_done=lambda a, b: seen.append(
            (a, b, recon[a:b].copy(), residual[a:b].copy())
        ),
    )
    assert [(a, b) for a, b, _, _ in seen] == [(0, 2), (2, 4), (4, 5)]
    for a, b, r, d in seen:
        np.testing.assert_array_equal(r, recon[a:b])
        np.testing.assert_array_equal(d, residual[a:b])


def test_a_single_slice_and_a_volumetric_pass_report_every_slice(
    identity_model: LoadedModel, volumetric_model: LoadedModel
) -> None:
    seen: list[tuple[int, int]] = []
    image = phantom((1, 24, 20), seed=4)[0]
    denoise_volume(
        image,
        identity_model,
        spacing=(0.7, 0.7),
        on_slices_done=lambda a, b: seen.append((a, b)),
    )
    assert seen == [(0, 1)]
    seen.clear()
    denoise_volume(
        phantom((10, 24, 20), seed=6),
        volumetric_model,
        spacing=SPACING_3D,
        on_slices_done=lambda a, b: seen.append((a, b)),
    )
    assert seen == [(0, 10)]
