"""Export: the bundle loads back bit-exactly and its SHA-256 matches the weights."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from inference import load_model
from inference.bundle import bundle_folders, read_metadata
from inference.runner import denoise_images
from training.cli import main as cli_main
from training.data import real_slices


@pytest.fixture
def exported(tiny, tmp_path):
    config = tiny(train__epochs=1, train__steps_per_epoch=3)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    models = tmp_path / "models"
    assert cli_main(["train", "--config", str(path), "--no-progress"]) == 0
    assert (
        cli_main(["export", "--config", str(path), "--models-root", str(models)]) == 0
    )
    return config, path, models


def test_export_then_load_round_trips_bit_exactly(exported):
    config, _, models = exported
    checkpoint = torch.load(
        f"{config['train']['output_dir']}/checkpoint_best.pt", weights_only=False
    )
    loaded = load_model("tiny-ct", models_root=models, device="cpu")
    state = loaded.network.state_dict()
    assert state.keys() == checkpoint["state_dict"].keys()
    for key, value in checkpoint["state_dict"].items():
        assert torch.equal(state[key], value), key
    weights = (models / "tiny-ct" / "0.0.1" / "models" / "model.pt").read_bytes()
    assert loaded.sha256 == hashlib.sha256(weights).hexdigest()
    assert (
        read_metadata(models / "tiny-ct" / "0.0.1")["weights_sha256"] == loaded.sha256
    )
    image = np.random.default_rng(0).normal(40, 20, (64, 64)).astype(np.float32)
    from inference.networks import build_network

    fresh = build_network(checkpoint["network_def"])
    fresh.load_state_dict(checkpoint["state_dict"])
    spec = loaded.input_spec
    np.testing.assert_array_equal(
        denoise_images(loaded.network, [image], spec)[0],
        denoise_images(fresh, [image], spec)[0],
    )


def test_metadata_has_every_key_of_the_bundle_format(exported):
    _, _, models = exported
    meta = read_metadata(models / "tiny-ct" / "0.0.1")
    for key in (
        "schema",
        "name",
        "version",
        "changelog",
        "monai_version",
        "pytorch_version",
        "numpy_version",
        "task",
        "intended_use",
        "network_def",
        "network_data_format",
        "input_spec",
        "weights_sha256",
        "training",
        "metrics",
        "ood_reference",
    ):
        assert key in meta, key
    assert meta["intended_use"] == "research use, not for diagnosis"
    assert meta["training"]["parent"] is None
    assert meta["training"]["noise_model"]["kind"] == "ct_projection_domain"
    assert set(meta["metrics"]) == {"dose_0.25", "dose_0.1"}
    assert meta["ood_reference"]["n_slices"] >= 1
    card = (models / "tiny-ct" / "0.0.1" / "docs" / "README.md").read_text()
    assert "research use, not for diagnosis" in card
    assert "| dose_0.25 |" in card and "Limitations" in card


def test_exporting_the_same_version_twice_fails_and_keeps_the_first(exported):
    _, path, models = exported
    before = (models / "tiny-ct" / "0.0.1" / "models" / "model.pt").read_bytes()
    assert (
        cli_main(
            [
                "export",
                "--config",
                str(path),
                "--models-root",
                str(models),
                "--folder",
                "again",
            ]
        )
        == 1
    )
    assert (models / "tiny-ct" / "0.0.1" / "models" / "model.pt").read_bytes() == before


def test_export_writes_name_version_with_a_monai_config_and_never_overwrites(
    exported,
):
    config, path, models = exported
    folder = models / "tiny-ct" / "0.0.1"
    assert [p.relative_to(models) for p in bundle_folders(models)] == [
        Path("tiny-ct/0.0.1")
    ]
    assert (folder / "configs" / "inference.json").is_file()
    before = (folder / "models" / "model.pt").read_bytes()
    argv = ["export", "--config", str(path), "--models-root", str(models)]
    assert cli_main(argv) == 1
    assert (folder / "models" / "model.pt").read_bytes() == before


def test_a_bundle_exported_again_with_keep_low_frequencies_records_its_parent(
    exported, tmp_path
):
    config, _, models = exported
    again = {**config, "version": "0.0.2", "keep_low_frequencies": {"sigma_mm": 0.9}}
    path = tmp_path / "again.yaml"
    path.write_text(yaml.safe_dump(again))
    argv = ["export", "--config", str(path), "--models-root", str(models)]
    assert cli_main([*argv, "--from-bundle", str(models / "tiny-ct" / "0.0.1")]) == 0
    parent, child = (
        read_metadata(models / "tiny-ct" / "0.0.1"),
        read_metadata(models / "tiny-ct" / "0.0.2"),
    )
    # Same weights, the new inference setting, the parent named, no epochs.
    assert child["weights_sha256"] == parent["weights_sha256"]
    assert child["input_spec"]["keep_low_frequencies"] == {"sigma_mm": 0.9}
    assert "keep_low_frequencies" not in parent["input_spec"]
    assert child["training"]["parent"]["version"] == "0.0.1"
    assert child["training"]["epochs"] == 0
    assert "the unchanged weights of tiny-ct 0.0.1" in child["changelog"]["0.0.2"]
    card = (models / "tiny-ct" / "0.0.2" / "docs" / "README.md").read_text()
    assert "Not trained: the weights of tiny-ct 0.0.1 unchanged" in card
    assert "coarser than a 0.9 mm Gaussian" in card
    # Its outputs differ from the parent's by the input's low frequencies only.
    image = np.random.default_rng(0).normal(40, 20, (64, 64)).astype(np.float32)
    a = load_model("tiny-ct:0.0.1", models_root=models, device="cpu")
    b = load_model("tiny-ct:0.0.2", models_root=models, device="cpu")
    out_a = denoise_images(a.network, [image], a.input_spec, pixel_mm=0.5)[0]
    out_b = denoise_images(b.network, [image], b.input_spec, pixel_mm=0.5)[0]
    assert not np.allclose(out_a, out_b)
    from scipy.ndimage import gaussian_filter

    np.testing.assert_allclose(
        out_b - out_a, gaussian_filter(image - out_a, 1.8, mode="mirror"), atol=0.05
    )
    both = [
        *argv,
        "--from-bundle",
        str(models / "tiny-ct" / "0.0.1"),
        "--checkpoint",
        "x.pt",
    ]
    assert cli_main(both) == 1


def test_held_out_real_slices_are_never_training_slices():
    train_sources = {s.source for s in real_slices("CT", "train")}
    held_out = {s.source for s in real_slices("CT", "held_out")}
    assert held_out and not train_sources & held_out
