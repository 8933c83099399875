"""Builders shared by the inference tests: CT-like phantoms and tiny bundle metadata."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inference.networks import build_network

CT_SPEC: dict[str, Any] = {
    "modality": "CT",
    "units": "HU",
    "spatial_dims": 2,
    "normalisation": {"kind": "linear", "offset": -1024.0, "scale": 4096.0},
    "roi_size": None,
    "batch_size": 4,
    "size_multiple": 1,
}
#: A tiny network of the shipped kind (``fast_unet_noise``).
FAST_UNET: dict[str, Any] = {
    "kind": "fast_unet_noise",
    "args": {
        "stem_channels": 4,
        "channels": [4, 8],
        "encoder_blocks": [1, 1],
        "decoder_blocks": [1],
    },
}
#: The same, noise-conditioned (the slice's noise SD as a second input channel).
FAST_UNET_NOISE: dict[str, Any] = {
    **FAST_UNET,
    "args": {**FAST_UNET["args"], "noise_conditioned": True},
}
REDCNN: dict[str, Any] = {
    "kind": "redcnn",
    "args": {"spatial_dims": 2, "features": 4, "depth": 2, "kernel_size": 3},
}


def phantom(shape: tuple[int, ...], seed: int, noise_hu: float = 20.0) -> np.ndarray:
    """A CT-like phantom in HU: air, a soft-tissue body, bright and dark blobs."""
    rng = np.random.default_rng(seed)
    depth, height, width = shape if len(shape) == 3 else (1, *shape)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cy, cx = (height - 1) / 2, (width - 1) / 2
    volume = np.empty((depth, height, width), dtype=np.float32)
    for z in range(depth):
        image = np.full((height, width), -1000.0, dtype=np.float32)
        body = ((yy - cy) / (0.42 * height)) ** 2 + (
            (xx - cx) / (0.45 * width)
        ) ** 2 < 1
        image[body] = 40.0
        for _ in range(4):
            by, bx = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width
            radius = rng.uniform(0.05, 0.12) * min(height, width)
            blob = (yy - by) ** 2 + (xx - bx) ** 2 < radius**2
            image[blob] = rng.choice([-100.0, 300.0, 800.0])
        volume[z] = image + rng.normal(0, noise_hu, image.shape).astype(np.float32)
    return volume if len(shape) == 3 else volume[0]


def identity_weights(network_def: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Weights of a RED-CNN whose output equals its input (the last layer is zero)."""
    network = build_network(network_def)
    last = network.decoder[-1]
    with torch.no_grad():
        for parameter in last.parameters():
            parameter.zero_()
    return network.state_dict()


def metadata(
    name: str = "tiny",
    version: str = "1.0.0",
    *,
    network_def: dict[str, Any] | None = None,
    input_spec: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    spec = copy.deepcopy(input_spec or CT_SPEC)
    return {
        "name": name,
        "version": version,
        "changelog": {version: "test bundle"},
        "network_def": copy.deepcopy(network_def or REDCNN),
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "hounsfield"}},
            "outputs": {"pred": {"type": "image", "format": "hounsfield"}},
        },
        "input_spec": spec,
        "training": {"mode": "supervised", "seed": 0, "parent": None},
        **extra,
    }


BundleFactory = Callable[..., Path]
