"""Site fine-tuning: the scans train the next version, the held-out part decides."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import ndimage

import inference
from inference.networks import build_network
from training.cli import main as cli_main
from training.data import volume_slices
from training.errors import DataError
from training.finetune import (
    SiteVolume,
    decide,
    held_out_range,
    site_config,
    verdict,
)

NETWORK = {
    "kind": "fast_unet_noise",
    "args": {
        "spatial_dims": 2,
        "stem_channels": 4,
        "channels": [4, 8],
        "encoder_blocks": [1, 1],
        "decoder_blocks": [1],
        "noise_conditioned": True,
    },
}


@pytest.fixture
def parent(tmp_path):
    from tests.inference.inference_fixtures import metadata

    meta = metadata("site-ct", "1.0.0")
    meta["network_def"] = NETWORK
    meta["input_spec"]["normalisation"] = {
        "kind": "linear",
        "offset": 0.0,
        "scale": 200.0,
    }
    meta["input_spec"]["noise_unit"] = 0.005
    meta["training"] = {"noise_model": {"kind": "on_the_fly", "sd_hu": [1.0, 50.0]}}
    torch.manual_seed(0)
    network = build_network(NETWORK)
    path = tmp_path / "models" / "site-ct" / "1.0.0"
    inference.write_bundle(path, metadata=meta, state_dict=network.state_dict())
    # Unpinned, as a hand-written DEFAULT may be: the newest version of the name.
    (tmp_path / "models" / "DEFAULT").write_text("site-ct\n")
    return path


@pytest.fixture
def site_volume(tmp_path):
    yy, xx = np.mgrid[:128, :128]
    anatomy = np.where(np.hypot(yy - 64, xx - 64) < 58, 40.0, -1000.0)
    anatomy[np.hypot(yy - 50, xx - 60) < 10] = 250.0
    rng = np.random.default_rng(1)
    noise = ndimage.gaussian_filter(rng.normal(size=(12, 128, 128)), (0, 0.8, 0.8))
    volume = (anatomy[None] + noise * (8.0 / noise.std())).astype(np.float32)
    path = tmp_path / "site.npy"
    np.save(path, volume)
    return SiteVolume(path, 0.7, "site")


def test_the_last_fifth_of_each_series_is_held_out_with_a_gap(site_volume):
    assert held_out_range(12) == (9, 12)
    assert held_out_range(100) == (80, 100)
    train = volume_slices(site_volume.path, 0.7, held_out=held_out_range(12))
    held = volume_slices(
        site_volume.path, 0.7, held_out=held_out_range(12), split="held_out"
    )
    assert [s.source.split("#")[1] for s in train] == [str(i) for i in range(7)]
    assert len(held) == 3 and all(s.full_dose for s in train)


def test_site_config_fine_tunes_the_parent_on_the_volumes(parent, site_volume):
    config = site_config(parent, [site_volume], seconds=30)
    assert config["version"] == "1.1.0" and config["train"]["init_from"] == str(parent)
    volume = [s for s in config["data"]["sources"] if s["kind"] == "volume"]
    assert volume == [
        {
            "kind": "volume",
            "path": str(site_volume.path),
            "pixel_mm": 0.7,
            "held_out": [9, 12],
        }
    ]
    assert config["data"]["noise"] == {"sd_hu": [1.0, 50.0]}


def test_a_parent_that_is_not_noise_conditioned_is_refused(tmp_path, site_volume):
    from tests.conftest import install_tiny_models

    class Settings:
        pass

    root = install_tiny_models(Settings(), tmp_path / "m")
    with pytest.raises(DataError, match="noise-conditioned CT bundle"):
        site_config(root / "tiny" / "1.0.0", [site_volume])


def test_a_model_is_as_good_as_itself_on_the_held_out_slices(parent, site_volume):
    root = parent.parent.parent
    model = inference.load_model("site-ct", models_root=root, device="cpu")
    same = decide(model, model, [site_volume])
    assert same["promote"], same["reasons"]
    assert same["summary"]["candidate"] == same["summary"]["parent"]


PARENT = {"structure": 0.03, "noise_removed": 0.55, "residual_to_noise": 0.9}


@pytest.mark.parametrize(
    ("change", "promote", "reason"),
    [
        ({"noise_removed": 0.62}, True, "at least as good"),
        ({"noise_removed": 0.50}, False, "removes less noise"),
        ({"noise_removed": 0.70, "structure": 0.06}, False, "more structure"),
        ({"noise_removed": 0.70, "structure": 0.04}, True, "at least as good"),
        ({"noise_removed": 0.70, "residual_to_noise": 2.4}, False, "x the noise"),
        # Unmeasured is never good enough (a NaN comparison is always False).
        ({"noise_removed": float("nan")}, False, "candidate noise_removed"),
        ({"structure": float("nan")}, False, "candidate structure"),
        ({"residual_to_noise": None}, False, "candidate residual_to_noise"),
    ],
)
def test_verdict_promotes_only_a_candidate_better_on_every_measure(
    change: dict, promote: bool, reason: str
) -> None:
    candidate = {**PARENT, **change}
    promoted, reasons = verdict(PARENT, candidate)
    assert promoted is promote
    assert any(reason in r for r in reasons)


def test_a_parent_above_the_bar_never_promotes_a_candidate_above_it() -> None:
    parent = {**PARENT, "structure": 0.2}
    promoted, reasons = verdict(parent, {**parent, "noise_removed": 0.9})
    assert not promoted and any("0.10 bar" in r for r in reasons)


@pytest.mark.slow
def test_finetune_command_writes_the_next_version_and_decides(
    parent, site_volume, capsys, monkeypatch, tmp_path
):
    monkeypatch.chdir(tmp_path)
    status = cli_main(
        [
            "finetune",
            "--volume",
            f"{site_volume.path}:0.7",
            "--from",
            str(parent),
            "--minutes",
            "0.05",
            "--set-default",
            "--json",
        ]
    )
    assert status == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (result["name"], result["version"]) == ("site-ct", "1.1.0")
    assert result["parent"] == "site-ct:1.0.0"
    assert result["bundle"] == str(parent.parent / "1.1.0")
    meta = inference.read_metadata(result["bundle"])
    assert meta["training"]["parent"]["version"] == "1.0.0"
    assert any("site.npy" in s for s in meta["training"]["data"]["slices_seen"])
    default = (parent.parent.parent / "DEFAULT").read_text().strip()
    assert default == (
        "site-ct:1.1.0" if result["decision"]["promote"] else "site-ct:1.0.0"
    )
