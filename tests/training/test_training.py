"""Training loops: supervised loss falls, self-supervised needs no clean data,
fine-tuning records its parent."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from inference.bundle import read_metadata
from training.cli import main as cli_main
from training.data import Pair, PairPool, Slice
from training.trainer import blind_spot_batch, train


def test_tiny_supervised_run_lowers_the_loss(tiny):
    summary = train(tiny(), progress=False)
    history = summary["history"]
    assert len(history) == 2
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    run = Path(summary["run_dir"])
    for name in (
        "checkpoint_best.pt",
        "checkpoint_last.pt",
        "history.json",
        "loss_curve.png",
    ):
        assert (run / name).exists(), name


def test_training_is_reproducible_from_the_seed(tiny, tmp_path):
    first = train(tiny(train__epochs=1, train__steps_per_epoch=3), progress=False)
    again = train(
        tiny(
            train__epochs=1,
            train__steps_per_epoch=3,
            train__output_dir=str(tmp_path / "again"),
        ),
        progress=False,
    )
    assert first["history"][0]["train_loss"] == again["history"][0]["train_loss"]


def test_blind_spot_masks_replace_pixels_by_a_neighbour_never_themselves():
    noisy = torch.arange(64 * 64, dtype=torch.float32).reshape(1, 1, 64, 64)
    masked, mask = blind_spot_batch(noisy, 0.05, torch.Generator().manual_seed(0))
    assert 0.02 < mask.float().mean() < 0.08
    assert torch.all(masked[mask] != noisy[mask])
    assert torch.equal(masked[~mask], noisy[~mask])


def test_self_supervised_step_runs_on_noisy_data_alone(tiny):
    config = tiny(
        train__mode="self_supervised", train__epochs=1, train__steps_per_epoch=4
    )
    from inference.networks import build_network
    from training.config import default_input_spec

    network = build_network(config["network"])
    spec = default_input_spec("CT", network, 4)
    rng = np.random.default_rng(0)
    noisy = (rng.normal(40.0, 20.0, (64, 64))).astype(np.float32)
    # The "clean" image is NaN: any use of it would poison the loss.
    unknown = Slice(np.full((64, 64), np.nan, np.float32), 1.0, "site:noisy-only")
    pool = PairPool([Pair(unknown, noisy, 0.25)], spec)
    batch = pool.batch(rng, 4, 32).noisy
    masked, mask = blind_spot_batch(
        torch.from_numpy(batch), 0.05, torch.Generator().manual_seed(0)
    )
    optimiser = torch.optim.Adam(network.parameters(), lr=1e-3)
    loss = torch.nn.functional.mse_loss(
        network(masked)[mask], torch.from_numpy(batch)[mask]
    )
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p).all() for p in network.parameters())


def test_self_supervised_training_run_completes(tiny):
    summary = train(
        tiny(train__mode="self_supervised", train__epochs=1, train__steps_per_epoch=5),
        progress=False,
    )
    assert np.isfinite(summary["history"][0]["train_loss"])


def test_fine_tune_records_its_parent_and_the_data_it_saw(tiny, tmp_path):
    import yaml

    parent_cfg = tiny(train__epochs=1, train__steps_per_epoch=3)
    path = tmp_path / "parent.yaml"
    path.write_text(yaml.safe_dump(parent_cfg))
    models = tmp_path / "models"
    assert cli_main(["train", "--config", str(path), "--no-progress"]) == 0
    assert (
        cli_main(["export", "--config", str(path), "--models-root", str(models)]) == 0
    )
    parent_meta = read_metadata(models / "tiny-ct" / "0.0.1")

    child_cfg = tiny(
        name="tiny-ct-site",
        train__mode="self_supervised",
        train__epochs=1,
        train__steps_per_epoch=3,
        train__init_from=str(models / "tiny-ct" / "0.0.1"),
        train__output_dir=str(tmp_path / "child-run"),
    )
    child_path = tmp_path / "child.yaml"
    child_path.write_text(yaml.safe_dump(child_cfg))
    assert cli_main(["train", "--config", str(child_path), "--no-progress"]) == 0
    assert (
        cli_main(["export", "--config", str(child_path), "--models-root", str(models)])
        == 0
    )
    meta = read_metadata(models / "tiny-ct-site" / "0.0.1")
    parent = meta["training"]["parent"]
    assert parent["name"] == "tiny-ct"
    assert parent["version"] == "0.0.1"
    assert parent["weights_sha256"] == parent_meta["weights_sha256"]
    assert parent["training_data"]["slices_seen"] == ["phantom:1000", "phantom:1001"]
    assert meta["training"]["mode"] == "self_supervised"
    assert meta["training"]["data"]["slices_seen"]
    assert "fine-tuned from tiny-ct 0.0.1" in json.dumps(meta["changelog"])


def test_training_refuses_held_out_phantom_seeds(tiny):
    from training.errors import DataError

    config = tiny(
        data__sources=[{"kind": "phantom", "count": 2, "seed": 899_999, "size": 96}]
    )
    with pytest.raises(DataError, match="held-out"):
        train(config, progress=False)


def test_lesion_weight_raises_the_loss_weight_near_phantom_lesions():
    from inference.networks import build_network
    from training.config import default_input_spec
    from training.data import make_pairs, phantom_slices

    spec = default_input_spec("CT", build_network({"kind": "redcnn"}), 8)
    pairs = make_pairs(phantom_slices("CT", 1, seed=1000, size=96), "CT", [0.5], seed=0)
    pool = PairPool(pairs, spec, lesion_weight=5.0)
    weight = pool.weight[0]
    mask = pairs[0].clean.lesion_mask > 0
    assert weight is not None and np.all(weight[mask] == 5.0)
    assert float(weight.mean()) < 1.5
    batch_weight = pool.batch(np.random.default_rng(0), 2, 64).weight
    assert batch_weight.shape == (2, 1, 64, 64) and batch_weight.min() == 1.0


def test_lowpass_loss_penalises_lost_contrast_more_than_residual_noise():
    from training.trainer import lowpass_loss

    target = torch.zeros(1, 1, 64, 64)
    target[..., 24:40, 24:40] = 0.05  # a 10 HU lesion in 200 HU units
    weight = torch.ones_like(target)
    flattened = target * 0.8  # 20 % of the contrast lost, no noise
    noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(0))
    noisy = target + 0.0025 * noise  # full contrast, residual noise of equal MSE
    assert torch.allclose(
        ((flattened - target) ** 2).mean(), ((noisy - target) ** 2).mean(), rtol=0.2
    )
    assert lowpass_loss(flattened, target, weight) > 5 * lowpass_loss(
        noisy, target, weight
    )
    assert float(lowpass_loss(target, target, weight)) == 0.0


def test_lowpass_weight_is_checked_and_trains(tiny):
    from training.config import complete_config
    from training.errors import ConfigError

    with pytest.raises(ConfigError, match="lowpass_weight"):
        complete_config({**tiny(), "train": {**tiny()["train"], "lowpass_weight": -1}})
    summary = train(
        tiny(train__lowpass_weight=10.0, train__lesion_weight=20.0), progress=False
    )
    history = summary["history"]
    assert np.isfinite(history[-1]["train_loss"])
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_contrast_loss_sees_a_flattened_lesion_but_not_residual_noise():
    from training.trainer import lesion_contrast_loss

    target = torch.zeros(2, 1, 48, 48)
    target[..., 20:28, 20:28] = 0.05  # a 10 HU lesion in 200 HU units
    regions = torch.zeros(2, 1, 48, 48, dtype=torch.int16)
    regions[..., 14:34, 14:34] = -1  # ring
    regions[..., 18:30, 18:30] = 0
    regions[..., 21:27, 21:27] = 1  # core
    flattened = target * 0.8
    noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(1))
    noisy = target + 0.01 * noise
    assert float(lesion_contrast_loss(target, target, regions)) == 0.0
    lost = float(lesion_contrast_loss(flattened, target, regions))
    assert lost == pytest.approx(0.01**2, rel=1e-4)  # 20 % of 0.05, squared
    assert float(lesion_contrast_loss(noisy, target, regions)) < lost / 5
    # No lesion in view: no loss, and still a graph to differentiate.
    empty = lesion_contrast_loss(flattened, target, torch.zeros_like(regions))
    assert float(empty) == 0.0


def test_lesion_crops_put_lesions_in_most_batches():
    from inference.networks import build_network
    from training.config import default_input_spec
    from training.data import make_pairs, phantom_slices

    spec = default_input_spec("CT", build_network({"kind": "redcnn"}), 8)
    slices = phantom_slices("CT", 2, seed=1000, size=128)
    pairs = make_pairs(slices, "CT", [0.5], seed=0)
    pool = PairPool(pairs, spec, lesion_crops=1.0)
    crops = pool.batch(np.random.default_rng(0), 16, 48)
    cores = (crops.regions > 0).any(axis=(1, 2, 3))
    rings = (crops.regions < 0).any(axis=(1, 2, 3))
    assert cores.all() and rings.all()
    # The regions follow the same crop, rotation and flip as the clean image: each
    # lesion's core differs from its ring by its 5-15 HU contrast.
    scale = spec["normalisation"]["scale"]
    checked = 0
    for clean, regions in zip(crops.clean, crops.regions, strict=True):
        for label in np.unique(regions[regions > 0]):
            core, ring = clean[regions == label], clean[regions == -label]
            if core.size >= 4 and ring.size >= 8:
                contrast_hu = (core.mean() - ring.mean()) * scale
                assert 4.0 <= abs(contrast_hu) <= 16.0
                checked += 1
    assert checked >= 12


def test_contrast_weight_trains(tiny):
    from training.config import complete_config
    from training.errors import ConfigError

    with pytest.raises(ConfigError, match="contrast_weight"):
        complete_config({**tiny(), "train": {**tiny()["train"], "contrast_weight": -1}})
    blind = {**tiny()["train"], "mode": "self_supervised", "contrast_weight": 3}
    with pytest.raises(ConfigError, match="needs clean targets"):
        complete_config({**tiny(), "train": blind})
    summary = train(
        tiny(train__contrast_weight=50.0, train__lesion_crops=0.5), progress=False
    )
    assert np.isfinite(summary["history"][-1]["train_loss"])
