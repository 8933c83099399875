"""System checks on the models root (radiology.checks.check_model_bundle)."""

from __future__ import annotations

import inference
from radiology.checks import check_model_bundle
from tests.inference.inference_fixtures import REDCNN, identity_weights, metadata


def test_the_repository_models_root_has_bundles(settings):
    settings.MODELS_ROOT = inference.default_models_root()
    assert check_model_bundle(None) == []


def test_a_nested_bundle_satisfies_the_check_and_an_empty_root_warns(
    settings, tmp_path
):
    settings.MODELS_ROOT = tmp_path
    assert [w.id for w in check_model_bundle(None)] == ["radiology.W001"]
    inference.write_bundle(
        tmp_path / "tiny" / "1.0.0",
        metadata=metadata("tiny", "1.0.0"),
        state_dict=identity_weights(REDCNN),
    )
    assert check_model_bundle(None) == []
