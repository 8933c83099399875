"""Fixtures for inference tests: a models root and a factory of tiny bundles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from inference.bundle import write_bundle
from inference.networks import build_network
from inference.registry import clear_cache

from .inference_fixtures import REDCNN, BundleFactory, identity_weights, metadata

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    clear_cache()


@pytest.fixture
def models_root(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    root.mkdir()
    return root


@pytest.fixture
def make_bundle(models_root: Path) -> BundleFactory:
    """Write a tiny identity RED-CNN bundle; keyword arguments go to ``metadata``."""

    def make(
        name: str = "tiny",
        version: str = "1.0.0",
        *,
        folder: str | None = None,
        network_def: dict[str, Any] | None = None,
        state_dict: dict[str, torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> Path:
        network_def = network_def or REDCNN
        if state_dict is None:
            if network_def["kind"] == "redcnn":
                state_dict = identity_weights(network_def)
            else:
                torch.manual_seed(0)
                state_dict = build_network(network_def).state_dict()
        return write_bundle(
            models_root / (folder or f"{name}/{version}"),
            metadata=metadata(name, version, network_def=network_def, **kwargs),
            state_dict=state_dict,
        )

    return make
