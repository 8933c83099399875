"""Tests for inference.ood: training-input reference statistics and OOD warnings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inference import denoise_volume, load_model
from inference.networks import build_network
from inference.ood import OOD_STATISTICS, check_ood, reference_statistics
from inference.registry import LoadedModel

from .inference_fixtures import (
    CT_SPEC,
    REDCNN,
    BundleFactory,
    identity_weights,
    phantom,
)

SPACING = (2.0, 0.8, 0.8)


def training_slices(noise_hu: float = 20.0) -> list[np.ndarray]:
    return list(phantom((12, 128, 128), seed=100, noise_hu=noise_hu))


@pytest.fixture(scope="module")
def reference() -> dict:
    network = build_network(REDCNN)
    network.load_state_dict(identity_weights(REDCNN))
    return reference_statistics(network, training_slices(), input_spec=CT_SPEC)


@pytest.fixture
def model_with_reference(
    make_bundle: BundleFactory, models_root: Path, reference: dict
) -> LoadedModel:
    make_bundle(ood_reference=reference)
    return load_model("tiny", models_root=models_root, device="cpu")


def test_reference_covers_every_statistic_and_is_json(reference: dict) -> None:
    assert reference["n_slices"] == 12
    assert set(reference["statistics"]) == set(OOD_STATISTICS)
    for summary in reference["statistics"].values():
        assert summary["min"] <= summary["p50"] <= summary["max"]
    assert json.loads(json.dumps(reference, allow_nan=False)) == reference


def test_reference_from_loaded_model_matches_bare_network(
    model_with_reference: LoadedModel, reference: dict
) -> None:
    again = reference_statistics(model_with_reference, training_slices())
    assert again["statistics"]["noise_sd"] == pytest.approx(
        reference["statistics"]["noise_sd"]
    )


def test_bare_network_without_input_spec_is_refused() -> None:
    with pytest.raises(ValueError, match="input_spec"):
        reference_statistics(build_network(REDCNN), training_slices())


def test_in_distribution_series_does_not_warn(
    model_with_reference: LoadedModel,
) -> None:
    volume = phantom((6, 128, 128), seed=7, noise_hu=20.0)
    result = denoise_volume(
        volume, model_with_reference, spacing=SPACING, modality="CT"
    )
    assert result.warnings == []


def test_wrong_modality_warns(model_with_reference: LoadedModel) -> None:
    volume = phantom((3, 128, 128), seed=8, noise_hu=20.0)
    result = denoise_volume(
        volume, model_with_reference, spacing=SPACING, modality="MR"
    )
    assert len(result.warnings) == 1
    assert "modality MR" in result.warnings[0] and "CT" in result.warnings[0]


def test_much_higher_noise_warns(model_with_reference: LoadedModel) -> None:
    volume = phantom((3, 128, 128), seed=9, noise_hu=200.0)
    result = denoise_volume(
        volume, model_with_reference, spacing=SPACING, modality="CT"
    )
    assert any(w.startswith("noise_sd") and "above" in w for w in result.warnings)


def test_missing_reference_warns_that_nothing_was_checked() -> None:
    warnings = check_ood(
        {"noise_sd": [0.1]}, None, modality="CT", expected_modality="CT"
    )
    assert warnings == [
        "the model has no OOD reference: the input could not be checked"
    ]


def test_value_inside_training_range_does_not_warn(reference: dict) -> None:
    stats = {name: [s["p50"]] for name, s in reference["statistics"].items()}
    assert check_ood(stats, reference, modality=None, expected_modality="CT") == []


def test_ct_in_other_units_warns(model_with_reference: LoadedModel) -> None:
    volume = phantom((3, 128, 128), seed=10, noise_hu=20.0)
    scaled = (volume + 1024.0) / 4096.0  # 0..1 instead of HU
    result = denoise_volume(
        scaled, model_with_reference, spacing=SPACING, modality="CT"
    )
    assert any("below the training range" in w for w in result.warnings)
