"""Tests for inference.monai_bundle: each bundle's configs/inference.json runs with
monai.bundle and denoises as the worker does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow

from inference.bundle import (
    INFERENCE_CONFIG_PATH,
    METADATA_PATH,
    WEIGHTS_PATH,
    bundle_folders,
    read_metadata,
)
from inference.engine import denoise_volume
from inference.monai_bundle import BundleInferer, inference_config
from inference.networks import NETWORK_KINDS
from inference.registry import default_models_root, load_model

from .inference_fixtures import BundleFactory

SHIPPED = bundle_folders(default_models_root())


def _series(depth: int = 2, size: int = 48) -> np.ndarray:
    """A noisy CT-like series in HU: air around a soft-tissue disc."""
    yy, xx = np.mgrid[:size, :size]
    body = np.where(np.hypot(yy - size / 2, xx - size / 2) < size * 0.4, 40.0, -1000.0)
    noise = np.random.default_rng(0).normal(0.0, 20.0, (depth, size, size))
    return (body[None] + noise).astype(np.float32)


def _parser(folder: Path) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(folder / INFERENCE_CONFIG_PATH)
    parser.read_meta(folder / METADATA_PATH)
    parser["bundle_root"] = str(folder)
    parser["device"] = "$torch.device('cpu')"
    return parser


def _run(folder: Path, series: np.ndarray, tmp_path: Path, **override) -> np.ndarray:
    """What ``python -m monai.bundle run`` does with the bundle's config."""
    np.save(tmp_path / "in.npy", series)
    workflow = ConfigWorkflow(
        config_file=str(folder / INFERENCE_CONFIG_PATH),
        meta_file=str(folder / METADATA_PATH),
        logging_file=False,
        bundle_root=str(folder),
        device="$torch.device('cpu')",
        input_path=str(tmp_path / "in.npy"),
        output_path=str(tmp_path / "out.npy"),
        **override,
    )
    workflow.initialize()
    workflow.run()
    return np.load(tmp_path / "out.npy")


def test_every_shipped_bundle_is_nested_by_name_and_version() -> None:
    assert len(SHIPPED) == 7
    for folder in SHIPPED:
        meta = read_metadata(folder)
        assert folder == default_models_root() / meta["name"] / meta["version"]


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda f: f"{f.parent.name}:{f.name}")
def test_shipped_inference_config_is_the_one_its_metadata_gives(folder: Path) -> None:
    written = json.loads((folder / INFERENCE_CONFIG_PATH).read_text())
    assert written == inference_config(read_metadata(folder))


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda f: f"{f.parent.name}:{f.name}")
def test_config_parser_builds_the_network_and_loads_its_weights(folder: Path) -> None:
    meta = read_metadata(folder)
    parser = _parser(folder)
    network = parser.get_parsed_content("network_def")
    assert type(network) is NETWORK_KINDS[meta["network_def"]["kind"]]
    assert parser.get_parsed_content("_meta_#version") == meta["version"]
    parser.get_parsed_content("initialize")  # loads models/model.pt, strict
    loaded = parser.get_parsed_content("network")
    assert not loaded.training
    registered = load_model(
        meta["name"], meta["version"], models_root=default_models_root(), device="cpu"
    )
    reference = torch.load(folder / WEIGHTS_PATH, weights_only=True)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, reference[key]), key
    channels = 2 if meta["network_def"]["args"].get("noise_conditioned") else 1
    batch = torch.rand(2, channels, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(loaded(batch), registered.network(batch))


@pytest.mark.parametrize("version", ["1.0.0", "2.3.0"])
def test_monai_bundle_run_denoises_as_the_worker_does(
    version: str, tmp_path: Path
) -> None:
    # 1.0.0: a plain network; 2.3.0 (the default): noise level map, residual
    # limit and low frequencies kept, which need the pixel spacing.
    folder = default_models_root() / "ct-denoise" / version
    series = _series()
    out = _run(folder, series, tmp_path, pixel_mm=[0.7, 0.7])
    model = load_model(
        "ct-denoise", version, models_root=default_models_root(), device="cpu"
    )
    expected = denoise_volume(
        series, model, spacing=(2.0, 0.7, 0.7), precision="fp32"
    ).reconstruction
    assert out.shape == series.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-3)
    assert not np.allclose(out, series, atol=1.0)


def test_a_written_bundle_gets_a_config_that_runs(
    make_bundle: BundleFactory, tmp_path: Path
) -> None:
    folder = make_bundle("tiny", "1.0.0")
    assert folder.relative_to(folder.parent.parent) == Path("tiny/1.0.0")
    config = json.loads((folder / INFERENCE_CONFIG_PATH).read_text())
    assert config["network_def"]["_target_"] == "inference.networks.REDCNN"
    series = _series(depth=1, size=32)
    # The tiny bundle is an identity network with a linear normalisation.
    np.testing.assert_allclose(_run(folder, series, tmp_path), series, atol=1e-3)


def test_the_inferer_refuses_a_four_dimensional_input() -> None:
    spec = inference_config(read_metadata(SHIPPED[0]))["input_spec"]
    with pytest.raises(ValueError, match="expected a"):
        BundleInferer(spec)(torch.zeros(1, 1, 8, 8), torch.nn.Conv2d(1, 1, 1))


def test_an_unknown_network_kind_is_refused() -> None:
    meta = read_metadata(SHIPPED[0])
    meta["network_def"] = {"kind": "nope", "args": {}}
    with pytest.raises(ValueError, match="network kind must be one of"):
        inference_config(meta)
