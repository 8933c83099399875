"""Tiny training configs shared by the training tests (small phantoms, few steps)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from training.config import complete_config


def tiny_config(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """A config that trains in about a second: 96-pixel phantoms, 32-pixel patches."""
    raw: dict[str, Any] = {
        "name": "tiny-ct",
        "version": "0.0.1",
        "seed": 0,
        "network": {
            "kind": "fast_unet_noise",
            "args": {
                "spatial_dims": 2,
                "stem_channels": 4,
                "channels": [8, 16],
                "encoder_blocks": [1, 1],
                "decoder_blocks": [1],
            },
        },
        "data": {
            "sources": [{"kind": "phantom", "count": 2, "seed": 1000, "size": 96}],
            "levels": [0.05],
            "validation": {"count": 1, "seed": 850_000, "size": 96, "levels": [0.05]},
            "cache_dir": str(tmp_path / "cache"),
        },
        "train": {
            "epochs": 2,
            "steps_per_epoch": 15,
            "batch_size": 4,
            "patch_size": 32,
            "lr": 3e-3,
            "threads": 1,
            "output_dir": str(tmp_path / "run"),
        },
        "evaluate": {"count": 1, "size": 96, "real": False},
    }
    for key, value in overrides.items():
        section, _, leaf = key.partition("__")
        if leaf:
            raw[section][leaf] = value
        else:
            raw[section] = value
    return complete_config(raw)


@pytest.fixture
def tiny(tmp_path):
    return lambda **overrides: tiny_config(tmp_path, **overrides)
